"""Property: however Kafka hands a projection its messages, the tables end up the same.

One batch, random chunks, or chunks with redelivery (a partition resumed from an
earlier offset, as after a rebalance or a lost commit): fed through the runner's
batch function (ProjectionWriter), every delivery gives identical tables, identical
parked messages and identical unknown-type counts. No Kafka needed: the writer only
sees (topic, partition, offset, key, value) messages.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import kafka_format
from eventstore.consumers import ConsumedMessage, ProjectionWriter
from eventstore.projection import Projection
from eventstore.records import Metadata, RecordedEvent
from eventstore.registry import EventRegistry
from projections.event_counts import projection as event_counts
from tests.consumers.support import counter_totals, expected_totals, rows
from tests.eventstore.sample_events import CounterIncremented, CounterOpened, registry

TOPIC = "props.counters"
PARTITIONS = 3
STREAMS = [f"counter-{uuid.UUID(int=n)}" for n in range(5)]
BASE_TIME = datetime(2026, 11, 23, tzinfo=UTC)
versions = itertools.count(1)

step = st.one_of(
    st.tuples(st.just("inc"), st.integers(0, 4), st.integers(-5, 9), st.sampled_from("xyz")),
    st.tuples(st.just("unknown"), st.integers(0, 4), st.just(0), st.just("")),
    st.tuples(st.just("junk"), st.integers(0, 2), st.just(0), st.just("")),
)


def make_messages(steps: list[tuple[str, int, int, str]]
                  ) -> tuple[list[ConsumedMessage], list[RecordedEvent]]:
    """The log the steps describe, as Kafka would hold it (partition by stream)."""
    messages: list[ConsumedMessage] = []
    events: list[RecordedEvent] = []
    offsets = [0] * PARTITIONS
    stream_versions: dict[str, int] = {}

    def add(stream: int, type_: str, data: bytes) -> None:
        stream_id = STREAMS[stream]
        version = stream_versions.get(stream_id, 0) + 1
        stream_versions[stream_id] = version
        number = len(events) + 1
        event = RecordedEvent(
            position=number, tx_id=1000 + number, stream_id=stream_id, category="counter",
            version=version, event_id=str(uuid.UUID(int=number)), type=type_,
            schema_version=1, data=data, metadata=Metadata(actor_subject="p"),
            recorded_at=BASE_TIME + timedelta(seconds=number), hash=b"\0" * 32)
        events.append(event)
        key, value, headers = kafka_format.encode(event)
        partition = stream % PARTITIONS
        messages.append(ConsumedMessage(topic=TOPIC, partition=partition,
                                        offset=offsets[partition], key=key, value=value,
                                        headers=tuple(headers)))
        offsets[partition] += 1

    for kind, target, by, note in steps:
        if kind == "junk":
            messages.append(ConsumedMessage(topic=TOPIC, partition=target,
                                            offset=offsets[target], key=None,
                                            value=f"junk {len(messages)}".encode()))
            offsets[target] += 1
            continue
        if STREAMS[target] not in stream_versions:
            add(target, "counter.opened", registry.encode(CounterOpened(name=f"s{target}"),
                                                          "0").data)
        if kind == "inc":
            add(target, "counter.incremented",
                registry.encode(CounterIncremented(by=by, note=note), "0").data)
        else:
            add(target, "counter.reset", b'{"type": "counter.reset"}')
    return messages, events


def by_partition(messages: list[ConsumedMessage]) -> list[list[ConsumedMessage]]:
    return [[m for m in messages if m.partition == p] for p in range(PARTITIONS)]


def random_chunks(data: st.DataObject, messages: list[ConsumedMessage]
                  ) -> list[list[ConsumedMessage]]:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(messages) - 1)))))
    bounds = [0, *cuts, len(messages)]
    return [messages[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def with_redelivery(data: st.DataObject, messages: list[ConsumedMessage]
                    ) -> list[list[ConsumedMessage]]:
    """Batches of per-partition runs, each resuming up to 4 offsets back (redelivery)."""
    queues = by_partition(messages)
    cursors = [0] * PARTITIONS
    batches: list[list[ConsumedMessage]] = []
    while any(c < len(q) for c, q in zip(cursors, queues, strict=True)):
        batch: list[ConsumedMessage] = []
        for _ in range(data.draw(st.integers(1, 3))):
            behind = [p for p in range(PARTITIONS) if cursors[p] < len(queues[p])]
            if not behind:
                break
            p = behind[data.draw(st.integers(0, len(behind) - 1))]
            start = max(0, cursors[p] - data.draw(st.integers(0, 4)))
            end = min(len(queues[p]), cursors[p] + data.draw(st.integers(1, 5)))
            batch.extend(queues[p][start:end])
            cursors[p] = max(cursors[p], end)
        if batch:
            batches.append(batch)
    return batches


async def feed(engine: AsyncEngine, projection: Projection, registry_: EventRegistry | None,
               batches: list[list[ConsumedMessage]]) -> tuple[Any, ...]:
    writer = ProjectionWriter(projection, engine=engine, version=next(versions),
                              registry=registry_)
    for batch in batches:
        await writer.write(batch)
    async with engine.connect() as conn:
        parked = (await conn.execute(text(
            "SELECT topic, kafka_partition, kafka_offset, payload, reason FROM parked_messages "
            "WHERE consumer = :c ORDER BY 1, 2, 3"), {"c": writer.consumer})).all()
    return (await rows(engine, writer.tables[0]), [tuple(r) for r in parked],
            Counter(writer.stats.unknown_types), writer.stats.applied)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=40), data=st.data())
async def test_one_batch_chunks_and_redelivery_give_identical_tables(
        fx_engine: AsyncEngine, steps: list[tuple[str, int, int, str]],
        data: st.DataObject) -> None:
    messages, events = make_messages(steps)
    cases: list[tuple[Projection, EventRegistry | None]] = [(counter_totals, registry),
                                                            (event_counts, None)]
    for projection, registry_ in cases:
        whole = await feed(fx_engine, projection, registry_, [messages])
        chunked = await feed(fx_engine, projection, registry_, random_chunks(data, messages))
        redelivered = await feed(fx_engine, projection, registry_,
                                 with_redelivery(data, messages))
        assert chunked == whole
        assert redelivered == whole
    # And the counter tables are what the log says (unknown types and junk left out).
    known = [e for e in events if e.type != "counter.reset"]
    counters = await feed(fx_engine, counter_totals, registry, [messages])
    assert counters[0] == expected_totals(known)
    assert sum(counters[2].values()) == len(events) - len(known)
    assert len(counters[1]) == sum(1 for kind, *_ in steps if kind == "junk")
