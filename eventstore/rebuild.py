"""Rebuild a projection without downtime: replay the log, catch up from Kafka, switch.

1. A new build number N+1 is registered as ``building`` and its tables created.
2. The Postgres log is replayed in log order (EventStore.read_all: no Kafka
   retention limit, only final events) in batches, one transaction each, recording
   the reached log position P in projection_versions in the same transaction.
   Strict: an event type this code does not know fails the rebuild.
3. A Kafka ProjectionRunner for N+1 starts from the beginning of the topics with the
   floor P: messages at or below P in log order were replayed and are skipped, their
   offsets stored as it goes; everything after P is applied. Replay and live
   consumption meet exactly at P, because P is a log position (tx_id, position) and
   every envelope carries its own.
4. When N+1's stored offsets reach the topics' end offsets (as of the end of the
   replay) and the live version's offsets, projection_versions switches live to N+1
   and retires N in one transaction. Reads use N until that commit.

Replays run under ``replaying()``: side-effect handlers refuse to run inside one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore.consumers import (
    ConsumerSettings,
    Partition,
    ProjectionRunner,
    ProjectionStats,
    end_offsets,
    projection_consumer,
    stored_offsets,
    topics_for,
    wait_until_caught_up,
)
from eventstore.projection import (
    Projection,
    ProjectionVersions,
    VersionRecord,
    apply_events,
    create_tables,
    drop_tables,
    live_version,
    payload_registry,
    prepare_event,
    record_replay_position,
    replaying,
    versioned_tables,
)
from eventstore.records import LogPosition, RecordedEvent, UnknownEventType
from eventstore.registry import EventRegistry
from eventstore.store import EventStore, log_range

log = logging.getLogger(__name__)


class RebuildProgress(msgspec.Struct, frozen=True, kw_only=True):
    done: int
    total: int
    rate: float
    """Events per second so far."""
    eta_seconds: float | None
    position: LogPosition


ProgressCallback = Callable[[RebuildProgress], None]


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True):
    events: int
    """Events read from the log: those of the types the projection handles (a replay
    ``until`` a time skips the ones recorded after it, so ``applied`` may be fewer)."""
    applied: int
    position: LogPosition
    """How far the replay covered the log (where Kafka catch-up takes over): its bound,
    or without one the last event it read."""
    seconds: float


class RebuildResult(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    replay: ReplayResult
    switched: bool
    retired: int | None
    """The version that was live before the switch."""
    caught_up_applied: int = 0
    """Events the catch-up consumer applied from Kafka (after the replay position)."""
    caught_up_skipped: int = 0
    """Kafka messages at or below the replay position: already replayed, skipped."""


class RebuildInProgress(RuntimeError):
    """Another rebuild of the same projection holds its lock."""


# ---------------------------------------------------------------- replay

async def _count(store: EventStore, after: LogPosition, to_position: LogPosition | None,
                 categories: Sequence[str] | None, types: Sequence[str] | None) -> int:
    where, args = log_range(after, to_position=to_position, categories=categories,
                            types=types)
    async with store.pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM events WHERE {where}", *args))


# Every distinct type in the log, one index probe each (a skip scan of events_type_idx).
_LOG_TYPES = """
WITH RECURSIVE log_types AS (
    (SELECT type FROM events ORDER BY type LIMIT 1)
    UNION ALL
    SELECT (SELECT type FROM events WHERE type > log_types.type ORDER BY type LIMIT 1)
    FROM log_types WHERE log_types.type IS NOT NULL)
SELECT type FROM log_types WHERE type IS NOT NULL
"""


async def _refuse_unknown_types(store: EventStore, registry: EventRegistry,
                                projection: Projection, after: LogPosition,
                                to_position: LogPosition | None,
                                categories: Sequence[str] | None) -> None:
    """Raise UnknownEventType for the first event in the replayed range whose type this
    code does not know. A replay reads only the types its projection handles, so the
    types it skips are checked here, once, instead of row by row."""
    unknown = [t for t in await _fetch_types(store) if not registry.knows(t)
               and t not in projection.HANDLES]
    if not unknown:
        return
    where, args = log_range(after, to_position=to_position, categories=categories,
                            types=unknown)
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT event_id::text, position, stream_id, type, schema_version FROM events "
            f"WHERE {where} ORDER BY tx_id, position LIMIT 1", *args)
    if row is None:
        return
    error = UnknownEventType(row["type"], row["schema_version"])
    error.add_note(f"rebuilding {projection.NAME}: event {row['event_id']} at log position "
                   f"{row['position']} in stream {row['stream_id']}")
    raise error


async def _fetch_types(store: EventStore) -> list[str]:
    async with store.pool.acquire() as conn:
        return [row["type"] for row in await conn.fetch(_LOG_TYPES)]


def _handled_types(projection: Projection) -> list[str] | None:
    """The types a replay reads: the projection's HANDLES when it lists them (None: all,
    e.g. ALL_EVENT_TYPES)."""
    handles = projection.HANDLES
    return sorted(handles) if isinstance(handles, (set, frozenset)) else None


async def position_of(store: EventStore, position: int) -> LogPosition:
    """The log position of the event at global ``position`` (a prefix ends there)."""
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT tx_id::text::bigint, position FROM events WHERE position = $1", position)
    if row is None:
        raise LookupError(f"no event at position {position}")
    return LogPosition(row[0], row[1])


async def position_at(store: EventStore, until: datetime) -> LogPosition | None:
    """The last log position holding an event recorded at or before ``until``.

    recorded_at is the appending transaction's start, so it is not monotonic in log
    order: a replay "as of" a time bounds itself here and also filters on it.
    """
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT tx_id::text::bigint, position FROM events WHERE recorded_at <= $1 "
            "ORDER BY events.tx_id DESC, events.position DESC LIMIT 1", until)
    return LogPosition(row[0], row[1]) if row is not None else None


async def committed_head(store: EventStore,
                         categories: Sequence[str] | None = None) -> LogPosition | None:
    """The last committed log position, final or not yet (no horizon filter)."""
    query = "SELECT tx_id::text::bigint, position FROM events"
    args: list[Any] = []
    if categories is not None:
        query += " WHERE category = ANY($1)"
        args.append(list(categories))
    query += " ORDER BY tx_id DESC, position DESC LIMIT 1"
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(query, *args)
    return LogPosition(row[0], row[1]) if row is not None else None


async def _is_final(store: EventStore, position: LogPosition) -> bool:
    """Whether no transaction that could still write at or below ``position`` is open."""
    async with store.pool.acquire() as conn:
        horizon = await conn.fetchval(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return int(horizon) > position.tx_id


def _strict(projection: Projection, registry: EventRegistry | None,
            events: Sequence[RecordedEvent], until: datetime | None
            ) -> list[tuple[RecordedEvent, Any]]:
    items: list[tuple[RecordedEvent, Any]] = []
    for event in events:
        if until is not None and event.recorded_at > until:
            continue
        try:
            applies, decoded = prepare_event(projection.HANDLES, registry, event)
        except (UnknownEventType, msgspec.MsgspecError, ValueError) as error:
            error.add_note(f"rebuilding {projection.NAME}: event {event.event_id} at log "
                           f"position {event.position} in stream {event.stream_id}")
            raise
        if applies:
            items.append((event, decoded))
    return items


REPLAY_GC_THRESHOLD = 100_000
"""Allocations between young-generation collections while a replay runs (Python's
default: 700). A replay allocates about ten tracked objects per event (the row, its
envelope, the payload's structs) that die with their batch: at 700 the collector ran
every ~70 events and copied each batch's live objects up the generations. Measured on
the first 3M events of the 10M-event benchmark log: 82.5 s -> 60.4 s, the same as with
the collector off, while reference cycles are still collected."""


class _CollectorThreshold:
    """The young-generation threshold raised while any replay runs. Thresholds are
    global to the process: concurrent replays count themselves, and the last one out
    restores what was there before the first came in."""

    def __init__(self) -> None:
        self.replays = 0
        self.saved = gc.get_threshold()

    @contextmanager
    def raised(self) -> Iterator[None]:
        if self.replays == 0:
            self.saved = gc.get_threshold()
            first, *older = self.saved
            gc.set_threshold(max(first, REPLAY_GC_THRESHOLD), *older)
        self.replays += 1
        try:
            yield
        finally:
            self.replays -= 1
            if self.replays == 0:
                gc.set_threshold(*self.saved)


_collector_threshold = _CollectorThreshold()


async def replay(projection: Projection, *, store: EventStore, engine: AsyncEngine,
                 version: int, tables: Sequence[Any] | None = None,
                 registry: EventRegistry | None = None,
                 categories: Sequence[str] | None = None,
                 after: LogPosition | None = None, to_position: LogPosition | None = None,
                 until: datetime | None = None, batch_size: int = 5000,
                 progress: ProgressCallback | None = None,
                 record_position: bool = True, stop_near_head: bool = False) -> ReplayResult:
    """Apply the log (after ``after``, up to ``to_position``/``until``) to existing tables.

    Without a bound, replays what was committed when it started. The log reader only
    returns final rows (below the oldest open transaction), so a bounded replay waits
    for the horizon to pass its bound instead of stopping short. ``stop_near_head``
    instead ends at the first short batch (a rebuild: the rest comes from Kafka).
    One transaction per batch; the next batch is read while one is applied.
    ``record_position`` stores the reached position in projection_versions with each
    batch.

    Only the types the projection handles are read (the others are checked once to be
    known, see ``_refuse_unknown_types``), so ``events`` counts those. A projection with a
    ``replayer(tables)`` replays through it: its ``apply_batch(conn, items)`` per batch and
    its ``finish(engine)`` once at the end, in transactions of its own (statistics keeps
    its per-deployment state in memory and writes its rollups there). A replay interrupted
    before that leaves tables only fit to be dropped, as a failed rebuild's are.
    """
    tables = list(tables) if tables is not None else versioned_tables(projection, version)
    registry = payload_registry(projection, registry)
    start = after or LogPosition.start()
    if until is not None:
        bound = await position_at(store, until)
        if bound is None:
            return ReplayResult(events=0, applied=0, position=start, seconds=0.0)
        to_position = bound if to_position is None else min(bound, to_position)
    if to_position is None and not stop_near_head:
        to_position = await committed_head(store, categories)
        if to_position is None:
            return ReplayResult(events=0, applied=0, position=start, seconds=0.0)
    types = _handled_types(projection)
    if registry is not None and types is not None:
        await _refuse_unknown_types(store, registry, projection, start, to_position,
                                    categories)
    total = await _count(store, start, to_position, categories, types)
    replayer = projection.replayer(tables) if hasattr(projection, "replayer") else None
    began = time.monotonic()
    done = applied = 0
    position = start

    def read(after: LogPosition) -> asyncio.Task[list[RecordedEvent]]:
        return asyncio.ensure_future(store.read_all(after, limit=batch_size,
                                                    categories=categories,
                                                    to_position=to_position, types=types))

    with replaying(), _collector_threshold.raised():
        pending = read(position)
        waited_since: float | None = None
        # Whether the bound was final before the last read began: only then does an empty
        # read mean the end. A bound that turns final between a read and the check is
        # read once more (finality never goes back, so one flag is enough).
        bound_final = False
        try:
            while True:
                batch = await pending
                if not batch:
                    if to_position is None:
                        break
                    if position >= to_position or bound_final:
                        # Every final event up to the bound was read, those of the types
                        # skipped too: the replay covered the log up to its bound.
                        position = max(position, to_position)
                        break
                    if await _is_final(store, to_position):
                        bound_final = True
                        pending = read(position)
                        continue
                    # Rows up to the bound exist but an older transaction is still
                    # open: they are not final yet. Wait for it, never skip them.
                    waited_since = waited_since or time.monotonic()
                    if time.monotonic() - waited_since > 10:
                        log.warning("replay of %s waits for an open transaction below %s",
                                    projection.NAME, to_position)
                        waited_since = time.monotonic()
                    await asyncio.sleep(0.05)
                    pending = read(position)
                    continue
                waited_since = None
                position = batch[-1].log_position
                last = stop_near_head and len(batch) < batch_size
                if not last:
                    pending = read(position)
                    # Let the read send its query now: the batch is decoded and folded
                    # (tens of ms on this core) while Postgres runs it on another.
                    # Without this it was sent at the batch's first database call.
                    await asyncio.sleep(0)
                items = _strict(projection, registry, batch, until)
                async with engine.begin() as conn:
                    if replayer is not None:
                        await replayer.apply_batch(conn, items)
                    else:
                        await apply_events(conn, projection, tables, items)
                    if record_position:
                        await record_replay_position(conn, projection.NAME, version, position)
                done += len(batch)
                applied += len(items)
                if progress is not None:
                    elapsed = max(time.monotonic() - began, 1e-9)
                    rate = done / elapsed
                    # The count made at the start includes rows not final yet, which a
                    # replay stopping near the head leaves to Kafka: its last batch is all.
                    total = done if last else max(total, done)
                    progress(RebuildProgress(done=done, total=total, rate=rate,
                                             eta_seconds=(total - done) / rate if rate else None,
                                             position=position))
                if last:
                    break
            if replayer is not None and done:
                await replayer.finish(engine)
        finally:
            if not pending.done():
                pending.cancel()
    seconds = time.monotonic() - began
    log.info("replayed %d events of the log into %s v%d in %.1fs (%.0f/s)", done,
             projection.NAME, version, seconds, done / seconds if seconds else 0.0)
    return ReplayResult(events=done, applied=applied, position=position, seconds=seconds)


# ---------------------------------------------------------------- blue/green rebuild

async def _retire_abandoned_builds(engine: AsyncEngine, projection: Projection) -> None:
    versions = ProjectionVersions(engine)
    for record in await versions.all(projection.NAME):
        if record.state == "building":
            log.warning("retiring abandoned build %s v%d", projection.NAME, record.version)
            await versions.mark_retired(projection.NAME, record.version)
            async with engine.begin() as conn:
                await drop_tables(conn, versioned_tables(projection, record.version))


async def _caught_up_targets(engine: AsyncEngine, bootstrap_servers: str, topics: Sequence[str],
                             projection: Projection, live: int | None) -> dict[Partition, int]:
    targets = await end_offsets(bootstrap_servers, topics)
    if live is not None:
        async with engine.connect() as conn:
            live_offsets = await stored_offsets(conn, projection_consumer(projection.NAME, live),
                                                targets.keys())
        for key, offset in live_offsets.items():
            targets[key] = max(targets.get(key, 0), offset)
    return targets


async def rebuild(projection: Projection, *, store: EventStore, engine: AsyncEngine,
                  bootstrap_servers: str, topic_prefix: str, categories: Sequence[str],
                  registry: EventRegistry | None = None,
                  progress: ProgressCallback | None = None, batch_size: int = 5000,
                  settings: ConsumerSettings | None = None,
                  catch_up_timeout: float = 3600.0, switch: bool = True) -> RebuildResult:
    """Build the next version of a projection and (by default) make it live.

    ``categories`` are the log categories the projection reads; live consumption
    reads their topics. Runs one at a time per projection (advisory lock).
    """
    topics = topics_for(topic_prefix, categories)
    versions = ProjectionVersions(engine)
    async with engine.connect() as lock_conn:
        lock_conn = await lock_conn.execution_options(isolation_level="AUTOCOMMIT")
        key = f"rebuild/{projection.NAME}"
        locked = (await lock_conn.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended(:key, 7))"), {"key": key})
        ).scalar_one()
        if not locked:
            raise RebuildInProgress(f"a rebuild of {projection.NAME} is already running")
        try:
            await _retire_abandoned_builds(engine, projection)
            version = await versions.next_version(projection.NAME)
            await versions.mark_building(projection.NAME, version,
                                         code_version=projection.VERSION)
            tables = versioned_tables(projection, version)
            async with engine.begin() as conn:
                await create_tables(conn, tables)
            log.info("rebuilding %s into v%d", projection.NAME, version)
            result = await replay(projection, store=store, engine=engine, version=version,
                                  tables=tables, registry=registry, categories=categories,
                                  batch_size=batch_size, progress=progress,
                                  stop_near_head=True)
            retired, caught_up = await _catch_up_and_switch(
                projection, engine=engine, version=version, replayed_to=result.position,
                bootstrap_servers=bootstrap_servers, topics=topics, registry=registry,
                settings=settings, within=catch_up_timeout, switch=switch)
        finally:
            await lock_conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:key, 7))"),
                                    {"key": key})
    return RebuildResult(version=version, replay=result, switched=switch, retired=retired,
                         caught_up_applied=caught_up.applied,
                         caught_up_skipped=caught_up.duplicates)


async def _catch_up_and_switch(projection: Projection, *, engine: AsyncEngine, version: int,
                               replayed_to: LogPosition, bootstrap_servers: str,
                               topics: Sequence[str], registry: EventRegistry | None,
                               settings: ConsumerSettings | None, within: float,
                               switch: bool) -> tuple[int | None, ProjectionStats]:
    runner = ProjectionRunner(projection, engine=engine, bootstrap_servers=bootstrap_servers,
                              topics=topics, version=version, registry=registry,
                              settings=settings, start_after=replayed_to)
    stop = asyncio.Event()
    running = asyncio.ensure_future(runner.run(stop))
    consumer = projection_consumer(projection.NAME, version)
    versions = ProjectionVersions(engine)

    async def until_caught_up() -> None:
        async with engine.connect() as conn:
            live = await live_version(conn, projection.NAME)
        # Everything Kafka held when the replay ended, and at least what the live
        # version had applied; then, once more, the live version's latest offsets so
        # the switch does not make reads go back in time.
        targets = await _caught_up_targets(engine, bootstrap_servers, topics, projection, live)
        await wait_until_caught_up(engine, consumer, targets, within=within)
        if live is not None:
            async with engine.connect() as conn:
                latest = await stored_offsets(conn, projection_consumer(projection.NAME, live))
            await wait_until_caught_up(engine, consumer, latest, within=within)

    waiting = asyncio.ensure_future(until_caught_up())
    try:
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            running.result()  # the runner ended first: raise what stopped it
            raise RuntimeError(f"catch-up consumer of {projection.NAME} v{version} stopped")
        waiting.result()
        retired = await versions.mark_live(projection.NAME, version) if switch else None
        log.info("%s v%d caught up%s", projection.NAME, version,
                 f"; live now (v{retired} retired)" if switch else "")
        return retired, runner.stats
    finally:
        waiting.cancel()
        stop.set()
        await asyncio.gather(running, return_exceptions=True)


# ---------------------------------------------------------------- audits

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def rebuild_to(projection: Projection, *, store: EventStore, engine: AsyncEngine,
                     schema: str, position: LogPosition | int | None = None,
                     until: datetime | None = None, registry: EventRegistry | None = None,
                     categories: Sequence[str] | None = None,
                     progress: ProgressCallback | None = None,
                     batch_size: int = 5000) -> ReplayResult:
    """Replay a projection into a scratch schema as of a log position and/or a time.

    For audits ("what did the dashboard show that day"): the tables are
    ``<schema>.<name>_v<VERSION>``, recreated empty; the live ones are not touched.
    An int ``position`` means the log prefix ending with the event at that position.
    """
    if not _SCHEMA_NAME.match(schema) or schema in {"public", "pg_catalog"}:
        raise ValueError(f"{schema!r} is not a usable scratch schema name")
    to_position = await position_of(store, position) if isinstance(position, int) else position
    tables = versioned_tables(projection, projection.VERSION, schema=schema)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await drop_tables(conn, tables)
        await create_tables(conn, tables)
    return await replay(projection, store=store, engine=engine, version=projection.VERSION,
                        tables=tables, registry=registry, categories=categories,
                        to_position=to_position, until=until, batch_size=batch_size,
                        progress=progress, record_position=False)


async def drop_version(engine: AsyncEngine, projection: Projection, version: int) -> None:
    """Drop a retired (or abandoned) version's tables; never the live one."""
    async with engine.begin() as conn:
        if await live_version(conn, projection.NAME) == version:
            raise ValueError(f"{projection.NAME} v{version} is live")
        await drop_tables(conn, versioned_tables(projection, version))


RETIRED_GRACE = timedelta(minutes=1)
"""How long a retired build's tables outlive its retirement before ``drop_retired`` may
drop them: readers move to the new build within a second (``LiveVersion``'s re-read) and
the retired build's runner stops within ``version_check_interval`` (2 s)."""


class Build(msgspec.Struct, frozen=True, kw_only=True):
    """A build of a projection, as an operator lists them."""

    record: VersionRecord
    has_tables: bool
    """False once its tables were dropped (a retired build stays listed as retired)."""


async def builds(engine: AsyncEngine, projection: Projection) -> list[Build]:
    """Every build of ``projection`` in version order, and whether its tables exist."""
    records = await ProjectionVersions(engine).all(projection.NAME)
    async with engine.connect() as conn:
        return [Build(record=record, has_tables=await _has_tables(
                    conn, versioned_tables(projection, record.version)))
                for record in records]


async def _has_tables(conn: AsyncConnection, tables: Sequence[Any]) -> bool:
    return bool((await conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"),
                                    {"name": tables[0].name})).scalar_one())


async def drop_retired(engine: AsyncEngine, projection: Projection, *,
                       grace: timedelta = RETIRED_GRACE) -> list[int]:
    """Drop the tables of the builds retired at least ``grace`` ago (by the database's
    clock); the versions whose tables it dropped. Live and building builds are never
    touched, and the dropped ones stay in projection_versions as retired: a runner of one
    still up keeps being told to stop."""
    async with engine.connect() as conn:
        now = (await conn.execute(text("SELECT now()"))).scalar_one()
    dropped = []
    for build in await builds(engine, projection):
        record = build.record
        if record.state == "retired" and build.has_tables and now - record.updated_at >= grace:
            await drop_version(engine, projection, record.version)
            log.info("dropped the tables of %s v%d (retired %s)", projection.NAME,
                     record.version, record.updated_at.isoformat())
            dropped.append(record.version)
    return dropped
