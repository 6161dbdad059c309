"""The statistics and audit ports of ``api.admin.ports``, implemented over the statistics
projection, the event store and the rebuild machinery (issue 7; wired by the bootstrap)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.admin.ports import AuditEventQuery, ReplaySummary, StatisticsQuery
from domain.deployments import stream_id as deployment_stream
from eventstore.audit import VerifyReport, export_log, verify_log
from eventstore.projection import Projection, live_version, versioned_tables
from eventstore.rebuild import position_of, rebuild_to
from eventstore.records import RecordedEvent, decode_metadata
from eventstore.registry import EventRegistry
from eventstore.store import EventStore
from projections import statistics

ProjectionLookup = Callable[[str], tuple[Projection, list[str]]]


class StatisticsReader:
    """api.admin.ports.StatisticsReader over the live statistics build (or a replay)."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] | None = None
                 ) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))

    async def query(self, query: StatisticsQuery) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            if query.schema is not None:
                version = statistics.VERSION
                first = versioned_tables(statistics.projection, version,
                                         schema=query.schema)[1]
                exists = (await conn.execute(text("SELECT to_regclass(:name)"),
                                             {"name": f'"{query.schema}".{first.name}'})
                          ).scalar_one()
                if exists is None:
                    raise LookupError(f"no statistics replay in schema {query.schema}")
            else:
                live = await live_version(conn, statistics.NAME)
                if live is None:
                    raise LookupError("the statistics projection has not been built yet")
                version = live
            f = statistics.StatisticsFilter(
                owner_issuer=query.owner_issuer, owner_subject=query.owner_subject,
                groups=query.groups, start=query.start, end=query.end,
                user_group=query.user_group, provider=query.provider,
                template_type=query.template_type, statuses=query.statuses, owner=query.owner)
            common: dict[str, Any] = {"group_by": query.group_by, "schema": query.schema}
            now = self.clock()
            if query.view == "deployments":
                return await statistics.deployment_counts(conn, version, f,
                                                          interval=query.interval, **common)
            if query.view == "active":
                return await statistics.active_deployments(
                    conn, version, f, interval=query.interval, today=now.date(), **common)
            if query.view == "outcomes":
                return await statistics.create_outcomes(conn, version, f,
                                                        interval=query.interval, **common)
            if query.view == "failures":
                return await statistics.failure_reasons(conn, version, f,
                                                        interval=query.interval, **common)
            return await statistics.resource_hours(conn, version, f, now=now, **common)


class _StreamOf(msgspec.Struct):
    stream_id: str


_EVENT_COLUMNS = """
SELECT position, tx_id::text::bigint AS tx_id, stream_id, category, version,
       event_id::text AS event_id, type, schema_version, data::text AS data,
       metadata::text AS metadata, recorded_at, hash
FROM events
"""


def _recorded(row: Any) -> RecordedEvent:
    return RecordedEvent(
        position=row["position"], tx_id=row["tx_id"], stream_id=row["stream_id"],
        category=row["category"], version=row["version"], event_id=row["event_id"],
        type=row["type"], schema_version=row["schema_version"], data=row["data"].encode(),
        metadata=decode_metadata(row["metadata"]), recorded_at=row["recorded_at"],
        hash=bytes(row["hash"]))


class AuditLog:
    """api.admin.ports.AuditLog: audit reads on the log itself (no read model)."""

    def __init__(self, store: EventStore, engine: AsyncEngine, registry: EventRegistry,
                 projections: ProjectionLookup) -> None:
        self.store = store
        self.engine = engine
        self.registry = registry
        self.projections = projections

    async def stream(self, deployment_id: str, *, to_version: int | None = None,
                     until: datetime | None = None) -> list[tuple[RecordedEvent, Any]]:
        events = await self.store.read_stream(deployment_stream(deployment_id),
                                              to_version=to_version, until=until)
        return [(e, self.registry.decode_recorded(e)) for e in events]

    async def events(self, query: AuditEventQuery) -> list[RecordedEvent]:
        # events_actor_idx: (actor issuer, actor subject, position); events_type_idx.
        sql = _EVENT_COLUMNS + " WHERE metadata->>'actor_issuer' = $1 AND position > $2"
        args: list[Any] = [query.actor_issuer, query.after]
        for column, value in (("metadata->>'actor_subject'", query.actor_subject),
                              ("stream_id", query.stream_id)):
            if value is not None:
                args.append(value)
                sql += f" AND {column} = ${len(args)}"
        if query.types:
            args.append(list(query.types))
            sql += f" AND type = ANY(${len(args)})"
        if query.recorded_from is not None:
            args.append(query.recorded_from)
            sql += f" AND recorded_at >= ${len(args)}"
        if query.recorded_to is not None:
            args.append(query.recorded_to)
            sql += f" AND recorded_at <= ${len(args)}"
        args.append(query.limit)
        sql += f" ORDER BY position LIMIT ${len(args)}"
        async with self.store.pool.acquire() as conn:
            return [_recorded(row) for row in await conn.fetch(sql, *args)]

    async def export(self, *, owner_issuer: str | None, after: int | None,
                     to: int | None) -> AsyncIterator[bytes]:
        allowed: set[str] | None = None
        if owner_issuer is not None:
            async with self.store.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT stream_id FROM events WHERE type = 'deployment.requested' "
                    "AND data->'owner'->>'issuer' = $1", owner_issuer)
            allowed = {row["stream_id"] for row in rows}
        # Positions resolve before streaming starts: an unknown one is a 404, not a cut.
        start = await position_of(self.store, after) if after else None
        end = await position_of(self.store, to) if to else None
        decoder = msgspec.json.Decoder(_StreamOf)

        async def lines() -> AsyncIterator[bytes]:
            async for line in export_log(self.store, after=start, to_position=end):
                if allowed is None or decoder.decode(line).stream_id in allowed:
                    yield line

        return lines()

    async def verify(self) -> VerifyReport:
        return await verify_log(self.store)

    async def replay(self, projection: str, *, schema: str, position: int | None,
                     until: datetime | None) -> ReplaySummary:
        found, categories = self.projections(projection)
        result = await rebuild_to(found, store=self.store, engine=self.engine, schema=schema,
                                  position=position, until=until, registry=self.registry,
                                  categories=categories)
        return ReplaySummary(projection=found.NAME, schema=schema, events=result.events,
                             applied=result.applied, position=result.position.position,
                             seconds=result.seconds)
