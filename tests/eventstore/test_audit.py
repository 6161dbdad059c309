"""Tamper evidence: the verifier finds a row edited behind the application's back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventstore.audit import export_log, verify_export, verify_log
from eventstore.records import Metadata
from eventstore.store import EventStore
from tests.databases import TestDatabases
from tests.eventstore.sample_events import incremented, new_stream, opened

META = Metadata(actor_subject="alice")


async def fill(store: EventStore) -> list[str]:
    streams = [new_stream() for _ in range(5)]
    for stream in streams:
        await store.append(stream, 0, [opened(), incremented(1)], META)
        await store.append(stream, 2, [incremented(2), incremented(3)], META)
    return streams


async def exported(store: EventStore) -> list[bytes]:
    return [line async for line in export_log(store, batch_size=7)]


@pytest.fixture(name="fx_superuser")
async def fixture_superuser(fx_databases: TestDatabases,
                            fx_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser session that bypasses the append-only trigger, as an intruder could."""
    conn = await asyncpg.connect(fx_databases.admin_url_for(fx_database_url))
    await conn.execute("SET session_replication_role = replica")
    yield conn
    await conn.close()


async def test_an_untouched_log_verifies_in_sql_and_from_its_export(
        fx_store: EventStore) -> None:
    await fill(fx_store)
    report = await verify_log(fx_store)
    assert report.intact
    assert (report.events, report.streams, report.broken_links) == (20, 5, 0)
    lines = await exported(fx_store)
    assert len(lines) == 20
    assert verify_export(lines) is None


async def test_an_edited_payload_is_found(fx_store: EventStore,
                                          fx_superuser: asyncpg.Connection) -> None:
    streams = await fill(fx_store)
    target = (await fx_store.read_stream(streams[2]))[2]
    await fx_superuser.execute(
        "UPDATE events SET data = jsonb_set(data, '{by}', '200') WHERE event_id = $1::uuid",
        target.event_id)

    report = await verify_log(fx_store)
    assert report.first_broken is not None
    assert (report.first_broken.stream_id, report.first_broken.version,
            report.first_broken.problem) == (streams[2], 3, "hash mismatch")
    offline = verify_export(await exported(fx_store))
    assert offline is not None and offline.event_id == target.event_id


async def test_a_recomputed_hash_breaks_the_next_link(fx_store: EventStore,
                                                      fx_superuser: asyncpg.Connection) -> None:
    """An intruder who also fixes the edited row's own hash is caught one link later."""
    streams = await fill(fx_store)
    events = await fx_store.read_stream(streams[1])
    await fx_superuser.execute(
        "UPDATE events e SET data = jsonb_set(e.data, '{by}', '200'), "
        "hash = event_hash($2, e.stream_id, e.version, e.event_id, e.type, e.schema_version, "
        "e.recorded_at, jsonb_set(e.data, '{by}', '200'), e.metadata) "
        "WHERE e.event_id = $1::uuid", events[1].event_id, events[0].hash)

    report = await verify_log(fx_store)
    assert report.first_broken is not None
    assert (report.first_broken.stream_id, report.first_broken.version) == (streams[1], 3)


async def test_a_deleted_event_is_a_version_gap(fx_store: EventStore,
                                                fx_superuser: asyncpg.Connection) -> None:
    streams = await fill(fx_store)
    events = await fx_store.read_stream(streams[4])
    await fx_superuser.execute("DELETE FROM events WHERE event_id = $1::uuid",
                               events[1].event_id)

    report = await verify_log(fx_store)
    assert report.first_broken is not None
    assert (report.first_broken.stream_id, report.first_broken.version,
            report.first_broken.problem) == (streams[4], 3, "version gap")
    offline = verify_export(await exported(fx_store))
    assert offline is not None and offline.problem == "version gap"


async def test_export_of_a_slice_verifies_from_its_first_events(fx_store: EventStore) -> None:
    await fill(fx_store)
    lines = await exported(fx_store)
    assert verify_export(lines[7:]) is None


async def test_an_edited_parent_hash_is_found(fx_store: EventStore,
                                              fx_superuser: asyncpg.Connection) -> None:
    """The stored parent hash is sealed into the row's own hash and checked as a link."""
    streams = await fill(fx_store)
    target = (await fx_store.read_stream(streams[3]))[1]
    await fx_superuser.execute(
        "UPDATE events SET prev_hash = sha256(prev_hash) WHERE event_id = $1::uuid",
        target.event_id)

    report = await verify_log(fx_store)
    assert report.first_broken is not None
    assert (report.first_broken.stream_id, report.first_broken.version,
            report.first_broken.problem, report.broken_links) == (
        streams[3], 2, "hash mismatch", 1)


async def test_each_event_stores_the_hash_it_was_chained_from(
        fx_store: EventStore, fx_superuser: asyncpg.Connection) -> None:
    streams = await fill(fx_store)
    rows = await fx_superuser.fetch(
        "SELECT version, hash, prev_hash FROM events WHERE stream_id = $1 ORDER BY version",
        streams[0])
    assert [r["version"] for r in rows] == [1, 2, 3, 4]
    assert [bytes(r["prev_hash"]) for r in rows] == [bytes(32)] + [
        bytes(r["hash"]) for r in rows[:-1]]
