"""The event counts projection fed live from Kafka, and its read path."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.consumers import ProjectionRunner, topics_for
from eventstore.projection import ProjectionVersions
from eventstore.store import EventStore
from projections.event_counts import projection as event_counts
from projections.event_counts import read_event_counts, read_live_event_counts
from tests.consumers.support import LogPublisher, Running, consumer_settings, create_topics
from tests.eventstore.sample_events import registry
from tests.projections.support import CATEGORIES, true_counts, write_mixed


async def test_live_counts_equal_the_log_per_category_and_type(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_kafka_bootstrap: str,
        fx_topic_prefix: str) -> None:
    topics = topics_for(fx_topic_prefix, CATEGORIES)
    await create_topics(fx_kafka_bootstrap, topics, 3)
    await write_mixed(fx_store, 1500, seed=21)
    runner = ProjectionRunner(event_counts, engine=fx_engine,
                              bootstrap_servers=fx_kafka_bootstrap, topics=topics, version=1,
                              registry=registry,  # as the wiring passes it: DECODE=False wins
                              settings=consumer_settings(fx_topic_prefix))
    async with LogPublisher(fx_store, fx_kafka_bootstrap, fx_topic_prefix) as publisher, \
            Running(runner) as running:
        await publisher.publish()
        await running.caught_up()
        await write_mixed(fx_store, 300, seed=22)
        await publisher.publish()
        await running.caught_up()

    truth = await true_counts(fx_store)
    assert {c.category for c in truth} == set(CATEGORIES)
    assert "counter.reset" in {c.type for c in truth}  # unknown types are counted too
    assert runner.stats.unknown_types == {}
    async with fx_engine.connect() as conn:
        assert await read_event_counts(conn, 1) == truth
        # The read path serves only a live build.
        assert await read_live_event_counts(conn) == []
    versions = ProjectionVersions(fx_engine)
    await versions.mark_building("event_counts", 1, code_version=1)
    assert await versions.mark_live("event_counts", 1) is None
    async with fx_engine.connect() as conn:
        assert await read_live_event_counts(conn) == truth
