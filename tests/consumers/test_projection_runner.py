"""The projection runner against real Kafka and Postgres: exactly-once effects on tables."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import kafka_format
from eventstore.consumers import ProjectionRunner, end_offsets, topics_for
from eventstore.records import NewEvent
from eventstore.store import EventStore
from tests.consumers.support import (
    LogPublisher,
    Running,
    append,
    consumer_settings,
    counter_totals,
    create_topics,
    eventually,
    expected_totals,
    rows,
    write_counters,
)
from tests.event_log import all_events
from tests.eventstore.sample_events import incremented, registry

PARTITIONS = 3


def reset_event() -> NewEvent:
    """A type this code does not know (as if written by a newer version)."""
    return NewEvent(event_id=str(uuid.uuid4()), type="counter.reset", schema_version=1,
                    data=b'{"type": "counter.reset"}')


@pytest.fixture(name="fx_topics")
async def fixture_topics(fx_kafka_bootstrap: str, fx_topic_prefix: str) -> list[str]:
    topics = topics_for(fx_topic_prefix, ["counter"])
    await create_topics(fx_kafka_bootstrap, topics, PARTITIONS)
    return topics


@pytest.fixture(name="fx_publisher")
async def fixture_publisher(fx_store: EventStore, fx_kafka_bootstrap: str,
                            fx_topic_prefix: str) -> AsyncIterator[LogPublisher]:
    async with LogPublisher(fx_store, fx_kafka_bootstrap, fx_topic_prefix) as publisher:
        yield publisher


RunnerFactory = Callable[..., ProjectionRunner]


@pytest.fixture(name="fx_runner")
def fixture_runner(fx_engine: AsyncEngine, fx_kafka_bootstrap: str, fx_topic_prefix: str,
                   fx_topics: list[str]) -> RunnerFactory:
    def make(**overrides: object) -> ProjectionRunner:
        options: dict[str, object] = {
            "engine": fx_engine, "bootstrap_servers": fx_kafka_bootstrap, "topics": fx_topics,
            "version": 1, "registry": registry,
            "settings": consumer_settings(fx_topic_prefix, max_batch=40)}
        options.update(overrides)
        return ProjectionRunner(counter_totals, **options)  # type: ignore[arg-type]

    return make


async def test_applies_a_stream_of_events_and_reports_lag(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_runner: RunnerFactory) -> None:
    await write_counters(fx_store, streams=8, increments=300)
    await fx_publisher.publish()
    runner = fx_runner()
    async with Running(runner) as running:
        await running.caught_up()

    events = await all_events(fx_store)
    assert await rows(fx_engine, runner.writer.tables[0]) == expected_totals(events)
    assert runner.stats.applied == len(events) == 308
    assert runner.stats.batches >= 308 // 40
    assert runner.stats.redelivered == runner.stats.duplicates == runner.stats.parked == 0
    assert set(runner.lag().values()) <= {0}


async def test_two_instances_racing_on_the_same_partitions_apply_each_event_once(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_runner: RunnerFactory, fx_topic_prefix: str) -> None:
    """Two consumers in different groups both get every partition: the worst redelivery.

    Both write to the same projection version; the offsets locked in each batch's
    transaction make every message count once, whichever instance gets it first.
    """
    await write_counters(fx_store, streams=6, increments=400, seed=2)
    await fx_publisher.publish()
    first = fx_runner(group_id=f"{fx_topic_prefix}.first")
    second = fx_runner(group_id=f"{fx_topic_prefix}.second")
    async def both_at_the_end() -> None:
        ends = await end_offsets(first.bootstrap_servers, first.topics)
        await eventually(lambda: all(r.positions().get(key, 0) >= end for r in (first, second)
                                     for key, end in ends.items()), what="both at the end")

    async with Running(first, second) as running:
        await running.caught_up()
        await both_at_the_end()
        seen = [r.stats.applied + r.stats.redelivered for r in (first, second)]
        redelivered = first.stats.redelivered + second.stats.redelivered
        # Each instance gets every new message; exactly one of them applies it.
        await write_counters(fx_store, streams=2, increments=100, seed=3)
        more = await fx_publisher.publish()
        await running.caught_up()
        await both_at_the_end()
        assert [r.stats.applied + r.stats.redelivered for r in (first, second)] == [
            before + more for before in seen]

    events = await all_events(fx_store)
    assert await rows(fx_engine, first.writer.tables[0]) == expected_totals(events)
    assert first.stats.applied + second.stats.applied == len(events)
    assert first.stats.redelivered + second.stats.redelivered == redelivered + more


async def test_a_republished_suffix_changes_nothing(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_runner: RunnerFactory) -> None:
    """A relay that restarts from an old checkpoint republishes events at new offsets."""
    await write_counters(fx_store, streams=4, increments=120, seed=4)
    await fx_publisher.publish()
    events = await all_events(fx_store)
    runner = fx_runner()
    async with Running(runner) as running:
        await running.caught_up()
        fx_publisher.position = events[len(events) // 2].log_position
        republished = await fx_publisher.publish()
        await running.caught_up()

    assert await rows(fx_engine, runner.writer.tables[0]) == expected_totals(events)
    assert runner.stats.duplicates == republished > 0
    assert runner.stats.applied == len(events)


async def test_malformed_messages_are_parked_with_their_bytes_and_the_runner_goes_on(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_runner: RunnerFactory, fx_topics: list[str]) -> None:
    names = await write_counters(fx_store, streams=3, increments=30, seed=5)
    await fx_publisher.publish()
    junk: list[tuple[bytes | None, bytes | None]] = [
        (b"\x00\xffnot json at all", b"some-key"),
        (b'{"event_id": 42, "stream_id": "counter-x"}', None),
        (None, names[0].encode()),  # a tombstone
    ]
    sent = [await fx_publisher.send_raw(fx_topics[0], value, key=key, partition=number)
            for number, (value, key) in enumerate(junk)]
    # A well-formed envelope under someone else's key is not ours either.
    event = (await all_events(fx_store))[0]
    _, foreign, _ = kafka_format.encode(event)
    junk.append((foreign, b"other"))
    sent.append(await fx_publisher.send_raw(fx_topics[0], foreign, key=b"other", partition=0))
    await append(fx_store, names[1], incremented(5, note="after-junk"))
    await fx_publisher.publish()

    runner = fx_runner()
    async with Running(runner) as running:
        await running.caught_up()

    events = await all_events(fx_store)
    assert await rows(fx_engine, runner.writer.tables[0]) == expected_totals(events)
    assert runner.stats.parked == 4
    async with fx_engine.connect() as conn:
        parked = (await conn.execute(text(
            "SELECT consumer, topic, kafka_partition, kafka_offset, key, payload, reason "
            "FROM parked_messages ORDER BY id"))).all()
    by_place = {(row.kafka_partition, row.kafka_offset): row for row in parked}
    for (value, key), metadata in zip(junk, sent, strict=True):
        row = by_place[(metadata.partition, metadata.offset)]
        assert row.consumer == "projection.counter_totals.v1"
        assert row.topic == fx_topics[0]
        assert (bytes(row.payload) if row.payload is not None else None) == value
        assert (bytes(row.key) if row.key is not None else None) == key
        assert row.reason


async def test_unknown_event_types_are_skipped_and_counted_live(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_runner: RunnerFactory) -> None:
    names = await write_counters(fx_store, streams=2, increments=20, seed=6)
    await append(fx_store, names[0], reset_event())
    await append(fx_store, names[1], reset_event())
    # A known type at a schema version newer than this code's is unknown too.
    future = incremented(3)
    await append(fx_store, names[0], NewEvent(event_id=future.event_id, type=future.type,
                                              schema_version=9, data=future.data))
    await append(fx_store, names[0], incremented(1, note="last"))
    await fx_publisher.publish()
    runner = fx_runner()
    async with Running(runner) as running:
        await running.caught_up()

    assert runner.stats.unknown_types == {"counter.reset": 2, "counter.incremented": 1}
    known = [e for e in await all_events(fx_store)
             if e.type != "counter.reset" and e.schema_version == 1]
    assert await rows(fx_engine, runner.writer.tables[0]) == expected_totals(known)

