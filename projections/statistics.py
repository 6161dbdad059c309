"""Usage statistics: daily bucket tables that answer the admin dashboard without scanning
deployments (legacy section 8.2 downloaded every deployment and counted in Python).

Fed by the ``deployment`` category. Every statistic is defined on the deployment's state
*before* and *after* each event (the same state ``domain.deployments.evolve`` folds), so a
from-scratch count over the log gives the same numbers (tests/statistics checks it):

- ``created``: deployments per creation day and their current dimensions (owner, group,
  template type, provider and region of the latest attempt, status) with the resources
  they currently request; a change of status or site moves the deployment between rows.
- ``activity``: a deployment is *active* from its first ``CREATE_COMPLETE`` until
  ``DELETE_COMPLETE``. Each change of (active, dimensions, requested resources) writes a
  -old/+new delta on the day it happened, with the delta times the instant (µs since the
  epoch, the "moment"). Active on day D = sum of deltas up to D; resource-µs over [F, T) =
  sum over deltas before T of d * (T - max(t, F)), i.e. per row ``d*(T-F)`` before F and
  ``d*T - moment`` inside: exact, and a few range scans.
- ``outcomes``: create operations that ended, per day: CREATE_IN_PROGRESS -> CREATE_COMPLETE
  (with the time since the operation started: request or retry) or -> CREATE_FAILED.
- ``failures``: every transition into a ``*_FAILED`` status, by status and reason.

Every bucket table holds rows of several levels (column ``level``): per owner and day (the
owner is a key dimension: roughly one row per deployment and day), and rollups without
the owner per day and per month (``day`` = the month's first day): one keeping each
subset of at most two of the other dimensions, and one keeping them all (group, template
type, site, and status for ``created``; ``stored_masks``). Rollups are sums of the
owner-day rows, written with them by the live runner and summed once at the end of a
replay (``StatisticsReplay``). A query that does not scope, filter or group by owner reads
the smallest rollup holding the dimensions it filters or groups on: whole months from the
monthly rows, day rows only for the partial months at the edges of its range and for
months in which it needs a running total on its own (``active`` per day or week). So
``active`` at day D = monthly deltas before month(D) + day deltas from the month's start
to D, and resource-hours use the monthly rows of months wholly before or wholly inside
the window.

A small per-deployment table (``statistics_deployments``) holds what the transitions
need; ``stream_version`` makes a repeated event a no-op, so every bucket change is applied
exactly once. Rows are keyed by the owner's issuer first: an admin of one issuer reads
only that issuer's rows. Empty strings stand for "none" in key columns (primary keys).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import msgspec
from msgspec.structs import astuple, replace
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    and_,
    case,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex

from domain.deployments import (
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentDeletionRequested,
    DeploymentFailed,
    DeploymentRequested,
    DeploymentRetryRequested,
    DeploymentStatus,
    DeploymentStatusReset,
    DeploymentUpdateRequested,
    event_tag,
)
from eventstore.projection import query_tables
from eventstore.records import RecordedEvent

NAME = "statistics"
VERSION = 3

S = DeploymentStatus
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

_HANDLED = (DeploymentRequested, DeploymentUpdateRequested, DeploymentDeletionRequested,
            DeploymentStatusReset, DeploymentRetryRequested, DeploymentAttemptStarted,
            DeploymentCompleted, DeploymentFailed, DeploymentDeleted, DeploymentDeletionFailed)

DIMENSIONS = ("owner_issuer", "owner_subject", "user_group", "template_type", "provider_id",
              "provider_name", "region")
"""Key columns every bucket table shares (then ``day``, then the table's own keys)."""

FAILED = frozenset({S.CREATE_FAILED, S.UPDATE_FAILED, S.DELETE_FAILED})


def micros(moment: datetime) -> int:
    """Microseconds since the epoch: exact instants for the resource-time moments."""
    return (moment - _EPOCH) // _US


# ---------------------------------------------------------------- per-deployment facts


class Facts(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the statistics know of one deployment after some version of its stream.

    A frozen msgspec Struct (fields in the order of the facts table's columns): a rebuild
    makes one copy per event, and ``msgspec.structs.replace`` is C where
    ``dataclasses.replace`` is Python. ``gc=False``: only scalars, never in a cycle, and a
    replay holds hundreds of thousands that the collector need not walk.
    """

    id: str
    stream_version: int
    owner_issuer: str
    owner_subject: str
    user_group: str
    template_type: str
    provider_id: str
    provider_name: str
    region: str
    created_day: date
    status: str
    vcpus: int
    ram_mb: int
    gpus: int
    ever_completed: bool
    operation_started_at: datetime

    @property
    def dimensions(self) -> tuple[str, ...]:
        return (self.owner_issuer, self.owner_subject, self.user_group, self.template_type,
                self.provider_id, self.provider_name, self.region)

    @property
    def active(self) -> bool:
        return self.ever_completed and self.status != _DELETE_COMPLETE


_DELETE_COMPLETE = S.DELETE_COMPLETE.value


def _requested(facts: Facts | None, event: Any, version: int) -> Facts:
    resources = event.requested_resources
    return Facts(
        id=event.deployment_id, stream_version=version, owner_issuer=event.owner.issuer,
        owner_subject=event.owner.subject, user_group=event.user_group or "",
        template_type=event.template_identity.type, provider_id="", provider_name="",
        region="", created_day=event.occurred_at.astimezone(UTC).date(),
        status=S.CREATE_IN_PROGRESS.value, vcpus=resources.vcpus, ram_mb=resources.ram_mb,
        gpus=resources.gpus, ever_completed=False, operation_started_at=event.occurred_at)


def _update_requested(facts: Facts, event: Any, version: int) -> Facts:
    resources = event.requested_resources
    return replace(facts, stream_version=version, status=S.UPDATE_IN_PROGRESS.value,
                   template_type=event.template_identity.type, vcpus=resources.vcpus,
                   ram_mb=resources.ram_mb, gpus=resources.gpus)


def _to_status(status: str) -> Any:
    def evolve(facts: Facts, event: Any, version: int) -> Facts:
        return replace(facts, stream_version=version, status=status)
    return evolve


def _status_reset(facts: Facts, event: Any, version: int) -> Facts:
    return replace(facts, stream_version=version, status=event.to_status.value)


def _retry_requested(facts: Facts, event: Any, version: int) -> Facts:
    return replace(facts, stream_version=version, status=S.CREATE_IN_PROGRESS.value,
                   operation_started_at=event.occurred_at)


def _attempt_started(facts: Facts, event: Any, version: int) -> Facts:
    site = event.site
    return replace(facts, stream_version=version, provider_id=site.provider_id,
                   provider_name=site.provider_name, region=site.region or "")


def _completed(facts: Facts, event: Any, version: int) -> Facts:
    ever_completed = facts.ever_completed or event.status == S.CREATE_COMPLETE
    site = event.site
    if site is None:
        return replace(facts, stream_version=version, status=event.status.value,
                       ever_completed=ever_completed)
    return replace(facts, stream_version=version, status=event.status.value,
                   ever_completed=ever_completed, provider_id=site.provider_id,
                   provider_name=site.provider_name, region=site.region or "")


def _failed(facts: Facts, event: Any, version: int) -> Facts:
    return replace(facts, stream_version=version, status=event.status.value)


# One copy per event, chosen by the event's exact type: a dict lookup instead of a chain
# of isinstance checks (match/case on classes goes through ABC instance checks).
_EVOLVE: dict[type, Any] = {
    DeploymentUpdateRequested: _update_requested,
    DeploymentDeletionRequested: _to_status(S.DELETE_IN_PROGRESS.value),
    DeploymentStatusReset: _status_reset,
    DeploymentRetryRequested: _retry_requested,
    DeploymentAttemptStarted: _attempt_started,
    DeploymentCompleted: _completed,
    DeploymentFailed: _failed,
    DeploymentDeleted: _to_status(S.DELETE_COMPLETE.value),
    DeploymentDeletionFailed: _to_status(S.DELETE_FAILED.value),
}
assert set(_EVOLVE) | {DeploymentRequested} == set(_HANDLED)


def evolve_facts(facts: Facts | None, event: Any, version: int) -> Facts | None:
    """The facts after ``event`` (a decoded deployment event), mirroring the domain's evolve
    for the fields statistics use. None: no deployment yet (an event before its request)."""
    kind = type(event)
    if kind is DeploymentRequested:
        return _requested(facts, event, version)
    if facts is None:
        return None
    evolve = _EVOLVE.get(kind)
    if evolve is None:
        return replace(facts, stream_version=version)
    return evolve(facts, event, version)  # type: ignore[no-any-return]


def status_reason(event: Any) -> str:
    """The reason a failure carries (a reset to ``*_FAILED`` carries none)."""
    return getattr(event, "reason", None) or ""


@dataclass
class Changes:
    """Bucket deltas of a batch, summed per key before they are written."""

    created: dict[tuple[Any, ...], list[int]]
    activity: dict[tuple[Any, ...], list[int]]
    outcomes: dict[tuple[Any, ...], list[int]]
    failures: dict[tuple[Any, ...], int]
    created_from_facts: bool = False
    """Leave ``created`` empty: a bulk load groups its rows from the final facts instead
    (a deployment counts on its creation day with its dimensions and status of now, so
    those rows are a function of the facts; each status change made two deltas)."""

    @classmethod
    def empty(cls, *, created_from_facts: bool = False) -> Changes:
        return cls({}, {}, {}, {}, created_from_facts)

    def rows(self) -> int:
        return (len(self.created) + len(self.activity) + len(self.outcomes)
                + len(self.failures))

    def by_table(self) -> list[dict[tuple[Any, ...], list[Any]]]:
        """The sums of the bucket tables, in their order (failures' counts as lists)."""
        return [self.created, self.activity, self.outcomes,
                {key: [count] for key, count in self.failures.items()}]


def _add(target: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...],
         values: Sequence[int]) -> None:
    known = target.get(key)
    if known is None:
        target[key] = list(values)
    else:
        for index, value in enumerate(values):
            known[index] += value


def _add_outcome(target: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...], *,
                 succeeded: bool, took: int) -> None:
    """[succeeded, failed, total µs, min µs, max µs] (min/max None until a success)."""
    known = target.setdefault(key, [0, 0, 0, None, None])  # type: ignore[list-item]
    if succeeded:
        known[0] += 1
        known[2] += took
        known[3] = took if known[3] is None else min(known[3], took)
        known[4] = took if known[4] is None else max(known[4], took)
    else:
        known[1] += 1


def record_changes(changes: Changes, before: Facts | None, after: Facts | None,
                   occurred_at: datetime, reason: str) -> None:
    """What one event changes in the buckets, given the facts before and after it."""
    if after is None:
        return
    dims = after.dimensions
    amounts = (1, after.vcpus, after.ram_mb, after.gpus)
    if before is None:  # a new deployment: created, not active yet, no transition
        if not changes.created_from_facts:
            _add(changes.created, (*dims, after.created_day, after.status), amounts)
        return
    old_dims = before.dimensions
    old_amounts = (1, before.vcpus, before.ram_mb, before.gpus)
    moved = old_dims != dims or old_amounts != amounts
    if not changes.created_from_facts and (
            moved or before.status != after.status or before.created_day != after.created_day):
        _add(changes.created, (*old_dims, before.created_day, before.status),
             [-v for v in old_amounts])
        _add(changes.created, (*dims, after.created_day, after.status), amounts)
    was_active, active = before.active, after.active
    if (was_active or active) and (was_active != active or moved):
        day = occurred_at.astimezone(UTC).date()
        t = micros(occurred_at)
        # active, vcpus, ram, gpus, then the moments d*t of the three resources
        if was_active:
            _add(changes.activity, (*old_dims, day),
                 [-v for v in old_amounts] + [-v * t for v in old_amounts[1:]])
        if active:
            _add(changes.activity, (*dims, day), [*amounts, *(v * t for v in amounts[1:])])
    if before.status != after.status:
        day = occurred_at.astimezone(UTC).date()
        if before.status == S.CREATE_IN_PROGRESS and after.status == S.CREATE_COMPLETE:
            took = micros(occurred_at) - micros(after.operation_started_at)
            _add_outcome(changes.outcomes, (*dims, day), succeeded=True, took=took)
        elif before.status == S.CREATE_IN_PROGRESS and after.status == S.CREATE_FAILED:
            _add_outcome(changes.outcomes, (*dims, day), succeeded=False, took=0)
        if after.status in FAILED:
            key = (*dims, day, after.status, reason)
            changes.failures[key] = changes.failures.get(key, 0) + 1


# ---------------------------------------------------------------- levels

OWNER_DAY = 0
"""Level of the rows per owner and day: every dimension is a key, the owner too."""

CUBE: dict[str, tuple[int, tuple[str, ...]]] = {
    "group": (1, ("user_group",)),
    "templateType": (2, ("template_type",)),
    "site": (4, ("provider_id", "provider_name", "region")),
    "status": (8, ("status",)),
}
"""The dimensions a rollup can keep or sum away, with their bit in the rollup's mask.
A bucket table lists the ones it has (``table.info["cube"]``); failures keep status and
reason in every row (each of its queries groups by both)."""

_MONTHS = 16
"""Rollup rows hold every owner of the issuer (``owner_subject`` is ''), per day or per
month (``day`` is the month's first day), keeping the dimensions of a mask and '' in the
others: level ``1 + mask`` per day, ``1 + 16 + mask`` per month. A query reads the
rollup with the fewest dimensions that still holds its filters and groups: an admin's
90 days per week and group read 20 rows a day instead of the ~1,700 of every site,
template type, group and status. Rollups are sums of the owner-day rows, written by
Postgres in the statement that writes those (``_upsert_levels``), or at the end of a
replay (``StatisticsReplay.finish``)."""


def day_level(mask: int) -> int:
    return 1 + mask


def month_level(mask: int) -> int:
    return 1 + _MONTHS + mask


def full_mask(table: Table) -> int:
    """The mask keeping every rollup dimension of ``table``."""
    return sum(CUBE[name][0] for name in table.info["cube"])


def stored_masks(table: Table) -> list[int]:
    """The rollups a table keeps: every one of at most two dimensions, and the one of all.
    Three of four (``created`` only) would cost more rows than the full one saves
    (at a million deployments: ~2,600 rows a day against its ~1,700); a query needing
    them reads the full one, whose rows it narrows by its filters."""
    full = full_mask(table)
    return [mask for mask in range(full + 1)
            if mask & full == mask and (mask.bit_count() <= 2 or mask == full)]


# ---------------------------------------------------------------- tables


_KEY_TEXT = Text(collation="C")
"""Key columns compare bytes: every write probes a primary key of up to eleven text
columns, and a locale collation (even C.UTF-8) compares them with strcoll."""


def _bucket_table(name: str, metadata: MetaData, keys: Sequence[Column[Any]],
                  values: Sequence[Column[Any]], cube: Sequence[str]) -> Table:
    """Columns level, dimensions, day, ``keys``, ``values`` (the order rows are written in);
    primary key issuer, level, day first: every rollup query is one range of it."""
    table = Table(
        name, metadata, Column("level", SmallInteger, nullable=False),
        *(Column(d, _KEY_TEXT, nullable=False) for d in DIMENSIONS),
        Column("day", Date, nullable=False), *keys, *values,
        PrimaryKeyConstraint("owner_issuer", "level", "day",
                             *(d for d in DIMENSIONS if d != "owner_issuer"),
                             *(k.name for k in keys)),
        info={"cube": tuple(cube)})
    # One owner's rows (a user, or an admin's owner filter); an issuer's owner-day rows
    # are the primary key's (issuer, level 0, day) range.
    Index(f"{name}_owner_day", table.c.owner_issuer, table.c.owner_subject, table.c.day,
          postgresql_where=table.c.level == OWNER_DAY)
    return table


class StatisticsProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = frozenset(event_tag(t) for t in _HANDLED)

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()
        deployments = Table(
            f"{NAME}_deployments_v{version}", metadata,
            Column("id", Text, primary_key=True),
            Column("stream_version", Integer, nullable=False),
            *(Column(name, Text, nullable=False) for name in DIMENSIONS),
            Column("created_day", Date, nullable=False),
            Column("status", Text, nullable=False),
            Column("vcpus", BigInteger, nullable=False),
            Column("ram_mb", BigInteger, nullable=False),
            Column("gpus", BigInteger, nullable=False),
            Column("ever_completed", Boolean, nullable=False),
            Column("operation_started_at", DateTime(timezone=True), nullable=False),
        )
        created = _bucket_table(
            f"{NAME}_created_v{version}", metadata, [Column("status", _KEY_TEXT, nullable=False)],
            [Column(n, BigInteger, nullable=False)
             for n in ("deployments", "vcpus", "ram_mb", "gpus")],
            cube=("group", "templateType", "site", "status"))
        activity = _bucket_table(
            f"{NAME}_activity_v{version}", metadata, [],
            [*(Column(n, BigInteger, nullable=False)
               for n in ("active", "vcpus", "ram_mb", "gpus")),
             *(Column(n, Numeric, nullable=False)
               for n in ("vcpus_moment", "ram_mb_moment", "gpus_moment"))],
            cube=("group", "templateType", "site"))
        outcomes = _bucket_table(
            f"{NAME}_outcomes_v{version}", metadata, [],
            [Column("succeeded", BigInteger, nullable=False),
             Column("failed", BigInteger, nullable=False),
             Column("total_us", Numeric, nullable=False),
             Column("min_us", BigInteger), Column("max_us", BigInteger)],
            cube=("group", "templateType", "site"))
        failures = _bucket_table(
            f"{NAME}_failures_v{version}", metadata,
            [Column("status", _KEY_TEXT, nullable=False),
             Column("reason", _KEY_TEXT, nullable=False)],
            [Column("failures", BigInteger, nullable=False)],
            cube=("group", "templateType", "site"))
        return [deployments, created, activity, outcomes, failures]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        await self.apply_batch(conn, [(event, decoded)], tables)

    async def apply_batch(self, conn: AsyncConnection,
                          items: Sequence[tuple[RecordedEvent, Any]],
                          tables: Sequence[Table]) -> None:
        deployments = tables[0]
        ids = sorted({decoded.deployment_id for _, decoded in items})
        if not ids:
            return
        # One round trip per table with arrays (unnest): SQLAlchemy's executemany spent
        # more time building parameters than Postgres spent applying them.
        driver = await _driver(conn)
        rows = await driver.fetch(
            f"SELECT * FROM {_name(deployments)} WHERE id = ANY($1::text[]) FOR UPDATE", ids)
        known: dict[str, Facts] = {row["id"]: Facts(**row) for row in rows}
        changes = Changes.empty()
        touched = fold_batch(known, items, changes)
        if touched:
            await _write_facts(driver, deployments, [known[i] for i in sorted(touched)])
        await _write_changes(driver, tables, changes, rollups=True)

    def replayer(self, tables: Sequence[Table]) -> StatisticsReplay:
        return StatisticsReplay(tables)


class StatisticsReplay:
    """A replay's writer: the facts of recent deployments stay in memory (the live path
    reads and writes them per batch, which was most of a rebuild's time), bucket deltas
    are summed across batches and written as owner-day rows when many are pending, and
    ``finish`` writes the facts and sums every rollup once.

    Into new (empty) tables, the usual bulk load: the bucket tables lose their indexes
    for the replay, pending deltas are COPYed into an unlogged table without any, and
    ``finish`` sums them into owner-day rows (``created``'s are grouped from the final
    facts, no deltas kept), adds the rollups and builds the indexes once (an index
    built over sorted rows costs a fraction of a million inserts into it). Into tables
    that already hold rows (a replay continuing a build), deltas are upserted as the
    live path does.

    Memory is bounded: past ``facts_in_memory`` deployments (a fact takes about 430 bytes:
    a million, some 430 MB), the facts not updated for longest are written and forgotten
    (read back if their stream goes on). Nothing else writes a build's tables while it
    replays, so the facts held here are current.
    """

    def __init__(self, tables: Sequence[Table], *, facts_in_memory: int = 1_000_000,
                 pending_rows: int = 200_000) -> None:
        self.tables = tables
        self.facts_in_memory = facts_in_memory
        self.pending_rows = pending_rows
        # Insertion order = least recently updated first (updated facts move to the end).
        self.facts: dict[str, Facts] = {}
        self.unwritten: set[str] = set()
        self.fresh: bool | None = None
        """Whether the replay began on empty tables (known at its first batch)."""
        self.all_in_memory = False
        """True while every fact of the build is in ``facts`` (fresh tables, nothing
        forgotten yet): a deployment not in memory has no facts, none is stored."""
        self.changes = Changes.empty()

    async def apply_batch(self, conn: AsyncConnection,
                          items: Sequence[tuple[RecordedEvent, Any]]) -> None:
        driver = await _driver(conn)
        deployments = self.tables[0]
        if self.fresh is None:
            self.fresh = not await driver.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {_name(deployments)})")
            self.all_in_memory = self.fresh
            if self.fresh:
                created, *summed = self.tables[1:]
                await _begin_bulk_load(driver, created, deltas=False)
                for table in summed:
                    await _begin_bulk_load(driver, table, deltas=True)
                self.changes = self._no_changes()
        if not self.all_in_memory:
            missing = sorted({d.deployment_id for _, d in items} - self.facts.keys())
            if missing:
                for row in await driver.fetch(
                        f"SELECT * FROM {_name(deployments)} WHERE id = ANY($1::text[])",
                        missing):
                    self.facts[row["id"]] = Facts(**row)
        touched = fold_batch(self.facts, items, self.changes)
        for deployment_id in touched:  # most recently updated last
            self.facts[deployment_id] = self.facts.pop(deployment_id)
        self.unwritten |= touched
        if self.changes.rows() >= self.pending_rows:
            await self._write_pending(driver)
        if len(self.facts) > self.facts_in_memory:
            await self._forget_oldest(driver)

    async def _write_pending(self, driver: Any) -> None:
        if self.fresh:
            _, *summed = self.tables[1:]
            _, *sums = self.changes.by_table()
            for table, table_sums in zip(summed, sums, strict=True):
                await _copy_deltas(driver, table, table_sums)
        else:
            await _write_changes(driver, self.tables, self.changes, rollups=False)
        self.changes = self._no_changes()

    def _no_changes(self) -> Changes:
        """Empty deltas; a bulk load keeps none for ``created`` (grouped from the facts)."""
        return Changes.empty(created_from_facts=bool(self.fresh))

    async def _forget_oldest(self, driver: Any) -> None:
        await self._write_unwritten(driver)
        oldest = list(self.facts)[:len(self.facts) // 2]
        for deployment_id in oldest:
            del self.facts[deployment_id]
        self.all_in_memory = False

    async def _write_unwritten(self, driver: Any) -> None:
        deployments = self.tables[0]
        ids = sorted(self.unwritten)
        if self.all_in_memory:  # nothing stored yet: one COPY
            await driver.copy_records_to_table(
                deployments.name, schema_name=deployments.schema,
                columns=[c.name for c in deployments.c],
                records=[astuple(self.facts[i]) for i in ids])
        else:
            for first in range(0, len(ids), 50_000):
                await _write_facts(driver, deployments,
                                   [self.facts[i] for i in ids[first:first + 50_000]])
        self.unwritten.clear()

    async def finish(self, engine: AsyncEngine) -> None:
        """Write what is pending, then every rollup from the owner-day rows. A bulk load
        ends one table per transaction, two at a time: a statement runs on one core and
        the replay's Python has nothing left to do."""
        async with engine.begin() as conn:
            driver = await _driver(conn)
            await self._write_pending(driver)
            await self._write_unwritten(driver)
            if not self.fresh:
                for table in self.tables[1:]:
                    await driver.execute(
                        f"DELETE FROM {_name(table)} WHERE level <> {OWNER_DAY}")
                    for statement in _rollups_sql(table):
                        await driver.execute(statement)
                return
        deployments, created = self.tables[:2]
        two_at_a_time = asyncio.Semaphore(2)

        async def end(table: Table) -> None:
            async with two_at_a_time, engine.begin() as conn:
                await _end_bulk_load(await _driver(conn), table,
                                     facts=deployments if table is created else None)

        await asyncio.gather(*(end(table) for table in self.tables[1:]))


def _deltas_name(table: Table) -> str:
    return _qualified(f"{table.name}_deltas", table.schema)


async def _begin_bulk_load(driver: Any, table: Table, *, deltas: bool) -> None:
    """Drop the (empty) table's indexes and, with ``deltas``, create its unlogged delta
    table."""
    await driver.execute(f"ALTER TABLE {_name(table)} DROP CONSTRAINT {table.name}_pkey")
    for index in table.indexes:
        await driver.execute(f"DROP INDEX {_qualified(str(index.name), table.schema)}")
    if deltas:
        await driver.execute(f"CREATE UNLOGGED TABLE {_deltas_name(table)} "
                             f"(LIKE {_name(table)} INCLUDING DEFAULTS)")


async def _copy_deltas(driver: Any, table: Table, sums: dict[tuple[Any, ...], list[Any]]
                       ) -> None:
    rows = [(OWNER_DAY, *key, *amounts) for key, amounts in sums.items() if any(amounts)]
    if rows:
        await driver.copy_records_to_table(
            f"{table.name}_deltas", schema_name=table.schema,
            columns=[c.name for c in table.c], records=rows)


def _facts_as_created_rows(deployments: Table) -> str:
    """The facts as rows of the created table, one per deployment (keys compared as
    bytes, like the table's)."""
    keys = ", ".join(f'{name} COLLATE "C" AS {name}' for name in DIMENSIONS)
    return (f"(SELECT {OWNER_DAY} AS level, {keys}, created_day AS day, "
            f'status COLLATE "C" AS status, 1 AS deployments, vcpus, ram_mb, gpus '
            f"FROM {_name(deployments)}) AS facts")


async def _end_bulk_load(driver: Any, table: Table, *, facts: Table | None) -> None:
    """Owner-day rows summed from the table's deltas (dropped then), or grouped from the
    ``facts`` table (``created``, which kept none); the rollups from them; then the
    indexes built over the loaded rows."""
    sql = _Sql(table)
    source = _deltas_name(table) if facts is None else _facts_as_created_rows(facts)
    await driver.execute(sql.insert_summed(source, level=str(OWNER_DAY), owner=True))
    if facts is None:
        await driver.execute(f"DROP TABLE {source}")
    for statement in _rollups_sql(table):
        await driver.execute(statement)
    await driver.execute(f"ALTER TABLE {_name(table)} ADD CONSTRAINT {table.name}_pkey "
                         f"PRIMARY KEY ({sql.pk})")
    for index in table.indexes:
        await driver.execute(str(CreateIndex(index).compile(dialect=postgresql.dialect())))  # type: ignore[no-untyped-call]


def fold_batch(known: dict[str, Facts], items: Sequence[tuple[RecordedEvent, Any]],
               changes: Changes) -> set[str]:
    """Fold ``items`` into ``known`` (facts by deployment id) and ``changes``; the ids
    whose facts changed. A version already folded is skipped (at-least-once delivery)."""
    touched: set[str] = set()
    for event, decoded in items:
        before = known.get(decoded.deployment_id)
        if before is not None and before.stream_version >= event.version:
            continue
        after = evolve_facts(before, decoded, event.version)
        if after is None:
            continue
        record_changes(changes, before, after, decoded.occurred_at, status_reason(decoded))
        known[after.id] = after
        touched.add(after.id)
    return touched


async def _write_facts(driver: Any, deployments: Table, facts: Sequence[Facts]) -> None:
    """Insert or replace ``facts`` in one round trip (INSERT ... SELECT FROM unnest(arrays)
    ON CONFLICT (id) DO UPDATE; column names are plain identifiers)."""
    if not facts:
        return
    columns = list(deployments.c)
    arrays = [list(column) for column in zip(*(astuple(f) for f in facts), strict=True)]
    await driver.execute(
        f"INSERT INTO {_name(deployments)} ({', '.join(c.name for c in columns)}) "
        "SELECT * FROM unnest("
        + ", ".join(f"${i + 1}::{_cast(c)}" for i, c in enumerate(columns))
        + ") ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{c.name} = EXCLUDED.{c.name}" for c in columns if c.name != "id"),
        *arrays)


async def _write_changes(driver: Any, tables: Sequence[Table], changes: Changes, *,
                         rollups: bool) -> None:
    for table, sums in zip(tables[1:], changes.by_table(), strict=True):
        await _upsert_levels(driver, table, sums, rollups=rollups)


projection = StatisticsProjection()


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn`` (same transaction)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection


def _name(table: Table) -> str:
    return _qualified(table.name, table.schema)


def _qualified(name: str, schema: str | None) -> str:
    return f'"{schema}"."{name}"' if schema else f'"{name}"'


_ARRAY_TYPES = {"TEXT": "text[]", "DATE": "date[]", "BIGINT": "bigint[]",
                "INTEGER": "integer[]", "SMALLINT": "smallint[]", "NUMERIC": "numeric[]",
                "BOOLEAN": "boolean[]", "DATETIME": "timestamptz[]",
                "TIMESTAMP": "timestamptz[]"}

# How a repeated key merges: sums add, extremes keep the least/greatest (NULL ignored).
_MERGE = {"min_us": "least", "max_us": "greatest"}


def _cast(column: Column[Any]) -> str:
    return _ARRAY_TYPES[str(column.type.compile()).split("(")[0].split(" ")[0]]


class _Sql:
    """The pieces of SQL a bucket table's levels are written with (column names are plain
    identifiers)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.name = _name(table)
        self.given = [c for c in table.c if c.name != "level"]
        self.names = ", ".join(c.name for c in self.given)
        self.values = [c for c in table.c if not c.primary_key]
        self.cube = [CUBE[name] for name in table.info["cube"]]
        self.rolled = {column for _, columns in self.cube for column in columns}
        # Keys every rollup row keeps (failures: status and reason).
        self.fixed = [c.name for c in self.given if c.primary_key and c.name not in DIMENSIONS
                      and c.name != "day" and c.name not in self.rolled]
        self.pk = ", ".join(c.name for c in table.primary_key.columns)

    def aggregate(self, column: Column[Any]) -> str:
        how = _MERGE.get(column.name, "add")
        if how == "add":
            return f"sum({column.name})" + ("" if isinstance(column.type, Numeric)
                                            else "::bigint")
        return f"{'min' if how == 'least' else 'max'}({column.name})"

    def nonzero(self) -> str:
        return " OR ".join(f"sum({c.name}) <> 0" if _MERGE.get(c.name, "add") == "add"
                           else f"{self.aggregate(c)} IS NOT NULL" for c in self.values)

    def day(self, month: bool) -> str:
        return "(day - extract(day FROM day)::int + 1)" if month else "day"

    def cube_select(self, source: str, *, month: bool, all_but_full: bool = False) -> str:
        """Rollup rows of every stored mask (GROUPING SETS of the rollup dimensions) summing
        ``source``'s rows, per day or per month; ``all_but_full``: without the mask keeping
        them all."""
        level = f"{1 + (_MONTHS if month else 0)} + " + " + ".join(
            f"(1 - GROUPING({columns[0]})) * {bit}" for bit, columns in self.cube)
        columns = []
        for column in self.given:
            if column.name == "owner_subject":
                value = "''"
            elif column.name == "day":
                value = self.day(month)
            elif column.name in self.rolled:
                value = f"coalesce({column.name}, '')"
            elif column.primary_key:
                value = column.name
            else:
                value = self.aggregate(column)
            columns.append(f"{value} AS {column.name}")
        full = full_mask(self.table)
        sets = ", ".join(
            "(" + ", ".join(name for bit, names in self.cube if mask & bit for name in names)
            + ")" for mask in stored_masks(self.table) if not (all_but_full and mask == full))
        return (f"SELECT {level} AS level, {', '.join(columns)} FROM {source} "
                f"GROUP BY {', '.join(['owner_issuer', self.day(month), *self.fixed])}, "
                f"GROUPING SETS ({sets}) HAVING {self.nonzero()}")

    def insert_summed(self, source: str, *, level: str, owner: bool = False,
                      month: bool = False) -> str:
        """INSERT of ``source``'s rows summed per key, at ``level`` (an expression of the
        source's level when ``month``: the months of each day level), with the owner or
        with '' for it, per day or per month; in key order, so the rows of a day and
        level share few pages."""
        columns, groups = [], ["level"] if month else []
        for column in self.given:
            if column.name == "owner_subject" and not owner:
                columns.append("'' AS owner_subject")
            elif column.name == "day":
                columns.append(f"{self.day(month)} AS day")
                groups.append(self.day(month))
            elif column.primary_key:
                columns.append(column.name)
                groups.append(column.name)
            else:
                columns.append(f"{self.aggregate(column)} AS {column.name}")
        return (f"INSERT INTO {self.name} (level, {self.names}) SELECT * FROM "
                f"(SELECT {level} AS level, {', '.join(columns)} FROM {source} "
                f"GROUP BY {', '.join(groups)} HAVING {self.nonzero()}) AS r "
                f"ORDER BY {self.pk}")

    def updates(self) -> str:
        return ", ".join(
            f"{c.name} = t.{c.name} + EXCLUDED.{c.name}" if _MERGE.get(c.name, "add") == "add"
            else f"{c.name} = {_MERGE[c.name]}(t.{c.name}, EXCLUDED.{c.name})"
            for c in self.values)


_LEVELS_SQL: dict[tuple[str, str | None, bool], str] = {}


def _levels_sql(table: Table, rollups: bool) -> str:
    """INSERT ... SELECT of the owner-day rows given as arrays and (``rollups``) of every
    rollup of them, per day and per month, all in key order, ON CONFLICT adding sums and
    keeping extremes."""
    key = (table.name, table.schema, rollups)
    if key in _LEVELS_SQL:
        return _LEVELS_SQL[key]
    sql = _Sql(table)
    arrays = ", ".join(f"${i + 1}::{_cast(c)}" for i, c in enumerate(sql.given))
    rows = f"SELECT {OWNER_DAY} AS level, {sql.names} FROM owner_day"
    if rollups:
        rows += (f" UNION ALL {sql.cube_select('owner_day', month=False)}"
                 f" UNION ALL {sql.cube_select('owner_day', month=True)}")
    statement = (f"WITH owner_day AS (SELECT * FROM unnest({arrays}) AS u({sql.names})) "
                 f"INSERT INTO {sql.name} AS t (level, {sql.names}) "
                 f"SELECT * FROM ({rows}) AS r "
                 f"ORDER BY {sql.pk} ON CONFLICT ({sql.pk}) DO UPDATE SET {sql.updates()}")
    _LEVELS_SQL[key] = statement
    return statement


def _rollups_sql(table: Table) -> list[str]:
    """Statements writing every rollup of the table's owner-day rows into a table without
    rollup rows (the end of a replay): the day rows keeping every dimension from the
    owner-day rows, the other day rows from those (far fewer), the month rows from the
    day rows."""
    sql = _Sql(table)
    full = day_level(full_mask(table))
    other_days = sql.cube_select(f"(SELECT * FROM {sql.name} WHERE level = {full}) AS days",
                                 month=False, all_but_full=True)
    return [
        sql.insert_summed(f"(SELECT * FROM {sql.name} WHERE level = {OWNER_DAY}) AS owners",
                          level=str(full)),
        f"INSERT INTO {sql.name} (level, {sql.names}) "
        f"SELECT * FROM ({other_days}) AS r ORDER BY {sql.pk}",
        sql.insert_summed(f"(SELECT * FROM {sql.name} WHERE level BETWEEN {day_level(0)} "
                          f"AND {full}) AS days", level=f"level + {_MONTHS}", month=True),
    ]


async def _upsert_levels(driver: Any, table: Table, sums: dict[tuple[Any, ...], list[Any]],
                         *, rollups: bool = True) -> None:
    """Add ``sums`` (owner-day rows keyed dimensions, day, the table's own keys) and their
    rollups to the table: one statement, rows locked in key order (concurrent batches
    never deadlock)."""
    # No all-zero rows: e.g. a status left and re-entered in one batch.
    rows = [(*key, *amounts) for key, amounts in sums.items() if any(amounts)]
    if rows:
        await driver.execute(_levels_sql(table, rollups),
                             *(list(c) for c in zip(*rows, strict=True)))


def _sortable(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(part) for part in key)


# ---------------------------------------------------------------- queries

Interval = Literal["day", "week", "month", "total"]
GROUPS: dict[str, tuple[str, ...]] = {
    "owner": ("owner_subject",),
    "group": ("user_group",),
    "templateType": ("template_type",),
    "provider": ("provider_id", "provider_name"),
    "region": ("provider_id", "provider_name", "region"),
    "status": ("status",),
}
"""Public group-by keys and the columns they group on (``region`` implies its provider)."""


@dataclass(frozen=True)
class StatisticsFilter:
    """Who sees what, and which rows: the common part of every statistics query.

    Scope: every row of ``owner_issuer`` (an admin), or those of ``owner_subject`` in it
    plus, with ``groups``, those groups' rows of the same issuer (a user).
    """

    owner_issuer: str
    owner_subject: str | None = None
    groups: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None
    """Inclusive day range."""
    user_group: str | None = None
    provider: str | None = None
    template_type: str | None = None
    statuses: tuple[str, ...] = ()
    owner: str | None = None


def _scope(table: Table, f: StatisticsFilter, *, with_status: bool) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = [table.c.owner_issuer == f.owner_issuer]
    if f.owner_subject is not None:
        mine = table.c.owner_subject == f.owner_subject
        if f.groups:
            mine = or_(mine, table.c.user_group.in_(list(f.groups)))
        terms.append(mine)
    if f.user_group is not None:
        terms.append(table.c.user_group == f.user_group)
    if f.owner is not None:
        terms.append(table.c.owner_subject == f.owner)
    if f.provider is not None:
        terms.append(or_(table.c.provider_id == f.provider, table.c.provider_name == f.provider))
    if f.template_type is not None:
        terms.append(table.c.template_type == f.template_type)
    if with_status and f.statuses:
        terms.append(table.c.status.in_(list(f.statuses)))
    return terms


def _month_end(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _needs_owner(f: StatisticsFilter, group_by: Sequence[str]) -> bool:
    """Whether a query scopes, filters or groups by owner (then it reads owner-day rows)."""
    return f.owner_subject is not None or f.owner is not None or "owner" in group_by


def _kept(table: Table, f: StatisticsFilter, group_by: Sequence[str]) -> int:
    """The mask of the smallest rollup holding every dimension the query filters or
    groups on."""
    wanted = set(group_by)
    if f.user_group is not None:
        wanted.add("group")
    if f.template_type is not None:
        wanted.add("templateType")
    if f.provider is not None or "provider" in wanted or "region" in wanted:
        wanted.add("site")
    if f.statuses:
        wanted.add("status")
    mask = sum(CUBE[name][0] for name in table.info["cube"] if name in wanted)
    return mask if mask in stored_masks(table) else full_mask(table)


def _days(table: Table, f: StatisticsFilter, group_by: Sequence[str], lo: date | None,
          hi: date | None, *, cuts: Iterable[date] = (), months: bool = True
          ) -> ColumnElement[bool]:
    """The rows holding every delta of the days [lo, hi] (None: unbounded) exactly once.

    Owner-day rows when the query needs the owner. Otherwise the issuer's rollups with the
    fewest dimensions the query needs (``_kept``): a month's rows for each month inside
    [lo, hi] in which no ``cut`` (a day whose running total the caller needs on its own)
    falls before the month's last day, day rows for the other days (the partial months at
    the edges, and months with a cut). ``months=False``: day rows only.
    """
    level, day = table.c.level, table.c.day
    within = [day >= lo] if lo is not None else []
    if hi is not None:
        within.append(day <= hi)
    if _needs_owner(f, group_by):
        return and_(level == OWNER_DAY, *within)
    mask = _kept(table, f, group_by)
    if not months:
        split = None
    else:
        edges = [c for c in cuts if (lo is None or c >= lo) and (hi is None or c < hi)]
        if lo is not None:
            edges.append(lo - timedelta(days=1))
        if hi is not None:
            edges.append(hi)
        split = sorted({c.replace(day=1) for c in edges if c != _month_end(c)
                        and (lo is None or c >= lo.replace(day=1))})
    if split is None:
        return and_(level == day_level(mask), *within)
    # Day rows of the split months (adjacent months merged into one range).
    ranges: list[list[date]] = []
    for month in split:
        first = month if lo is None else max(month, lo)
        last = _month_end(month) if hi is None else min(_month_end(month), hi)
        if ranges and ranges[-1][1] + timedelta(days=1) == first:
            ranges[-1][1] = last
        else:
            ranges.append([first, last])
    monthly = [level == month_level(mask), *within]
    if split:
        monthly.append(day.not_in(split))
    parts = [and_(*monthly)]
    parts += [and_(level == day_level(mask), day >= first, day <= last)
              for first, last in ranges]
    return or_(*parts)


def _bucket(column: Any, interval: Interval) -> Any:
    """The period a day row falls in: date arithmetic (date_trunc goes through timestamps
    with time zone, which cost more than the aggregation itself on day ranges)."""
    if interval == "total":
        return literal(None).label("period")
    if interval == "day":
        return column.label("period")
    field = "isodow" if interval == "week" else "day"
    return (column - (func.extract(field, column).cast(Integer) - 1)).label("period")


def _group_columns(table: Table, group_by: Sequence[str]) -> list[Any]:
    names: list[str] = []
    for key in group_by:
        for column in GROUPS[key]:
            if column not in names and column in table.c:
                names.append(column)
    return [table.c[name] for name in names]


_NONE_IF_EMPTY = frozenset((*DIMENSIONS, "status", "reason"))


def _rows(result: Any) -> list[dict[str, Any]]:
    """Result rows as dicts; '' (none) in a key column as None."""
    names = [str(key) for key in result.keys()]
    empty = [index for index, name in enumerate(names) if name in _NONE_IF_EMPTY]
    out = []
    for row in result.all():
        values = list(row)
        for index in empty:
            values[index] = values[index] or None
        out.append(dict(zip(names, values, strict=True)))
    return out


def _in_range(table: Table, f: StatisticsFilter, group_by: Sequence[str],
              interval: Interval) -> ColumnElement[bool]:
    """The rows of [start, end] for a query bucketed by ``interval``: whole months from
    the monthly rollup unless the buckets are days or weeks."""
    return _days(table, f, group_by, f.start, f.end, months=interval in ("month", "total"))


async def deployment_counts(conn: AsyncConnection, version: int, f: StatisticsFilter, *,
                            group_by: Sequence[str] = (), interval: Interval = "total",
                            schema: str | None = None) -> list[dict[str, Any]]:
    """Deployments created per period (and group), with the resources they request."""
    created = query_tables(projection, version, schema)[1]
    period = _bucket(created.c.day, interval)
    groups = _group_columns(created, group_by)
    terms = _scope(created, f, with_status=True)
    terms.append(_in_range(created, f, group_by, interval))
    query = (select(period, *groups,
                    func.sum(created.c.deployments).label("deployments"),
                    func.sum(created.c.vcpus).label("vcpus"),
                    func.sum(created.c.ram_mb).label("ram_mb"),
                    func.sum(created.c.gpus).label("gpus"))
             .where(*terms).group_by(period, *groups)
             .having(func.sum(created.c.deployments) != 0)
             .order_by(period, *groups))
    return [_ints(row, ("deployments", "vcpus", "ram_mb", "gpus"))
            for row in _rows(await conn.execute(query))]


def _ints(row: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    for name in names:
        row[name] = int(row[name] or 0)
    return row


def _periods(start: date, end: date, interval: Interval) -> list[tuple[date, date]]:
    """(period start, period end inclusive) covering [start, end], clipped to it."""
    if interval == "total":
        return [(start, end)]
    periods: list[tuple[date, date]] = []
    current = start
    while current <= end:
        if interval == "day":
            first, nxt = current, current + timedelta(days=1)
        elif interval == "week":
            first = current - timedelta(days=current.weekday())
            nxt = first + timedelta(days=7)
        else:
            first = current.replace(day=1)
            nxt = (first + timedelta(days=32)).replace(day=1)
        periods.append((first, min(nxt - timedelta(days=1), end)))
        current = nxt
    return periods


async def active_deployments(conn: AsyncConnection, version: int, f: StatisticsFilter, *,
                             group_by: Sequence[str] = (), interval: Interval = "total",
                             today: date, schema: str | None = None) -> list[dict[str, Any]]:
    """Deployments active (and the resources they hold) at the end of each period's last
    day; ``interval=total`` with no range gives "active now"."""
    activity = query_tables(projection, version, schema)[2]
    end = min(f.end or today, today)
    start = f.start or end
    if start > end:
        return []
    periods = _periods(start, end, interval)
    groups = _group_columns(activity, [g for g in group_by if g != "status"])
    terms = _scope(activity, f, with_status=False)
    # Every delta up to the last period's end; a running total is needed at each
    # period's end (rows before ``start`` all count at ``start``).
    terms.append(_days(activity, f, group_by, None, end, cuts=[last for _, last in periods]))
    first_day = case((activity.c.day < start, literal(start)), else_=activity.c.day)
    query = (select(first_day.label("day"), *groups,
                    *(func.sum(activity.c[n]).label(n)
                      for n in ("active", "vcpus", "ram_mb", "gpus")))
             .where(*terms).group_by(first_day, *groups).order_by(first_day, *groups))
    names = [c.name for c in groups]
    deltas = [(row[0], tuple(key or None for key in row[1:-4]), row[-4:])
              for row in (await conn.execute(query)).all()]
    running: dict[tuple[Any, ...], list[int]] = {}
    order: list[tuple[Any, ...]] = []
    out: list[dict[str, Any]] = []
    index = 0
    for first, last in periods:
        added = False
        while index < len(deltas) and deltas[index][0] <= last:
            _, key, amounts = deltas[index]
            known = running.get(key)
            if known is None:
                running[key] = [int(a) for a in amounts]
                added = True
            else:
                for position, amount in enumerate(amounts):
                    known[position] += int(amount)
            index += 1
        if added:
            order = sorted(running, key=_sortable)
        period = None if interval == "total" else first
        for key in order:
            active, vcpus, ram, gpus = running[key]
            if active == 0 and vcpus == 0 and ram == 0 and gpus == 0:
                continue
            out.append({"period": period, "at": last, **dict(zip(names, key, strict=True)),
                        "active": active, "vcpus": vcpus, "ram_mb": ram, "gpus": gpus})
    return out


async def resource_hours(conn: AsyncConnection, version: int, f: StatisticsFilter, *,
                         group_by: Sequence[str] = (), now: datetime,
                         schema: str | None = None) -> list[dict[str, Any]]:
    """vCPU-, RAM-GB- and GPU-hours held by active deployments within [start, end] (whole
    UTC days, clipped to ``now``)."""
    activity = query_tables(projection, version, schema)[2]
    today = now.astimezone(UTC).date()
    end_day = f.end or today
    start_day = f.start or date(1970, 1, 1)
    window_start = datetime.combine(start_day, datetime.min.time(), UTC)
    window_end = min(datetime.combine(end_day + timedelta(days=1), datetime.min.time(), UTC),
                     now)
    if window_end <= window_start:
        return []
    t_start, t_end = micros(window_start), micros(window_end)
    groups = _group_columns(activity, [g for g in group_by if g != "status"])
    terms = _scope(activity, f, with_status=False)
    # Rows of days that end before the window does (the window ends at a midnight, or now:
    # today's rows hold no later instants than now); a row lies wholly before the window
    # or wholly inside it (a cut at the day before it starts).
    terms.append(_days(activity, f, group_by, None, (window_end - _US).date(),
                       cuts=[start_day - timedelta(days=1)]))

    # Per row d*(T-F) before the window and d*T - moment inside it, summed as
    # (T-F)*sum(d before) + T*sum(d inside) - sum(moment inside): no numeric product per
    # row (a RAM delta in MB times µs since the epoch overflows bigint: numeric moments).
    before = activity.c.day < start_day
    resources = ("vcpus", "ram_mb", "gpus")
    sums = []
    for resource in resources:
        sums += [func.sum(activity.c[resource]).filter(before),
                 func.sum(activity.c[resource]).filter(~before),
                 func.sum(activity.c[f"{resource}_moment"]).filter(~before)]
    query = (select(*groups, *sums).where(*terms).group_by(*groups).order_by(*groups))
    names = [c.name for c in groups]
    out = []
    for row in (await conn.execute(query)).all():
        held = []
        for position in range(len(names), len(names) + 9, 3):
            d_before, d_inside, moment = (int(v or 0) for v in row[position:position + 3])
            held.append((t_end - t_start) * d_before + t_end * d_inside - moment)
        vcpu_us, ram_us, gpu_us = held
        if vcpu_us == 0 and ram_us == 0 and gpu_us == 0:
            continue
        hour = 3_600_000_000
        out.append({**{n: v or None for n, v in zip(names, row, strict=False)},
                    "vcpu_hours": vcpu_us / hour, "ram_gb_hours": ram_us / 1024 / hour,
                    "gpu_hours": gpu_us / hour})
    return out


async def create_outcomes(conn: AsyncConnection, version: int, f: StatisticsFilter, *,
                          group_by: Sequence[str] = (), interval: Interval = "total",
                          schema: str | None = None) -> list[dict[str, Any]]:
    """Create operations that ended per period: successes, failures, success rate and the
    time from request (or retry) to CREATE_COMPLETE."""
    outcomes = query_tables(projection, version, schema)[3]
    period = _bucket(outcomes.c.day, interval)
    groups = _group_columns(outcomes, [g for g in group_by if g != "status"])
    terms = _scope(outcomes, f, with_status=False)
    terms.append(_in_range(outcomes, f, group_by, interval))
    query = (select(period, *groups, func.sum(outcomes.c.succeeded).label("succeeded"),
                    func.sum(outcomes.c.failed).label("failed"),
                    func.sum(outcomes.c.total_us).label("total_us"),
                    func.min(outcomes.c.min_us).label("min_us"),
                    func.max(outcomes.c.max_us).label("max_us"))
             .where(*terms).group_by(period, *groups).order_by(period, *groups))
    out = []
    for row in _rows(await conn.execute(query)):
        succeeded, failed = int(row.pop("succeeded")), int(row.pop("failed"))
        total, low, high = row.pop("total_us"), row.pop("min_us"), row.pop("max_us")
        out.append({**row, "succeeded": succeeded, "failed": failed,
                    "success_rate": succeeded / (succeeded + failed)
                    if succeeded + failed else None,
                    "mean_seconds_to_complete": float(total) / succeeded / 1e6
                    if succeeded else None,
                    "min_seconds_to_complete": low / 1e6 if low is not None else None,
                    "max_seconds_to_complete": high / 1e6 if high is not None else None})
    return out


async def failure_reasons(conn: AsyncConnection, version: int, f: StatisticsFilter, *,
                          group_by: Sequence[str] = (), interval: Interval = "total",
                          schema: str | None = None) -> list[dict[str, Any]]:
    """Transitions into a ``*_FAILED`` status per period, by status and reason."""
    failures = query_tables(projection, version, schema)[4]
    period = _bucket(failures.c.day, interval)
    groups = _group_columns(failures, [g for g in group_by if g != "status"])
    terms = _scope(failures, f, with_status=True)
    terms.append(_in_range(failures, f, group_by, interval))
    keys = [*groups, failures.c.status, failures.c.reason]
    query = (select(period, *keys, func.sum(failures.c.failures).label("failures"))
             .where(*terms).group_by(period, *keys)
             .order_by(period, func.sum(failures.c.failures).desc(), *keys))
    return [_ints(row, ("failures",)) for row in _rows(await conn.execute(query))]
