"""Rebuilds: replay the log into a new version, catch up from Kafka, switch live."""

from __future__ import annotations

import asyncio
import gc
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.consumers import (
    end_offsets,
    projection_consumer,
    run_live_projection,
    topics_for,
    wait_until_caught_up,
)
from eventstore.projection import ProjectionVersions
from eventstore.rebuild import (
    REPLAY_GC_THRESHOLD,
    RebuildProgress,
    committed_head,
    position_of,
    rebuild,
    rebuild_to,
    replay,
)
from eventstore.records import UnknownEventType
from eventstore.store import EventStore
from projections.event_counts import projection as event_counts
from projections.event_counts import read_event_counts, read_live_event_counts
from tests.consumers.support import (
    WRITER,
    LogPublisher,
    consumer_settings,
    counter_totals,
    create_topics,
    eventually,
    write_counters,
)
from tests.eventstore.sample_events import registry
from tests.projections.support import (
    CATEGORIES,
    database_now,
    reset_event,
    true_counts,
    write_mixed,
)


async def test_a_rebuild_catches_up_while_events_arrive_and_switches_live(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_kafka_bootstrap: str,
        fx_topic_prefix: str) -> None:
    topics = topics_for(fx_topic_prefix, CATEGORIES)
    await create_topics(fx_kafka_bootstrap, topics, 3)
    settings = consumer_settings(fx_topic_prefix)
    options = {"store": fx_store, "engine": fx_engine, "bootstrap_servers": fx_kafka_bootstrap,
               "topic_prefix": fx_topic_prefix, "categories": CATEGORIES,
               "settings": settings, "batch_size": 500, "registry": registry}
    versions = ProjectionVersions(fx_engine)
    await write_mixed(fx_store, 4000, seed=31)

    async with LogPublisher(fx_store, fx_kafka_bootstrap, fx_topic_prefix) as publisher:
        await publisher.publish()
        # First build: nothing is live yet, so it goes live once caught up with Kafka.
        first = await rebuild(event_counts, **options)  # type: ignore[arg-type]
        assert (first.version, first.retired, first.switched) == (1, None, True)
        assert await versions.live("event_counts") == 1

        # The service keeps the live version fed; writers keep appending throughout.
        stop = asyncio.Event()
        service = asyncio.create_task(run_live_projection(
            event_counts, stop, engine=fx_engine, bootstrap_servers=fx_kafka_bootstrap,
            topics=topics, settings=settings, poll_interval=0.1))
        writing = asyncio.Event()

        async def writer() -> None:
            seed = 100
            while not writing.is_set():
                await write_mixed(fx_store, 40, seed=seed)
                await publisher.publish()
                seed += 1

        writer_task = asyncio.create_task(writer())
        progress: list[RebuildProgress] = []
        try:
            await eventually(lambda: publisher.published > 4500, what="writers started")
            before = publisher.published
            second = await rebuild(event_counts, progress=progress.append,
                                   **options)  # type: ignore[arg-type]
            assert publisher.published > before  # events arrived during the rebuild
            async with fx_engine.connect() as conn:  # reads already use v2
                assert await read_live_event_counts(conn) == await read_event_counts(conn, 2)
        finally:
            writing.set()
            await writer_task
        await publisher.publish()
        ends = await end_offsets(fx_kafka_bootstrap, topics)
        # The service followed the switch: its v1 runner stopped, a v2 runner took over.
        await wait_until_caught_up(fx_engine, projection_consumer("event_counts", 2), ends,
                                   within=60)
        stop.set()
        await service

    assert (second.version, second.retired, second.switched) == (2, 1, True)
    # Kafka held the replayed events too: the catch-up consumer skipped them by position.
    assert second.caught_up_skipped >= 4000
    states = {r.version: r.state for r in await versions.all("event_counts")}
    assert states == {1: "retired", 2: "live"}
    assert progress[-1].done == second.replay.events == progress[-1].total
    assert all(p.rate > 0 for p in progress)
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    async with fx_engine.connect() as conn:
        assert await read_live_event_counts(conn) == await true_counts(fx_store)


async def test_a_rebuild_fails_loudly_on_event_types_this_code_does_not_know(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_kafka_bootstrap: str,
        fx_topic_prefix: str) -> None:
    names = await write_counters(fx_store, streams=3, increments=50)
    await fx_store.append(names[1], None, [reset_event()], WRITER)
    await write_counters(fx_store, streams=1, increments=5)
    with pytest.raises(UnknownEventType) as failure:
        await replay(counter_totals, store=fx_store, engine=fx_engine, version=1,
                     tables=counter_totals.tables(1), registry=registry,
                     record_position=False)
    assert failure.value.type == "counter.reset"
    assert any(names[1] in note for note in failure.value.__notes__)

    # The blue/green rebuild stops before switching anything.
    await create_topics(fx_kafka_bootstrap, topics_for(fx_topic_prefix, ["counter"]), 1)
    with pytest.raises(UnknownEventType):
        await rebuild(counter_totals, store=fx_store, engine=fx_engine,
                      bootstrap_servers=fx_kafka_bootstrap, topic_prefix=fx_topic_prefix,
                      categories=["counter"], registry=registry)
    assert await ProjectionVersions(fx_engine).live("counter_totals") is None


async def test_rebuild_to_a_position_or_a_time_into_a_scratch_schema(
        fx_store: EventStore, fx_engine: AsyncEngine) -> None:
    await write_mixed(fx_store, 300, seed=41)
    head_1 = await committed_head(fx_store)
    assert head_1 is not None
    await write_mixed(fx_store, 300, seed=42)
    between = await database_now(fx_engine)
    await write_mixed(fx_store, 300, seed=43)
    schema = f"audit_{uuid.uuid4().hex[:8]}"

    result = await rebuild_to(event_counts, store=fx_store, engine=fx_engine, schema=schema,
                              position=head_1.position)
    assert result.position == head_1 == await position_of(fx_store, head_1.position)
    async with fx_engine.connect() as conn:
        as_of_position = await read_event_counts(conn, 1, schema=schema)
    assert as_of_position == await true_counts(fx_store, to=head_1)

    await rebuild_to(event_counts, store=fx_store, engine=fx_engine, schema=schema,
                     until=between)
    async with fx_engine.connect() as conn:
        as_of_time = await read_event_counts(conn, 1, schema=schema)
    assert as_of_time == await true_counts(fx_store, until=between)
    assert sum(c.count for c in as_of_position) == 300
    assert sum(c.count for c in as_of_time) == 600
    # The live tables were never touched.
    assert await ProjectionVersions(fx_engine).all("event_counts") == []



async def test_concurrent_replays_leave_the_collector_as_they_found_it(
        fx_store: EventStore, fx_engine: AsyncEngine) -> None:
    """Replays raise the process-wide young-generation threshold; overlapping ones must
    not leave it raised (the second one out would restore the first one's raised value)."""
    await write_mixed(fx_store, 300, seed=47)
    head = await committed_head(fx_store)
    assert head is not None
    before = gc.get_threshold()
    seen: list[tuple[str, tuple[int, int, int]]] = []

    async def replay_into(schema: str) -> None:
        await rebuild_to(event_counts, store=fx_store, engine=fx_engine, schema=schema,
                         position=head.position, batch_size=10,
                         progress=lambda _: seen.append((schema, gc.get_threshold())))

    await asyncio.gather(replay_into(f"gc_{uuid.uuid4().hex[:8]}"),
                         replay_into(f"gc_{uuid.uuid4().hex[:8]}"))
    order = [schema for schema, _ in seen]
    assert len(set(order)) == 2
    # Their progress reports interleave (not all of one, then all of the other).
    assert order != sorted(order, key=order.index), "the replays did not overlap"
    assert all(t[0] == REPLAY_GC_THRESHOLD and t[1:] == before[1:] for _, t in seen)
    assert gc.get_threshold() == before
