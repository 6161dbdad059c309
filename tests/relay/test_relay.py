"""The relay publishes the whole log to the real Kafka, in order, once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from eventstore import kafka_format
from eventstore.records import Metadata, RecordedEvent
from eventstore.relay import KafkaRelay, partition_for, relay_lag
from eventstore.store import EventStore
from tests.event_log import all_events
from tests.eventstore.sample_events import incremented, opened
from tests.kafka_broker import PrivateKafka

PARTITIONS = 4


async def read_topic(bootstrap: str, topic: str) -> list[RecordedEvent]:
    """Everything in the topic, per partition in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        events: list[RecordedEvent] = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=2000)
                for record in batch.get(tp, []):
                    event = kafka_format.decode(record.value or b"")
                    assert record.key == event.stream_id.encode()
                    assert record.partition == partition_for(event.stream_id, PARTITIONS)
                    headers = dict(record.headers)
                    assert headers["event_id"] == event.event_id.encode()
                    assert headers["type"] == event.type.encode()
                    assert headers["position"] == str(event.position).encode()
                    events.append(event)
        return events
    finally:
        await consumer.stop()


def assert_published_exactly_once_in_order(log: list[RecordedEvent],
                                           published: list[RecordedEvent]) -> None:
    assert sorted(e.event_id for e in published) == sorted(e.event_id for e in log)
    assert len({e.event_id for e in published}) == len(published)
    per_stream: dict[str, list[int]] = defaultdict(list)
    for event in published:  # partition order; a stream lives in one partition
        per_stream[event.stream_id].append(event.version)
    for stream, versions in per_stream.items():
        assert versions == list(range(1, len(versions) + 1)), stream


async def wait_for(condition, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def write_events(store: EventStore, streams: list[str], count: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        await store.append(rng.choice(streams), None, [incremented()], Metadata())


@pytest.fixture(name="fx_private_kafka")
def fixture_private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    broker = PrivateKafka(tmp_path / "kafka")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(name="fx_stop")
async def fixture_stop() -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    yield stop
    stop.set()


async def test_publishes_each_category_to_its_topic_keyed_by_stream(
        fx_store: EventStore, fx_kafka_bootstrap: str, fx_topic_prefix: str,
        fx_stop: asyncio.Event) -> None:
    for i in range(20):
        await fx_store.append(f"counter-{i}", 0, [opened(), incremented()], Metadata())
        await fx_store.append(f"deployment-{i}", 0, [opened()], Metadata())
    relay = KafkaRelay(fx_store, bootstrap=fx_kafka_bootstrap, topic_prefix=fx_topic_prefix,
                       partitions=PARTITIONS, idle_wait=0.05)
    running = asyncio.create_task(relay.run(fx_stop))
    await wait_for(lambda: _zero(relay_lag(fx_store)))
    fx_stop.set()
    await running

    log = await all_events(fx_store)
    counters = await read_topic(fx_kafka_bootstrap, f"{fx_topic_prefix}.counters")
    deployments = await read_topic(fx_kafka_bootstrap, f"{fx_topic_prefix}.deployments")
    assert_published_exactly_once_in_order([e for e in log if e.category == "counter"], counters)
    assert_published_exactly_once_in_order(
        [e for e in log if e.category == "deployment"], deployments)


async def test_survives_a_broker_restart_without_loss_reorder_or_duplicate(
        fx_store: EventStore, fx_private_kafka: PrivateKafka, fx_topic_prefix: str,
        fx_stop: asyncio.Event) -> None:
    streams = [f"counter-{uuid.uuid4()}" for _ in range(25)]
    relay = KafkaRelay(fx_store, bootstrap=fx_private_kafka.bootstrap,
                       topic_prefix=fx_topic_prefix, partitions=PARTITIONS, idle_wait=0.05,
                       batch_size=200, retry_backoff=0.2, max_retry_backoff=1.0)
    running = asyncio.create_task(relay.run(fx_stop))

    await write_events(fx_store, streams, 1500, seed=1)
    await wait_for(lambda: _published_at_least(relay, 500))
    # The broker goes away in the middle of the stream of events ...
    writing = asyncio.create_task(write_events(fx_store, streams, 1500, seed=2))
    await asyncio.to_thread(fx_private_kafka.stop)
    await writing
    unpublished_while_down = await relay_lag(fx_store)
    # ... and comes back.
    await asyncio.to_thread(fx_private_kafka.start)
    await write_events(fx_store, streams, 500, seed=3)
    await wait_for(lambda: _zero(relay_lag(fx_store)), within=120)
    fx_stop.set()
    await running

    assert unpublished_while_down > 0  # the outage really hit the middle of the stream
    published = await read_topic(fx_private_kafka.bootstrap, f"{fx_topic_prefix}.counters")
    assert_published_exactly_once_in_order(await all_events(fx_store), published)


async def test_only_one_relay_is_active_and_a_second_takes_over(
        fx_store: EventStore, fx_kafka_bootstrap: str, fx_topic_prefix: str) -> None:
    streams = [f"counter-{uuid.uuid4()}" for _ in range(10)]
    first_stop, second_stop = asyncio.Event(), asyncio.Event()
    first = KafkaRelay(fx_store, bootstrap=fx_kafka_bootstrap, topic_prefix=fx_topic_prefix,
                       partitions=PARTITIONS, idle_wait=0.05)
    second = KafkaRelay(fx_store, bootstrap=fx_kafka_bootstrap, topic_prefix=fx_topic_prefix,
                        partitions=PARTITIONS, idle_wait=0.05)
    first_run = asyncio.create_task(first.run(first_stop))
    await wait_for(lambda: _true(first.stats.holds_lock))
    second_run = asyncio.create_task(second.run(second_stop))
    try:
        await write_events(fx_store, streams, 300, seed=4)
        await wait_for(lambda: _zero(relay_lag(fx_store)))
        assert not second.stats.holds_lock
        assert second.stats.published == 0

        first_stop.set()
        await first_run
        await wait_for(lambda: _true(second.stats.holds_lock))
        await write_events(fx_store, streams, 300, seed=5)
        await wait_for(lambda: _zero(relay_lag(fx_store)))
        assert second.stats.published == 300
    finally:
        first_stop.set()
        second_stop.set()
        await asyncio.gather(first_run, second_run)

    published = await read_topic(fx_kafka_bootstrap, f"{fx_topic_prefix}.counters")
    assert_published_exactly_once_in_order(await all_events(fx_store), published)


async def _zero(awaitable) -> bool:  # type: ignore[no-untyped-def]
    return await awaitable == 0


async def _true(value: bool) -> bool:
    return value


async def _published_at_least(relay: KafkaRelay, count: int) -> bool:
    return relay.stats.published >= count
