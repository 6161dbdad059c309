"""The projection interface, its versioned tables, and which version is live.

A projection is one read model: a module-level object with

- ``NAME``: stable name; its tables are ``<NAME>_v<N>`` (or ``<NAME>_<part>_v<N>``),
- ``VERSION``: the shape of its tables; bump it to get new tables and a rebuild,
- ``HANDLES``: the event type tags it applies (``ALL_EVENT_TYPES`` for every type),
- ``tables(version)``: SQLAlchemy Core tables for build number ``version``,
- ``async apply(conn, event, decoded, tables)``: apply one event; ``tables`` is what
  ``tables(version)`` returned, in that order (possibly moved to a scratch schema),
- optionally ``async apply_batch(conn, items, tables)`` with ``items`` a sequence of
  ``(event, decoded)`` in order: a faster path for bulk replays,
- optionally ``replayer(tables)``: an object with ``async apply_batch(conn, items)`` and
  ``async finish(engine)`` that a replay uses instead (state kept across batches, work
  deferred to the end of the replay),
- optionally ``DECODE = False``: the projection reads envelopes only; runners then
  ignore any registry they were given, pass ``decoded=None`` and treat every type
  as known (so a rebuild does not fail on a type this code cannot decode).

Projections never commit: the runner owns the transaction and writes the consumer's
checkpoint in it. ``decoded`` is the payload struct when the runner was given an
EventRegistry, else None (a projection over envelopes only, like event counts).

Table versions are build numbers recorded in ``projection_versions``: a rebuild of
the same code makes ``v<N+1>``; ``code_version`` records which ``VERSION`` built it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Literal, Protocol

import msgspec
from sqlalchemy import MetaData, Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore.records import LogPosition, RecordedEvent, UnknownEventType
from eventstore.registry import EventRegistry


class _AllEventTypes(Container[str]):
    """HANDLES for a projection over every event in the log, known or not."""

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str)

    def __repr__(self) -> str:
        return "ALL_EVENT_TYPES"


ALL_EVENT_TYPES: Container[str] = _AllEventTypes()

EventApplier = Callable[[AsyncConnection, RecordedEvent, Any, Sequence[Table]], Awaitable[None]]


class Projection(Protocol):
    @property
    def NAME(self) -> str: ...

    @property
    def VERSION(self) -> int: ...

    @property
    def HANDLES(self) -> Container[str]: ...

    def tables(self, version: int) -> list[Table]: ...

    def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
              tables: Sequence[Table]) -> Awaitable[None]:
        """Apply one event (an ``async def``, or a ``by_type`` dispatcher)."""
        ...


def by_type(appliers: Mapping[str, EventApplier]) -> EventApplier:
    """An ``apply`` that dispatches on the event's type tag (HANDLES = the keys)."""

    async def apply(conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        await appliers[event.type](conn, event, decoded, tables)

    return apply


async def apply_events(conn: AsyncConnection, projection: Projection, tables: Sequence[Table],
                       items: Sequence[tuple[RecordedEvent, Any]]) -> None:
    """Apply events in order, through ``apply_batch`` when the projection has one."""
    if not items:
        return
    apply_batch = getattr(projection, "apply_batch", None)
    if apply_batch is not None:
        await apply_batch(conn, items, tables)
        return
    for event, decoded in items:
        await projection.apply(conn, event, decoded, tables)


def payload_registry(projection: object, registry: EventRegistry | None) -> EventRegistry | None:
    """The registry to decode payloads with for this projection (None: envelopes only)."""
    return registry if getattr(projection, "DECODE", True) else None


def prepare_event(handles: Container[str], registry: EventRegistry | None,
                  event: RecordedEvent) -> tuple[bool, Any]:
    """Whether a consumer applies ``event``, and its decoded payload.

    (True, payload) for a handled type (payload None without a registry), (False,
    None) for a known type the consumer ignores. Raises UnknownEventType for a type
    (or schema version) this code does not know, and msgspec errors for a payload
    that does not decode: live runners count or park those, rebuilds fail on them.
    """
    if event.type in handles:
        if registry is None:
            return True, None
        return True, registry.decode_recorded(event)
    if registry is not None and not registry.knows(event.type):
        raise UnknownEventType(event.type, event.schema_version)
    return False, None


# ---------------------------------------------------------------- replay guard

_replaying: ContextVar[bool] = ContextVar("replaying", default=False)


def is_replaying() -> bool:
    """True inside a replay or rebuild: side effects must not run (Marten's gate)."""
    return _replaying.get()


@contextmanager
def replaying() -> Iterator[None]:
    token = _replaying.set(True)
    try:
        yield
    finally:
        _replaying.reset(token)


# ---------------------------------------------------------------- tables

_TABLE_VERSION = re.compile(r"_v(?P<version>\d+)$")


def versioned_tables(projection: Projection, version: int, *,
                     schema: str | None = None) -> list[Table]:
    """The projection's tables for build ``version``, optionally in a scratch schema."""
    tables = projection.tables(version)
    for table in tables:
        match = _TABLE_VERSION.search(table.name)
        if (match is None or int(match["version"]) != version
                or not table.name.startswith(projection.NAME + "_")):
            raise ValueError(f"projection {projection.NAME} table {table.name!r} is not "
                             f"named {projection.NAME}[_<part>]_v{version}")
    if schema is None:
        return tables
    scratch = MetaData(schema=schema)
    return [table.to_metadata(scratch, schema=schema) for table in tables]


# Read side and upserts, shared by the projections in projections/.


@functools.lru_cache(maxsize=64)
def query_tables(projection: Projection, version: int,
                 schema: str | None = None) -> tuple[Table, ...]:
    """``versioned_tables`` for queries: the same Table objects on every call.

    SQLAlchemy's compiled-statement cache is keyed by the Table objects, so building
    them per request meant compiling every query per request.
    """
    return tuple(versioned_tables(projection, version, schema=schema))


async def upsert(conn: AsyncConnection, table: Table, *rows: Mapping[str, Any]) -> None:
    """Insert ``rows`` (same keys each); where the primary key exists, replace the other
    columns the rows name."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    statement = pg_insert(table).values(list(rows))
    await conn.execute(statement.on_conflict_do_update(
        index_elements=keys,
        set_={name: statement.excluded[name] for name in rows[0] if name not in keys}))


async def create_tables(conn: AsyncConnection, tables: Sequence[Table]) -> None:
    """Create missing tables (in the caller's transaction; concurrent callers queue)."""
    # CREATE TABLE after a "does it exist" check races with a second runner doing
    # the same: serialise on a transaction lock so the second one sees the table.
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 7))"),
                       {"key": "create_tables/" + ",".join(sorted(t.fullname
                                                                     for t in tables))})

    def create(sync_conn: Any) -> None:
        for table in tables:
            table.create(sync_conn, checkfirst=True)

    await conn.run_sync(create)


async def drop_tables(conn: AsyncConnection, tables: Sequence[Table]) -> None:
    def drop(sync_conn: Any) -> None:
        for table in reversed(tables):
            table.drop(sync_conn, checkfirst=True)

    await conn.run_sync(drop)


# ---------------------------------------------------------------- versions

VersionState = Literal["building", "live", "retired"]


class VersionRecord(msgspec.Struct, frozen=True, kw_only=True):
    projection: str
    version: int
    state: VersionState
    code_version: int | None
    replayed_to: LogPosition | None
    updated_at: datetime


_SELECT_VERSIONS = """
SELECT projection, version, state, code_version, log_tx_id::text::bigint AS log_tx_id,
       log_position, updated_at
FROM projection_versions
"""


def _record(row: Any) -> VersionRecord:
    replayed_to = (LogPosition(row.log_tx_id, row.log_position)
                   if row.log_position is not None else None)
    return VersionRecord(projection=row.projection, version=row.version, state=row.state,
                         code_version=row.code_version, replayed_to=replayed_to,
                         updated_at=row.updated_at)


async def live_version(conn: AsyncConnection, name: str) -> int | None:
    """The version the read path uses (None until a first build went live)."""
    result = await conn.execute(text(
        "SELECT version FROM projection_versions WHERE projection = :name AND state = 'live'"),
        {"name": name})
    return result.scalar_one_or_none()


async def record_replay_position(conn: AsyncConnection, name: str, version: int,
                                 position: LogPosition) -> None:
    """In the replay batch's transaction: how far the log replay of a build got."""
    await conn.execute(text(
        "UPDATE projection_versions SET log_tx_id = CAST(CAST(:tx AS text) AS xid8), "
        "log_position = :position, updated_at = now() "
        "WHERE projection = :name AND version = :version"),
        {"tx": str(position.tx_id), "position": position.position, "name": name,
         "version": version})


class ProjectionVersions:
    """The projection_versions table: building, live and retired builds per projection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def live(self, name: str) -> int | None:
        async with self.engine.connect() as conn:
            return await live_version(conn, name)

    async def all(self, name: str) -> list[VersionRecord]:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(_SELECT_VERSIONS + " WHERE projection = :name ORDER BY version"),
                {"name": name})
            return [_record(row) for row in result]

    async def get(self, name: str, version: int) -> VersionRecord | None:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(_SELECT_VERSIONS + " WHERE projection = :name AND version = :version"),
                {"name": name, "version": version})
            row = result.first()
            return _record(row) if row is not None else None

    async def state(self, name: str, version: int) -> VersionState | None:
        record = await self.get(name, version)
        return record.state if record is not None else None

    async def next_version(self, name: str) -> int:
        async with self.engine.connect() as conn:
            result = await conn.execute(text(
                "SELECT coalesce(max(version), 0) + 1 FROM projection_versions "
                "WHERE projection = :name"), {"name": name})
            return int(result.scalar_one())

    async def needs_rebuild(self, projection: Projection) -> bool:
        """No live build yet, or the live one was built by another table shape."""
        for record in await self.all(projection.NAME):
            if record.state == "live":
                return record.code_version != projection.VERSION
        return True

    async def mark_building(self, name: str, version: int, *, code_version: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO projection_versions (projection, version, state, code_version) "
                "VALUES (:name, :version, 'building', :code_version) "
                "ON CONFLICT (projection, version) DO UPDATE SET state = 'building', "
                "code_version = excluded.code_version, updated_at = now()"),
                {"name": name, "version": version, "code_version": code_version})

    async def mark_retired(self, name: str, version: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "UPDATE projection_versions SET state = 'retired', updated_at = now() "
                "WHERE projection = :name AND version = :version"),
                {"name": name, "version": version})

    async def mark_live(self, name: str, version: int) -> int | None:
        """Atomically make ``version`` live and retire the previous live one (returned).

        Readers asking ``live_version`` see either the old or the new version, never
        none: both updates commit together.
        """
        async with self.engine.begin() as conn:
            return await switch_live(conn, name, version)


async def switch_live(conn: AsyncConnection, name: str, version: int) -> int | None:
    """The switch inside a caller's transaction (see ProjectionVersions.mark_live)."""
    rows = (await conn.execute(text(
        "SELECT version, state FROM projection_versions WHERE projection = :name "
        "ORDER BY version FOR UPDATE"), {"name": name})).all()
    if version not in {row.version for row in rows}:
        raise LookupError(f"projection {name} has no version {version}")
    previous = next((row.version for row in rows if row.state == "live"), None)
    if previous == version:
        return None
    await conn.execute(text(
        "UPDATE projection_versions SET state = 'retired', updated_at = now() "
        "WHERE projection = :name AND state = 'live'"), {"name": name})
    await conn.execute(text(
        "UPDATE projection_versions SET state = 'live', updated_at = now() "
        "WHERE projection = :name AND version = :version"), {"name": name, "version": version})
    return previous
