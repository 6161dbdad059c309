"""What consumer and projection tests share: topics, a tiny relay, a test projection.

The real relay (eventstore/relay.py) is tested on its own; here LogPublisher plays
its part: it reads the log in order and publishes each event with kafka_format.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import kafka_format
from eventstore.consumers import ConsumerSettings, end_offsets
from eventstore.projection import by_type
from eventstore.records import LogPosition, Metadata, NewEvent, RecordedEvent
from eventstore.store import EventStore
from orchestrator.settings import database_engine
from tests.eventstore.sample_events import (
    CounterIncremented,
    CounterOpened,
    incremented,
    opened,
)

WRITER = Metadata(actor_subject="test-writer")


def consumer_settings(prefix: str, **overrides: Any) -> ConsumerSettings:
    """Timings for a real broker in tests: short session, quick fetches, unique groups."""
    values: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                              "fetch_max_wait_ms": 20, "poll_timeout_ms": 50,
                              "version_check_interval": 0.2, "group_prefix": prefix + "."}
    values.update(overrides)
    return ConsumerSettings(**values)


@pytest.fixture(name="fx_engine")
async def fixture_engine(fx_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = database_engine(fx_database_url, pool_size=10, max_overflow=20)
    yield engine
    await engine.dispose()


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=1) for name in names])
    finally:
        await admin.close()
    deadline = time.monotonic() + 30
    while True:  # until every partition has a leader that answers offset requests
        ends = await end_offsets(bootstrap, names)
        if len(ends) == partitions * len(names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {names} did not come up: {ends}")
        await asyncio.sleep(0.05)


class LogPublisher:
    """Publishes the log to Kafka in log order, like the relay does."""

    def __init__(self, store: EventStore, bootstrap: str, prefix: str) -> None:
        self.store = store
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.position = LogPosition.start()
        self.published = 0
        self._producer: Any = None

    async def __aenter__(self) -> LogPublisher:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                          enable_idempotence=True, linger_ms=2)
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def publish(self, within: float = 60) -> int:
        """Publish everything committed since the last call; returns how many.

        The log reader only returns final rows: with a transaction open anywhere in
        the cluster, recent commits wait below its horizon. Wait for them too.
        """
        remaining = await self.store.count_after(self.position)
        deadline = time.monotonic() + within
        count = 0
        while count < remaining:
            batch = await self.store.read_all(self.position, limit=1000)
            if not batch:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{remaining - count} committed events never got final")
                await asyncio.sleep(0.02)
                continue
            sent = []
            for event in batch:
                key, value, headers = kafka_format.encode(event)
                sent.append(await self._producer.send(
                    kafka_format.topic_for(self.prefix, event.category), value=value, key=key,
                    headers=headers))
            await asyncio.gather(*sent)
            self.position = batch[-1].log_position
            count += len(batch)
        self.published += count
        return count

    async def send_raw(self, topic: str, value: bytes | None, key: bytes | None = None,
                       partition: int | None = None) -> Any:
        return await (await self._producer.send(topic, value=value, key=key,
                                                partition=partition))


class Running:
    """Runners in background tasks; a condition awaited here fails fast if one dies."""

    def __init__(self, *runners: Any) -> None:
        self.runners = runners
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Running:
        self.tasks = [asyncio.create_task(r.run(self.stop)) for r in self.runners]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    async def until(self, condition: Awaitable[None]) -> None:
        waiting = asyncio.ensure_future(condition)
        await asyncio.wait([waiting, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            for task in self.tasks:
                if task.done():
                    task.result()
            raise AssertionError("a runner stopped on its own")
        waiting.result()

    async def caught_up(self, within: float = 60) -> None:
        for runner in self.runners:
            await self.until(runner.wait_until_caught_up(within=within))


async def eventually(condition: Callable[[], bool], within: float = 60,
                     what: str = "condition") -> None:
    """Poll a condition with a deadline (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {within}s")
        await asyncio.sleep(0.02)


async def append(store: EventStore, stream: str, *events: NewEvent) -> None:
    await store.append(stream, None, list(events), WRITER)


async def rows(engine: AsyncEngine, table: Table) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [tuple(row) for row in result]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


async def write_counters(store: EventStore, streams: int, increments: int,
                         seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    names = [unique("counter") for _ in range(streams)]
    for number, stream in enumerate(names):
        await append(store, stream, opened(f"c{number}"))
    for step in range(increments):
        stream = rng.choice(names)
        await append(store, stream, incremented(rng.randint(1, 9), note=f"n{step}"))
    return names


# ---------------------------------------------------------------- a test projection

async def _opened(conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                  tables: Sequence[Table]) -> None:
    (totals,) = tables
    assert isinstance(decoded, CounterOpened)
    await conn.execute(insert(totals).values(
        stream_id=event.stream_id, name=decoded.name, total=0, increments=0,
        last_version=event.version, notes=""))


async def _incremented(conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                       tables: Sequence[Table]) -> None:
    (totals,) = tables
    assert isinstance(decoded, CounterIncremented)
    # The notes column concatenates in stream order: a reordered, skipped or repeated
    # event shows up in it, not only in the sums.
    await conn.execute(update(totals).where(totals.c.stream_id == event.stream_id).values(
        total=totals.c.total + decoded.by, increments=totals.c.increments + 1,
        last_version=event.version, notes=totals.c.notes + decoded.note + ";"))


class CounterTotals:
    """Per counter stream: name, total, increments, notes in order (apply per event)."""

    NAME = "counter_totals"
    VERSION = 1
    HANDLES = frozenset({"counter.opened", "counter.incremented"})
    apply = staticmethod(by_type({"counter.opened": _opened,
                                  "counter.incremented": _incremented}))

    def tables(self, version: int) -> list[Table]:
        return [Table(f"{self.NAME}_v{version}", MetaData(),
                      Column("stream_id", Text, primary_key=True),
                      Column("name", Text, nullable=False),
                      Column("total", BigInteger, nullable=False),
                      Column("increments", Integer, nullable=False),
                      Column("last_version", Integer, nullable=False),
                      Column("notes", Text, nullable=False))]


counter_totals = CounterTotals()


def expected_totals(events: Sequence[RecordedEvent]) -> list[tuple[Any, ...]]:
    """CounterTotals computed in Python from the log, as rows sorted by stream."""
    from tests.eventstore.sample_events import registry

    state: dict[str, list[Any]] = {}
    for event in events:
        if event.type == "counter.opened":
            opened = registry.decode_recorded(event)
            assert isinstance(opened, CounterOpened)
            state[event.stream_id] = [event.stream_id, opened.name, 0, 0, event.version, ""]
        elif event.type == "counter.incremented":
            inc = registry.decode_recorded(event)
            assert isinstance(inc, CounterIncremented)
            row = state[event.stream_id]
            row[2] += inc.by
            row[3] += 1
            row[4] = event.version
            row[5] += inc.note + ";"
    return sorted(tuple(row) for row in state.values())
