"""Migration 0006 gives an existing log its parent hashes without breaking a link."""

from __future__ import annotations

import asyncio

from eventstore.audit import verify_log
from eventstore.records import Metadata
from eventstore.store import EventStore, create_pool
from orchestrator import migrate
from tests.databases import TestDatabases
from tests.eventstore.sample_events import incremented, new_stream, opened

META = Metadata(actor_subject="alice")


async def test_a_log_written_before_0006_verifies_after_it_and_keeps_growing(
        fx_databases: TestDatabases) -> None:
    url = await fx_databases.unmigrated()
    await asyncio.to_thread(migrate.upgrade, url, "0005")
    streams = [new_stream() for _ in range(3)]
    pool = await create_pool(url)
    try:
        store = EventStore(pool)
        for stream in streams:
            await store.append(stream, 0, [opened(), incremented(1), incremented(2)], META)
    finally:
        await pool.close()

    await asyncio.to_thread(migrate.upgrade, url, "head")

    pool = await create_pool(url)
    try:
        store = EventStore(pool)
        before = await verify_log(store)
        await store.append(streams[1], 3, [incremented(3)], META)
        after = await verify_log(store)
        async with pool.acquire() as conn:
            link = await conn.fetchrow(
                "SELECT (SELECT prev_hash FROM events WHERE stream_id = $1 AND version = 4) "
                "AS parent, (SELECT hash FROM events WHERE stream_id = $1 AND version = 3) "
                "AS head", streams[1])
    finally:
        await pool.close()
    assert (before.intact, before.events, before.streams) == (True, 9, 3)
    assert (after.intact, after.events) == (True, 10)
    assert link["parent"] == link["head"]  # the new event chains from the migrated head
