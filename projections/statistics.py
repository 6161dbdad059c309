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
  ``d*T - moment`` inside: exact and one range scan.
- ``outcomes``: create operations that ended, per day: CREATE_IN_PROGRESS -> CREATE_COMPLETE
  (with the time since the operation started: request or retry) or -> CREATE_FAILED.
- ``failures``: every transition into a ``*_FAILED`` status, by status and reason.

A small per-deployment table (``statistics_deployments``) holds what the transitions
need; ``stream_version`` makes a repeated event a no-op, so every bucket change is applied
exactly once. Rows are keyed by the owner's issuer first: an admin of one issuer reads
only that issuer's rows. Empty strings stand for "none" in key columns (primary keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
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
    Table,
    Text,
    case,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

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
VERSION = 1

S = DeploymentStatus
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

_HANDLED = (DeploymentRequested, DeploymentUpdateRequested, DeploymentDeletionRequested,
            DeploymentStatusReset, DeploymentRetryRequested, DeploymentAttemptStarted,
            DeploymentCompleted, DeploymentFailed, DeploymentDeleted, DeploymentDeletionFailed)

DIMENSIONS = ("owner_issuer", "owner_subject", "user_group", "template_type", "provider_id",
              "provider_name", "region")
"""Key columns every bucket table shares (then ``day``, then the table's own keys)."""
ISSUER_DIMENSIONS = tuple(d for d in DIMENSIONS if d != "owner_subject")

FAILED = frozenset({S.CREATE_FAILED, S.UPDATE_FAILED, S.DELETE_FAILED})


def micros(moment: datetime) -> int:
    """Microseconds since the epoch: exact instants for the resource-time moments."""
    return (moment - _EPOCH) // _US


# ---------------------------------------------------------------- per-deployment facts


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """What the statistics know of one deployment after some version of its stream.

    A frozen msgspec Struct (fields in the order of the facts table's columns): a rebuild
    makes one copy per event, and ``msgspec.structs.replace`` is C where
    ``dataclasses.replace`` is Python.
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

    @classmethod
    def empty(cls) -> Changes:
        return cls({}, {}, {}, {})


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
    day = occurred_at.astimezone(UTC).date()
    created_before = ((*before.dimensions, before.created_day, before.status),
                      (1, before.vcpus, before.ram_mb, before.gpus)) if before else None
    created_after = ((*after.dimensions, after.created_day, after.status),
                     (1, after.vcpus, after.ram_mb, after.gpus))
    if created_before != created_after:
        if created_before is not None:
            _add(changes.created, created_before[0], [-v for v in created_before[1]])
        _add(changes.created, created_after[0], created_after[1])
    active_before = ((before.dimensions, (1, before.vcpus, before.ram_mb, before.gpus))
                     if before is not None and before.active else None)
    active_after = ((after.dimensions, (1, after.vcpus, after.ram_mb, after.gpus))
                    if after.active else None)
    if active_before != active_after:
        t = micros(occurred_at)
        for sign, side in ((-1, active_before), (1, active_after)):
            if side is None:
                continue
            dims, amounts = side
            deltas = [sign * a for a in amounts]
            # active, vcpus, ram, gpus, then the moments d*t of the three resources
            _add(changes.activity, (*dims, day), [*deltas, *(d * t for d in deltas[1:])])
    if before is not None and before.status != after.status:
        if before.status == S.CREATE_IN_PROGRESS and after.status == S.CREATE_COMPLETE:
            took = micros(occurred_at) - micros(after.operation_started_at)
            _add_outcome(changes.outcomes, (*after.dimensions, day), succeeded=True, took=took)
        elif before.status == S.CREATE_IN_PROGRESS and after.status == S.CREATE_FAILED:
            _add_outcome(changes.outcomes, (*after.dimensions, day), succeeded=False, took=0)
        if after.status in FAILED:
            key = (*after.dimensions, day, after.status, reason)
            changes.failures[key] = changes.failures.get(key, 0) + 1


# ---------------------------------------------------------------- tables


def _dimension_columns() -> list[Column[Any]]:
    return [Column(name, Text, primary_key=True) for name in DIMENSIONS]


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
        created = Table(
            f"{NAME}_created_v{version}", metadata, *_dimension_columns(),
            Column("day", Date, primary_key=True),
            Column("status", Text, primary_key=True),
            Column("deployments", BigInteger, nullable=False),
            Column("vcpus", BigInteger, nullable=False),
            Column("ram_mb", BigInteger, nullable=False),
            Column("gpus", BigInteger, nullable=False),
        )
        activity = Table(
            f"{NAME}_activity_v{version}", metadata, *_dimension_columns(),
            Column("day", Date, primary_key=True),
            Column("active", BigInteger, nullable=False),
            Column("vcpus", BigInteger, nullable=False),
            Column("ram_mb", BigInteger, nullable=False),
            Column("gpus", BigInteger, nullable=False),
            Column("vcpus_moment", Numeric, nullable=False),
            Column("ram_mb_moment", Numeric, nullable=False),
            Column("gpus_moment", Numeric, nullable=False),
        )
        outcomes = Table(
            f"{NAME}_outcomes_v{version}", metadata, *_dimension_columns(),
            Column("day", Date, primary_key=True),
            Column("succeeded", BigInteger, nullable=False),
            Column("failed", BigInteger, nullable=False),
            Column("total_us", Numeric, nullable=False),
            Column("min_us", BigInteger),
            Column("max_us", BigInteger),
        )
        failures = Table(
            f"{NAME}_failures_v{version}", metadata, *_dimension_columns(),
            Column("day", Date, primary_key=True),
            Column("status", Text, primary_key=True),
            Column("reason", Text, primary_key=True),
            Column("failures", BigInteger, nullable=False),
        )
        # The activity deltas again without the owner: what admins' "active" and
        # "resources" views read (they sum every delta before the range, and the owner is
        # the dimension that multiplies rows).
        issuer_activity = Table(
            f"{NAME}_issuer_activity_v{version}", metadata,
            *(Column(name, Text, primary_key=True) for name in ISSUER_DIMENSIONS),
            *(Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
              for c in activity.c if c.name not in DIMENSIONS))
        # Every query is one issuer's day range (admins), or one owner's (users; their
        # groups' rows come from the issuer range with a group filter).
        for table in (created, activity, outcomes, failures):
            Index(f"{table.name}_issuer_day", table.c.owner_issuer, table.c.day)
            Index(f"{table.name}_owner_day", table.c.owner_issuer, table.c.owner_subject,
                  table.c.day)
        Index(f"{issuer_activity.name}_issuer_day", issuer_activity.c.owner_issuer,
              issuer_activity.c.day)
        return [deployments, created, activity, outcomes, failures, issuer_activity]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        await self.apply_batch(conn, [(event, decoded)], tables)

    async def apply_batch(self, conn: AsyncConnection,
                          items: Sequence[tuple[RecordedEvent, Any]],
                          tables: Sequence[Table]) -> None:
        deployments, created, activity, outcomes, failures, issuer_activity = tables
        ids = sorted({decoded.deployment_id for _, decoded in items})
        if not ids:
            return
        # One round trip per table with arrays (unnest): SQLAlchemy's executemany spent
        # more time building parameters than Postgres spent applying them.
        driver = await _driver(conn)
        rows = await driver.fetch(
            f"SELECT * FROM {_name(deployments)} WHERE id = ANY($1::text[]) FOR UPDATE", ids)
        known: dict[str, Facts] = {row["id"]: Facts(**row) for row in rows}
        touched: set[str] = set()
        changes = Changes.empty()
        for event, decoded in items:
            before = known.get(decoded.deployment_id)
            if before is not None and before.stream_version >= event.version:
                continue  # already applied (at-least-once delivery)
            after = evolve_facts(before, decoded, event.version)
            if after is None:
                continue
            record_changes(changes, before, after, decoded.occurred_at, status_reason(decoded))
            known[after.id] = after
            touched.add(after.id)
        if touched:
            names = [c.name for c in deployments.c]
            await _upsert(driver, deployments, ["id"],
                          [astuple(known[i]) for i in sorted(touched)],
                          {n: "EXCLUDED" for n in names if n != "id"})
        await _upsert_sums(driver, created, changes.created,
                           ("deployments", "vcpus", "ram_mb", "gpus"), ("day", "status"))
        activity_values = ("active", "vcpus", "ram_mb", "gpus", "vcpus_moment",
                           "ram_mb_moment", "gpus_moment")
        await _upsert_sums(driver, activity, changes.activity, activity_values, ("day",))
        per_issuer: dict[tuple[Any, ...], list[int]] = {}
        for key, amounts in changes.activity.items():
            _add(per_issuer, (key[0], *key[2:]), amounts)
        await _upsert_sums(driver, issuer_activity, per_issuer, activity_values, ("day",),
                           dimensions=ISSUER_DIMENSIONS)
        await _upsert_sums(driver, outcomes, changes.outcomes,
                           ("succeeded", "failed", "total_us", "min_us", "max_us"), ("day",))
        await _upsert_sums(driver, failures, {k: [v] for k, v in changes.failures.items()},
                           ("failures",), ("day", "status", "reason"))


projection = StatisticsProjection()


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn`` (same transaction)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection


def _name(table: Table) -> str:
    return (f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"')


_ARRAY_TYPES = {"TEXT": "text[]", "DATE": "date[]", "BIGINT": "bigint[]",
                "INTEGER": "integer[]", "NUMERIC": "numeric[]", "BOOLEAN": "boolean[]",
                "DATETIME": "timestamptz[]", "TIMESTAMP": "timestamptz[]"}

# How a repeated key merges: sums add, extremes keep the least/greatest (NULL ignored).
_MERGE = {"min_us": "least", "max_us": "greatest"}


async def _upsert(driver: Any, table: Table, keys: Sequence[str], rows: Sequence[Sequence[Any]],
                  merge: dict[str, str]) -> None:
    """INSERT ... SELECT FROM unnest(arrays) ON CONFLICT (keys) DO UPDATE: ``merge`` maps a
    column to ``EXCLUDED`` (replace), ``add``, ``least`` or ``greatest``."""
    if not rows:
        return
    columns = [c.name for c in table.c]
    casts = [_ARRAY_TYPES[str(c.type.compile()).split("(")[0].split(" ")[0]]
             for c in table.c]
    arrays = [list(column) for column in zip(*rows, strict=True)]
    updates = []
    for name, how in merge.items():
        if how == "EXCLUDED":
            updates.append(f'"{name}" = EXCLUDED."{name}"')
        elif how == "add":
            updates.append(f'"{name}" = t."{name}" + EXCLUDED."{name}"')
        else:
            updates.append(f'"{name}" = {how}(t."{name}", EXCLUDED."{name}")')
    quoted = ", ".join(f'"{c}"' for c in columns)
    await driver.execute(
        f"INSERT INTO {_name(table)} AS t ({quoted}) SELECT * FROM unnest("
        + ", ".join(f"${i + 1}::{cast}" for i, cast in enumerate(casts))
        + f") ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(updates),
        *arrays)


async def _upsert_sums(driver: Any, table: Table, sums: dict[tuple[Any, ...], list[Any]],
                       values: Sequence[str], extra_keys: Sequence[str], *,
                       dimensions: Sequence[str] = DIMENSIONS) -> None:
    keys = [*dimensions, *extra_keys]
    order = [c.name for c in table.c]
    rows = []
    # Sorted keys: concurrent batches lock rows in the same order (no deadlocks).
    for key, amounts in sorted(sums.items(), key=itemgetter(0)):
        if not any(amounts):
            continue  # e.g. a status left and re-entered in one batch: no empty rows
        by_name = {**dict(zip(keys, key, strict=True)), **dict(zip(values, amounts,
                                                                    strict=True))}
        rows.append([by_name[name] for name in order])
    if rows:
        await _upsert(driver, table, keys, rows, {v: _MERGE.get(v, "add") for v in values})


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


def _bucket(column: Any, interval: Interval) -> Any:
    if interval == "total":
        return literal(None).label("period")
    return func.date_trunc(interval, column).cast(Date).label("period")


def _group_columns(table: Table, group_by: Sequence[str]) -> list[Any]:
    names: list[str] = []
    for key in group_by:
        for column in GROUPS[key]:
            if column not in names and column in table.c:
                names.append(column)
    return [table.c[name] for name in names]


def _rows(result: Any) -> list[dict[str, Any]]:
    out = []
    for row in result.mappings():
        item = {}
        for key, value in row.items():
            name = str(key)
            if name in DIMENSIONS or name in ("status", "reason"):
                value = value or None
            item[name] = value
        out.append(item)
    return out


def _activity_table(version: int, schema: str | None, f: StatisticsFilter,
                    group_by: Sequence[str]) -> Table:
    """The owner-less rollup unless the query scopes, filters or groups by owner."""
    tables = query_tables(projection, version, schema)
    if f.owner_subject is None and f.owner is None and "owner" not in group_by:
        return tables[5]
    return tables[2]


async def deployment_counts(conn: AsyncConnection, version: int, f: StatisticsFilter, *,
                            group_by: Sequence[str] = (), interval: Interval = "total",
                            schema: str | None = None) -> list[dict[str, Any]]:
    """Deployments created per period (and group), with the resources they request."""
    created = query_tables(projection, version, schema)[1]
    period = _bucket(created.c.day, interval)
    groups = _group_columns(created, group_by)
    terms = _scope(created, f, with_status=True)
    if f.start is not None:
        terms.append(created.c.day >= f.start)
    if f.end is not None:
        terms.append(created.c.day <= f.end)
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
    activity = _activity_table(version, schema, f, group_by)
    end = min(f.end or today, today)
    start = f.start or end
    if start > end:
        return []
    groups = _group_columns(activity, [g for g in group_by if g != "status"])
    terms = _scope(activity, f, with_status=False)
    terms.append(activity.c.day <= end)
    first_day = case((activity.c.day < start, literal(start)), else_=activity.c.day)
    query = (select(first_day.label("day"), *groups,
                    *(func.sum(activity.c[n]).label(n)
                      for n in ("active", "vcpus", "ram_mb", "gpus")))
             .where(*terms).group_by(first_day, *groups).order_by(first_day, *groups))
    deltas = _rows(await conn.execute(query))
    names = [c.name for c in groups]
    running: dict[tuple[Any, ...], list[int]] = {}
    out: list[dict[str, Any]] = []
    index = 0
    for first, last in _periods(start, end, interval):
        while index < len(deltas) and deltas[index]["day"] <= last:
            row = deltas[index]
            key = tuple(row[n] for n in names)
            _add(running, key, [int(row[n]) for n in ("active", "vcpus", "ram_mb", "gpus")])
            index += 1
        for key, (active, vcpus, ram, gpus) in sorted(running.items(), key=lambda i:
                                                      _sortable(i[0])):
            if active == 0 and vcpus == 0 and ram == 0 and gpus == 0:
                continue
            out.append({"period": None if interval == "total" else first, "at": last,
                        **dict(zip(names, key, strict=True)), "active": active,
                        "vcpus": vcpus, "ram_mb": ram, "gpus": gpus})
    return out


async def resource_hours(conn: AsyncConnection, version: int, f: StatisticsFilter, *,
                         group_by: Sequence[str] = (), now: datetime,
                         schema: str | None = None) -> list[dict[str, Any]]:
    """vCPU-, RAM-GB- and GPU-hours held by active deployments within [start, end] (whole
    UTC days, clipped to ``now``)."""
    activity = _activity_table(version, schema, f, group_by)
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
    # today's rows hold no later instants than now).
    terms.append(activity.c.day <= (window_end - _US).date())

    def held(resource: str) -> Any:
        # numeric: a RAM delta in MB times µs since the epoch overflows bigint
        delta, moment = activity.c[resource].cast(Numeric), activity.c[f"{resource}_moment"]
        return func.sum(case((activity.c.day < start_day, delta * (t_end - t_start)),
                             else_=delta * t_end - moment)).label(resource)

    query = (select(*groups, held("vcpus"), held("ram_mb"), held("gpus"))
             .where(*terms).group_by(*groups).order_by(*groups))
    out = []
    for row in _rows(await conn.execute(query)):
        vcpu_us, ram_us, gpu_us = (int(row.pop(n) or 0) for n in ("vcpus", "ram_mb", "gpus"))
        if vcpu_us == 0 and ram_us == 0 and gpu_us == 0:
            continue
        hour = 3_600_000_000
        out.append({**row, "vcpu_hours": vcpu_us / hour, "ram_gb_hours": ram_us / 1024 / hour,
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
    if f.start is not None:
        terms.append(outcomes.c.day >= f.start)
    if f.end is not None:
        terms.append(outcomes.c.day <= f.end)
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
    if f.start is not None:
        terms.append(failures.c.day >= f.start)
    if f.end is not None:
        terms.append(failures.c.day <= f.end)
    keys = [*groups, failures.c.status, failures.c.reason]
    query = (select(period, *keys, func.sum(failures.c.failures).label("failures"))
             .where(*terms).group_by(period, *keys)
             .order_by(period, func.sum(failures.c.failures).desc(), *keys))
    return [_ints(row, ("failures",)) for row in _rows(await conn.execute(query))]
