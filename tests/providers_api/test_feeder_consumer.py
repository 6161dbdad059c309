"""The Feeder consumer over the real Kafka and Postgres: good messages become provider events,
malformed ones are parked with their bytes and a reason and never stop the consumer, a
redelivered message appends nothing, and the offsets are kept in Postgres."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.providers.ingestion import ProviderIngestion
from domain.providers import stream_id, usage_stream_id
from eventstore.consumers import stored_offsets
from eventstore.store import EventStore
from handlers.feeder_ingest import CONSUMER_NAME, FeederConsumer
from orchestrator.bootstrap import event_registry
from orchestrator.settings import database_engine
from tests.consumers.support import Running, consumer_settings, create_topics
from tests.domain.providers.support import feeder_message

PROVIDER = "cloud-example.openstack"


@pytest.fixture(name="fx_engine")
async def fixture_engine(fx_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = database_engine(fx_database_url)
    yield engine
    await engine.dispose()


async def produce(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            # one partition: the test reads the outcome in the order it sent
            # a tombstone needs a key; the Feeder's own messages have none
            key = b"tombstone" if value is None else None
            await producer.send_and_wait(topic, value=value, key=key, partition=0)
    finally:
        await producer.stop()


def encoded(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


async def parked(engine: AsyncEngine) -> list[tuple[int, bytes | None, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT kafka_offset, payload, reason FROM parked_messages "
            "WHERE consumer = :c ORDER BY kafka_offset"), {"c": CONSUMER_NAME})
        return [(r.kafka_offset, r.payload, r.reason) for r in rows]


async def test_good_messages_become_events_and_malformed_ones_are_parked(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_kafka_bootstrap: str,
        fx_topic_prefix: str) -> None:
    topic = f"{fx_topic_prefix}.feeder"
    await create_topics(fx_kafka_bootstrap, [topic], 1)
    registry = event_registry()
    ingestion = ProviderIngestion(fx_store, registry)
    good = feeder_message()
    changed = feeder_message(timestamp="2025-10-04T07:05:33+00:00")
    changed["compute_services"][0]["flavors"] = [
        f for f in changed["compute_services"][0]["flavors"] if f["name"] != "m1.small"]
    unsupported = feeder_message(msg_version="0.9.0")
    gpu_without_gpus = feeder_message()
    gpu_without_gpus["compute_services"][0]["flavors"][0]["gpu_vendor"] = "NVIDIA"
    values: list[bytes | None] = [
        encoded(good),                 # 0: observed
        b"{not json",                  # 1: parked
        encoded(unsupported),          # 2: parked (version)
        encoded(good),                 # 3: a repeat: observed, appends nothing
        None,                          # 4: a tombstone (keyed): parked
        encoded(gpu_without_gpus),     # 5: parked (inconsistent content)
        encoded(changed),              # 6: observed: one flavour gone
    ]
    await produce(fx_kafka_bootstrap, topic, values)
    consumer = FeederConsumer(ingestion, engine=fx_engine, bootstrap_servers=fx_kafka_bootstrap,
                              topic=topic, settings=consumer_settings(fx_topic_prefix))
    async with Running(consumer) as running:
        await running.caught_up()

    recorded = await fx_store.read_stream(stream_id(PROVIDER))
    types = [r.type for r in recorded]
    assert types[0] == "provider.registered"
    # the repeat appended nothing; the last message removed exactly m1.small
    small = next(f["uuid"] for f in good["compute_services"][0]["flavors"]
                 if f["name"] == "m1.small")
    last = [registry.decode_recorded(r) for r in recorded
            if r.metadata.correlation_id == f"kafka:{topic}/0/6"]
    assert [(type(e).__name__, getattr(e, "uuid", None)) for e in last] == [
        ("FlavorRemoved", small)]
    assert {r.metadata.correlation_id for r in recorded} == {
        f"kafka:{topic}/0/0", f"kafka:{topic}/0/6"}
    assert all(r.metadata.actor_subject == "feeder-ingest" for r in recorded)
    usage = await fx_store.read_stream(usage_stream_id(PROVIDER))
    assert [r.type for r in usage] == ["quotausage.sampled"]

    rows = await parked(fx_engine)
    assert [(offset, payload) for offset, payload, _ in rows] == [
        (1, b"{not json"), (2, values[2]), (4, None), (5, values[5])]
    reasons = {offset: reason for offset, _, reason in rows}
    assert "JSON" in reasons[1] or "json" in reasons[1]
    assert "msg_version" in reasons[2] and "0.9.0" in reasons[2]
    assert "tombstone" in reasons[4]
    assert "gpu_vendor" in reasons[5]
    assert consumer.stats.parked == 4 and consumer.stats.observed == 3
    async with fx_engine.connect() as conn:
        assert await stored_offsets(conn, CONSUMER_NAME) == {(topic, 0): len(values)}


async def test_a_restarted_consumer_resumes_from_the_offsets_in_postgres(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_kafka_bootstrap: str,
        fx_topic_prefix: str) -> None:
    topic = f"{fx_topic_prefix}.feeder"
    await create_topics(fx_kafka_bootstrap, [topic], 1)
    ingestion = ProviderIngestion(fx_store, event_registry())
    await produce(fx_kafka_bootstrap, topic, [encoded(feeder_message())])
    settings = consumer_settings(fx_topic_prefix)
    first = FeederConsumer(ingestion, engine=fx_engine, bootstrap_servers=fx_kafka_bootstrap,
                           topic=topic, settings=settings)
    async with Running(first) as running:
        await running.caught_up()
    version = await fx_store.stream_version(stream_id(PROVIDER))
    assert version > 0
    # a second consumer, in a new group (nothing committed in Kafka), starts where the
    # first one stopped: from the offsets stored in Postgres
    other = feeder_message(project_id=uuid.uuid4().hex, user_group="other-group")
    for service in other["compute_services"] + other["block_storage_services"] + \
            other["network_services"]:
        for quota in service["quotas"]:
            quota["project"] = other["project_id"]
    await produce(fx_kafka_bootstrap, topic, [encoded(other)])
    second = FeederConsumer(ingestion, engine=fx_engine, bootstrap_servers=fx_kafka_bootstrap,
                            topic=topic, settings=settings,
                            group_id=f"{fx_topic_prefix}.another-group")
    async with Running(second) as running:
        await running.caught_up()
    assert second.stats.observed == 1
    recorded = await fx_store.read_stream(stream_id(PROVIDER))
    assert {r.metadata.correlation_id for r in recorded if r.version > version} == {
        f"kafka:{topic}/0/1"}
