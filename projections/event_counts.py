"""How many events of each type and category the log holds: the projection proving the loop.

It reads envelopes only (no payload decoding), so it counts every type, including
ones this code does not know. Every column is order-independent (a count, a max
position, a max recording time), so a live build fed from Kafka, whose partitions
interleave in any order, equals a rebuild in log order row for row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore.projection import ALL_EVENT_TYPES, live_version, query_tables
from eventstore.records import RecordedEvent


class EventCounts:
    NAME = "event_counts"
    VERSION = 1
    HANDLES = ALL_EVENT_TYPES
    DECODE = False  # counts envelopes: every type, known to this code or not

    def tables(self, version: int) -> list[Table]:
        return [Table(
            f"{self.NAME}_v{version}", MetaData(),
            Column("category", Text, primary_key=True),
            Column("type", Text, primary_key=True),
            Column("count", BigInteger, nullable=False),
            Column("last_position", BigInteger, nullable=False),
            Column("last_recorded_at", DateTime(timezone=True), nullable=False),
        )]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        await self.apply_batch(conn, [(event, decoded)], tables)

    async def apply_batch(self, conn: AsyncConnection,
                          items: Sequence[tuple[RecordedEvent, Any]],
                          tables: Sequence[Table]) -> None:
        (counts,) = tables
        totals: dict[tuple[str, str], tuple[int, int, datetime]] = {}
        for event, _ in items:
            key = (event.category, event.type)
            known = totals.get(key)
            if known is None:
                totals[key] = (1, event.position, event.recorded_at)
            else:
                totals[key] = (known[0] + 1, max(known[1], event.position),
                               max(known[2], event.recorded_at))
        if not totals:
            return
        statement = insert(counts)
        statement = statement.on_conflict_do_update(
            index_elements=[counts.c.category, counts.c.type],
            set_={
                "count": counts.c.count + statement.excluded.count,
                "last_position": func.greatest(counts.c.last_position,
                                           statement.excluded.last_position),
                "last_recorded_at": func.greatest(counts.c.last_recorded_at,
                                              statement.excluded.last_recorded_at),
            })
        # Sorted keys: concurrent batches lock rows in the same order (no deadlocks).
        await conn.execute(statement, [
            {"category": category, "type": type_, "count": count, "last_position": position,
             "last_recorded_at": recorded_at}
            for (category, type_), (count, position, recorded_at) in sorted(totals.items())])


projection = EventCounts()


class EventCount(msgspec.Struct, frozen=True, kw_only=True):
    category: str
    type: str
    count: int
    last_position: int
    last_recorded_at: datetime


async def read_event_counts(conn: AsyncConnection, version: int, *,
                            schema: str | None = None) -> list[EventCount]:
    """Counts per (category, type) from one build (``schema`` for an audit replay)."""
    (counts,) = query_tables(projection, version, schema)
    result = await conn.execute(select(counts).order_by(counts.c.category, counts.c.type))
    return [EventCount(**row) for row in result.mappings()]


async def read_live_event_counts(conn: AsyncConnection) -> list[EventCount]:
    """What the read path serves: the live build's counts (empty before a first build)."""
    version = await live_version(conn, projection.NAME)
    return [] if version is None else await read_event_counts(conn, version)
