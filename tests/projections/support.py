"""Helpers for projection tests: a log over several categories and its true counts."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.records import LogPosition, NewEvent
from eventstore.store import EventStore
from projections.event_counts import EventCount
from tests.consumers.support import append
from tests.eventstore.sample_events import incremented, opened

CATEGORIES = ["counter", "gauge"]


def reset_event() -> NewEvent:
    """A type no registry knows (as if written by a newer version)."""
    return NewEvent(event_id=str(uuid.uuid4()), type="counter.reset", schema_version=1,
                    data=b'{"type": "counter.reset"}')


async def write_mixed(store: EventStore, events: int, seed: int) -> None:
    """Streams in two categories, opened then incremented, some unknown types."""
    rng = random.Random(seed)
    streams = [f"{rng.choice(CATEGORIES)}-{uuid.UUID(int=rng.getrandbits(128))}"
               for _ in range(12)]
    for stream in streams:
        await append(store, stream, opened())
    written = len(streams)
    while written < events:
        size = min(rng.randint(1, 20), events - written)
        batch = [reset_event() if rng.random() < 0.05 else incremented(rng.randint(1, 5))
                 for _ in range(size)]
        await append(store, rng.choice(streams), *batch)
        written += size


async def true_counts(store: EventStore, *, to: LogPosition | None = None,
                      until: datetime | None = None) -> list[EventCount]:
    """Event counts straight from the events table (optionally a log prefix / time)."""
    query = ("SELECT category, type, count(*) AS count, max(position) AS last_position, "
             "max(recorded_at) AS last_recorded_at FROM events WHERE true")
    args: list[Any] = []
    if to is not None:
        args += [str(to.tx_id), to.position]
        query += " AND (tx_id, position) <= ($1::text::xid8, $2)"
    if until is not None:
        args.append(until)
        query += f" AND recorded_at <= ${len(args)}"
    query += " GROUP BY category, type ORDER BY category, type"
    async with store.pool.acquire() as conn:
        return [EventCount(**dict(row)) for row in await conn.fetch(query, *args)]


async def database_now(engine: AsyncEngine) -> datetime:
    from sqlalchemy import text

    async with engine.connect() as conn:
        value: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        return value
