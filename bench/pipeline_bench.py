"""Relay, rebuild and end-to-end benchmarks (issue 2), against the real services."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, Table, Text, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.common import median, percentile
from eventstore.consumers import ConsumerSettings, ProjectionRunner, topics_for
from eventstore.projection import ALL_EVENT_TYPES, create_tables, versioned_tables
from eventstore.rebuild import replay
from eventstore.records import Metadata, RecordedEvent
from eventstore.relay import KafkaRelay, ensure_topics
from eventstore.store import EventStore, create_pool
from orchestrator.settings import database_engine, env
from projections.event_counts import projection as event_counts
from tests.eventstore.sample_events import incremented

META = Metadata(actor_subject="bench")


async def fill(store: EventStore, events: int, per_append: int = 500) -> None:
    async def writer(count: int) -> None:
        for _ in range(count // per_append):
            await store.append(f"bench-{uuid.uuid4()}", 0,
                               [incremented() for _ in range(per_append)], META)

    await asyncio.gather(*[writer(events // 4) for _ in range(4)])


async def run_relay(url: str, repeats: int, events: int = 100_000) -> dict[str, object]:
    bootstrap = env("ORCH_KAFKA_BOOTSTRAP") or ""
    pool = await create_pool(url, max_size=10)
    store = EventStore(pool)
    await fill(store, events)
    rates = []
    for _ in range(repeats):
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM relay_checkpoints")
        await ensure_topics(bootstrap, topics_for(prefix, ["bench"]), 4)
        stop = asyncio.Event()
        relay = KafkaRelay(store, bootstrap=bootstrap, topic_prefix=prefix, partitions=4,
                           batch_size=5000, idle_wait=0.05)
        start = time.perf_counter()
        running = asyncio.create_task(relay.run(stop))
        while relay.stats.published < events:  # noqa: ASYNC110 - sampling a counter
            await asyncio.sleep(0.01)
        rates.append(events / (time.perf_counter() - start))
        stop.set()
        await running
    await pool.close()
    return {"name": "relay_kafka", "value": round(median(rates)), "unit": "events/s",
            "target": ">= 20000", "runs": [round(r) for r in rates], "events": events}


async def run_rebuild(url: str, repeats: int, events: int = 200_000) -> dict[str, object]:
    pool = await create_pool(url, max_size=10)
    store = EventStore(pool)
    await fill(store, events)
    engine = database_engine(url)
    rates = []
    for attempt in range(repeats):
        version = 100 + attempt
        tables = versioned_tables(event_counts, version)
        async with engine.begin() as conn:
            await create_tables(conn, tables)
        result = await replay(event_counts, store=store, engine=engine, version=version,
                              tables=tables, batch_size=5000, record_position=False)
        rates.append(result.events / result.seconds)
    await engine.dispose()
    await pool.close()
    return {"name": "rebuild_from_log", "value": round(median(rates)), "unit": "events/s",
            "target": ">= 50000", "runs": [round(r) for r in rates], "events": events}


class Visibility:
    """Bench-only projection: when each event became visible in Postgres."""

    NAME = "bench_visibility"
    VERSION = 1
    HANDLES = ALL_EVENT_TYPES

    def tables(self, version: int) -> list[Table]:
        return [Table(f"{self.NAME}_v{version}", MetaData(),
                      Column("event_id", Text, primary_key=True),
                      Column("recorded_at", DateTime(timezone=True), nullable=False),
                      Column("applied_at", DateTime(timezone=True), nullable=False,
                             server_default=text("clock_timestamp()")))]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        await self.apply_batch(conn, [(event, decoded)], tables)

    async def apply_batch(self, conn: AsyncConnection,
                          items: Sequence[tuple[RecordedEvent, Any]],
                          tables: Sequence[Table]) -> None:
        await conn.execute(tables[0].insert(), [
            {"event_id": e.event_id, "recorded_at": e.recorded_at} for e, _ in items])


async def run_e2e(url: str, rate: int = 500, seconds: float = 20.0) -> dict[str, object]:
    """Append at `rate` events/s with relay + projection runner live; p99 of
    (visible in the projection) - (recorded in the log), both on the database clock."""
    bootstrap = env("ORCH_KAFKA_BOOTSTRAP") or ""
    pool = await create_pool(url, max_size=10)
    store = EventStore(pool)
    engine = database_engine(url)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = topics_for(prefix, ["bench"])
    await ensure_topics(bootstrap, topics, 4)
    stop = asyncio.Event()
    relay = KafkaRelay(store, bootstrap=bootstrap, topic_prefix=prefix, partitions=4)
    projection = Visibility()
    runner = ProjectionRunner(projection, engine=engine, bootstrap_servers=bootstrap,
                              topics=topics, version=1,
                              settings=ConsumerSettings(fetch_max_wait_ms=10,
                                                        poll_timeout_ms=50))
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(runner.run(stop))]
    await asyncio.sleep(3)  # warm-up: group join, topic metadata
    streams = [f"bench-{uuid.uuid4()}" for _ in range(50)]
    interval = 1 / rate
    count = int(rate * seconds)
    start = time.perf_counter()
    for i in range(count):
        await store.append(streams[i % len(streams)], None, [incremented()], META)
        lag = start + (i + 1) * interval - time.perf_counter()
        if lag > 0:
            await asyncio.sleep(lag)
    achieved = count / (time.perf_counter() - start)
    table = versioned_tables(projection, 1)[0].name
    deadline = time.perf_counter() + 60
    async with engine.connect() as conn:
        while (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() < count:
            assert time.perf_counter() < deadline, "events did not all become visible"
            await asyncio.sleep(0.1)
        rows = (await conn.execute(text(
            f"SELECT extract(epoch FROM applied_at - recorded_at) * 1000 FROM {table}"))).all()
    stop.set()
    await asyncio.gather(*tasks)
    await engine.dispose()
    await pool.close()
    latencies = [float(r[0]) for r in rows]
    return {"name": "e2e_visible_p99", "value": round(percentile(latencies, 99), 1),
            "unit": "ms", "target": "<= 250", "p50_ms": round(percentile(latencies, 50), 1),
            "achieved_rate": round(achieved), "events": count}
