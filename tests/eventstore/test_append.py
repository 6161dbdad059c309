"""The append contract of the Postgres event log, against the real server."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import asyncpg
import pytest

from eventstore.records import ConcurrencyError, LogPosition, Metadata
from eventstore.store import EventStore
from tests.eventstore.sample_events import incremented, new_stream, opened, registry

ALICE = Metadata(actor_issuer="https://iam.example", actor_subject="alice",
                 correlation_id="c-1", request_id="r-1")


async def test_appends_to_a_new_stream_and_reads_it_back(fx_store: EventStore) -> None:
    stream = new_stream()
    result = await fx_store.append(stream, 0, [opened("a"), incremented(2)], ALICE)
    assert result.versions == [1, 2]
    assert result.positions[0] < result.positions[1]

    events = await fx_store.read_stream(stream)
    assert [e.version for e in events] == [1, 2]
    assert [e.type for e in events] == ["counter.opened", "counter.incremented"]
    assert registry.decode_recorded(events[1]).by == 2  # type: ignore[attr-defined]
    assert events[0].metadata == ALICE
    assert events[0].category == "counter"


async def test_stale_expected_version_is_a_conflict(fx_store: EventStore) -> None:
    stream = new_stream()
    await fx_store.append(stream, 0, [opened()], ALICE)
    with pytest.raises(ConcurrencyError) as conflict:
        await fx_store.append(stream, 0, [incremented()], ALICE)
    assert conflict.value.actual == 1
    assert await fx_store.stream_version(stream) == 1


async def test_concurrent_writers_at_the_same_version_exactly_one_wins(
        fx_store: EventStore) -> None:
    stream = new_stream()
    await fx_store.append(stream, 0, [opened()], ALICE)

    async def write() -> str:
        try:
            await fx_store.append(stream, 1, [incremented()], ALICE)
            return "won"
        except ConcurrencyError:
            return "conflict"

    outcomes = await asyncio.gather(*[write() for _ in range(10)])
    assert sorted(outcomes) == ["conflict"] * 9 + ["won"]
    assert await fx_store.stream_version(stream) == 2


async def test_same_idempotency_key_appends_once(fx_store: EventStore) -> None:
    stream = new_stream()
    first = await fx_store.append(stream, None, [opened()], ALICE, idempotency_key="cmd-1")
    again = await fx_store.append(stream, None, [opened()], ALICE, idempotency_key="cmd-1")
    assert again == first
    assert len(await fx_store.read_stream(stream)) == 1


async def test_concurrent_twins_with_one_idempotency_key_append_once(
        fx_store: EventStore) -> None:
    stream = new_stream()
    results = await asyncio.gather(*[
        fx_store.append(stream, None, [incremented()], ALICE, idempotency_key="twin")
        for _ in range(8)])
    assert len({tuple(r.positions) for r in results}) == 1
    assert len(await fx_store.read_stream(stream)) == 1


async def test_hash_chain_links_each_event_to_the_previous_one(
        fx_store: EventStore) -> None:
    stream = new_stream()
    await fx_store.append(stream, 0, [opened(), incremented()], ALICE)
    await fx_store.append(stream, 2, [incremented(5)], ALICE)
    events = await fx_store.read_stream(stream)
    previous = bytes(32)
    async with fx_store.pool.acquire() as conn:
        for event in events:
            canonical = await conn.fetchval(
                "SELECT concat_ws(E'\\n', stream_id, version::text, event_id::text, type, "
                "schema_version::text, (extract(epoch FROM recorded_at) * 1000000)::bigint::text,"
                " data::text, metadata::text) FROM events WHERE event_id = $1::uuid",
                event.event_id)
            assert event.hash == hashlib.sha256(previous + canonical.encode()).digest()
            previous = event.hash


@pytest.mark.parametrize("statement", [
    "UPDATE events SET type = 'counter.forged'",
    "DELETE FROM events",
    "TRUNCATE events",
])
async def test_the_application_cannot_rewrite_history(
        fx_store: EventStore, statement: str) -> None:
    stream = new_stream()
    await fx_store.append(stream, 0, [opened()], ALICE)
    async with fx_store.pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute(statement)
    assert [e.type for e in await fx_store.read_stream(stream)] == ["counter.opened"]


async def test_reads_a_stream_as_of_a_version_or_a_time(fx_store: EventStore) -> None:
    stream = new_stream()
    await fx_store.append(stream, 0, [opened()], ALICE)
    await fx_store.append(stream, 1, [incremented()], ALICE)
    await fx_store.append(stream, 2, [incremented()], ALICE)
    events = await fx_store.read_stream(stream)

    assert [e.version for e in await fx_store.read_stream(stream, to_version=2)] == [1, 2]
    as_of_first = await fx_store.read_stream(stream, until=events[0].recorded_at)
    assert [e.version for e in as_of_first] == [1]
    before_all = await fx_store.read_stream(
        stream, until=events[0].recorded_at - timedelta(seconds=1))
    assert before_all == []


async def test_stream_ids_must_name_a_category(fx_store: EventStore) -> None:
    with pytest.raises(ValueError, match="category"):
        await fx_store.append("nocategory", 0, [opened()], ALICE)


async def test_counting_the_backlog_stops_at_its_limit(fx_store: EventStore) -> None:
    stream = new_stream()
    first = await fx_store.append(stream, 0, [opened()], ALICE)
    await fx_store.append(stream, 1, [incremented() for _ in range(4)], ALICE)
    (event,) = await fx_store.read_stream(stream, to_version=1)
    assert await fx_store.count_after(LogPosition.start()) == 5
    assert await fx_store.count_after(LogPosition.start(), limit=3) == 3
    assert await fx_store.count_after(event.log_position) == 4
    assert first.version == 1
