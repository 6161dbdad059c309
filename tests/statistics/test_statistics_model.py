"""Property: the statistics projection equals a from-scratch count over the log.

Random deployment histories (hypothesis) are decided by the domain and appended through
the real command service and event store; the projection is fed by the real replay; every
statistics query is compared with ``histories.Oracle``, which folds the log with the
domain's ``evolve``. Each example uses its own issuers, so examples share one database.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.deployments import EVENT_TYPES, SCHEMA_VERSIONS, DeploymentEvent, stream_id
from eventstore.command_service import CommandService
from eventstore.projection import apply_events, create_tables, drop_tables, versioned_tables
from eventstore.rebuild import committed_head, replay
from eventstore.records import LogPosition
from eventstore.registry import EventRegistry
from eventstore.store import EventStore
from projections import statistics as stats
from tests.event_log import all_events
from tests.statistics.histories import T0, TYPES, Clock, Oracle, Plan, owners, plans, run_plans

V = stats.VERSION
DIMENSION_GROUPS = ["owner", "group", "templateType", "region"]
NOW = T0 + timedelta(days=21, hours=5)  # after every generated event
LAST_DAY = NOW.date()


def _registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register_all(EVENT_TYPES, SCHEMA_VERSIONS)
    return registry


def _key(row: dict[str, Any], *names: str) -> tuple[Any, ...]:
    return tuple(row[n] if row[n] is not None else "" for n in names)


DIMS = ("owner_subject", "user_group", "template_type", "provider_id", "provider_name",
        "region")


class Example:
    """One database, a projection build fed by replay, and a running log position."""

    def __init__(self, store: EventStore, engine: AsyncEngine) -> None:
        self.store = store
        self.engine = engine
        self.registry = _registry()
        self.clock = Clock()
        self.commands = CommandService(store, self.registry, clock=self.clock)
        self.tables = versioned_tables(stats.projection, stats.VERSION)
        self.position = LogPosition.start()

    async def setup(self) -> None:
        async with self.engine.begin() as conn:
            await create_tables(conn, self.tables)

    async def project(self, mode: Mode) -> None:
        """Feed the projection what was appended since the last call: by a replay (facts
        in memory, owner-day rows, rollups summed at its end; ``replay, little memory``
        forgets facts and writes rows every few events; ``into new tables``: the whole log
        again into new tables, the bulk load of a rebuild) or as the live runner does
        (every level per batch), each batch delivered twice (at-least-once)."""
        head = await committed_head(self.store, ["deployment"])
        assert head is not None
        if mode != "live":
            projection = LittleMemory() if "little memory" in mode else stats.projection
            after = self.position
            if "new tables" in mode:
                async with self.engine.begin() as conn:
                    await drop_tables(conn, self.tables)
                    await create_tables(conn, self.tables)
                after = LogPosition.start()
            result = await replay(projection, store=self.store, engine=self.engine,
                                  version=V, tables=self.tables, registry=self.registry,
                                  categories=["deployment"], after=after,
                                  to_position=head, record_position=False, batch_size=7)
            assert result.position == head
            self.position = result.position
            return
        events = [e for e in await all_events(self.store) if e.log_position > self.position
                  and e.category == "deployment"]
        for first in range(0, len(events), 7):
            items = [(e, self.registry.decode_recorded(e)) for e in events[first:first + 7]
                     if e.type in stats.projection.HANDLES]
            for _ in range(2):
                async with self.engine.begin() as conn:
                    await apply_events(conn, stats.projection, self.tables, items)
        assert events and events[-1].log_position == head
        self.position = head

    async def log_of(self, ids: list[str]) -> dict[str, list[DeploymentEvent]]:
        streams = {}
        for deployment_id in ids:
            events = await self.store.read_stream(stream_id(deployment_id))
            streams[deployment_id] = [self.registry.decode_recorded(e) for e in events]
        return streams  # type: ignore[return-value]


Mode = Literal["live", "replay", "replay, little memory", "replay into new tables",
               "replay into new tables, little memory"]


class LittleMemory(stats.StatisticsProjection):
    """Statistics replayed holding facts of 3 deployments and 5 pending rows at most."""

    def replayer(self, tables: Sequence[Any]) -> stats.StatisticsReplay:
        return stats.StatisticsReplay(tables, facts_in_memory=3, pending_rows=5)


async def check(example: Example, plans_: list[Plan], mode: Mode,
                slices: Sequence[Slice] = ()) -> None:
    people = owners(uuid.uuid4().hex[:8])
    ids = await run_plans(example.commands, example.clock, plans_, people)
    await example.project(mode)
    oracle = Oracle.count(await example.log_of(ids))
    issuers = sorted({p.issuer for p in people})
    async with example.engine.connect() as conn:
        for issuer in issuers:
            admin = stats.StatisticsFilter(owner_issuer=issuer)
            await _created(conn, admin, oracle, issuer)
            await _active(conn, admin, oracle, issuer)
            await _held(conn, admin, oracle, issuer)
            await _outcomes(conn, admin, oracle, issuer)
            await _failures(conn, admin, oracle, issuer)
            # whole months from the monthly rollup, partial ones from day rows; the same
            # windows read from the owner-day rows (an owner filter)
            for owner in (None, *(p.subject for p in people if p.issuer == issuer)):
                await _windows(conn, oracle, issuer, owner)
            for slice_ in slices:
                await _slice(conn, issuer, slice_)
        # A user's view: their own deployments plus group g1's (group visibility).
        user = people[0]
        scoped = stats.StatisticsFilter(owner_issuer=user.issuer, owner_subject=user.subject,
                                        groups=("g1",))
        rows = await stats.deployment_counts(conn, V, scoped, group_by=["owner", "group"])
        expected: dict[tuple[Any, ...], int] = defaultdict(int)
        for key, (count, *_) in oracle.created.items():
            if key[0] == user.issuer and (key[1] == user.subject or key[2] == "g1"):
                expected[(key[1], key[2])] += count
        assert {_key(r, "owner_subject", "user_group"): r["deployments"] for r in rows} == {
            k: v for k, v in expected.items() if v}


async def _created(conn: Any, f: stats.StatisticsFilter, oracle: Oracle, issuer: str) -> None:
    rows = await stats.deployment_counts(conn, V, f, group_by=[*DIMENSION_GROUPS, "status"],
                                         interval="day")
    got = {(r["period"], *_key(r, *DIMS, "status")): [r["deployments"], r["vcpus"],
                                                       r["ram_mb"], r["gpus"]] for r in rows}
    expected = {(k[7], *k[1:7], k[8]): v for k, v in oracle.created.items()
                if k[0] == issuer and v[0]}
    assert got == expected
    # week and month buckets roll the same days up
    for interval in ("week", "month"):
        rows = await stats.deployment_counts(conn, V, f, group_by=["templateType"],
                                             interval=interval)
        rolled: dict[tuple[Any, ...], int] = defaultdict(int)
        for (day, *dims, _), (count, *_) in expected.items():
            first = (day - timedelta(days=day.weekday()) if interval == "week"
                     else day.replace(day=1))
            rolled[(first, dims[2])] += count
        assert {(r["period"], r["template_type"]): r["deployments"] for r in rows} == {
            k: v for k, v in rolled.items() if v}


async def _active(conn: Any, f: stats.StatisticsFilter, oracle: Oracle, issuer: str) -> None:
    first = T0.date()
    window = stats.StatisticsFilter(owner_issuer=issuer, start=first, end=LAST_DAY)
    rows = await stats.active_deployments(conn, V, window, group_by=DIMENSION_GROUPS,
                                          interval="day", today=LAST_DAY)
    got = {(r["at"], *_key(r, *DIMS)): [r["active"], r["vcpus"], r["ram_mb"], r["gpus"]]
           for r in rows}
    expected = {}
    day = first
    while day <= LAST_DAY:
        for dims, values in oracle.active_at(day).items():
            if dims[0] == issuer:
                expected[(day, *dims[1:])] = values
        day += timedelta(days=1)
    assert got == expected
    # without the owner dimension an admin's view reads the per-issuer rollup
    rows = await stats.active_deployments(conn, V, window, group_by=["group", "provider"],
                                          interval="week", today=LAST_DAY)
    weekly: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        weekly[(row["at"], *_key(row, "user_group", "provider_id", "provider_name"))] = [
            row["active"], row["vcpus"], row["ram_mb"], row["gpus"]]
    rolled: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for at in {at for at, *_ in weekly}:  # each period end once, whatever its row count
        for dims, values in oracle.active_at(at).items():
            if dims[0] == issuer:
                row = rolled[(at, dims[2], dims[4], dims[5])]
                for index, value in enumerate(values):
                    row[index] += value
    assert weekly == {k: v for k, v in rolled.items() if any(v)}
    ends = {at for at, *_ in weekly}
    assert all(at.weekday() == 6 or at == LAST_DAY for at in ends)


async def _held(conn: Any, f: stats.StatisticsFilter, oracle: Oracle, issuer: str) -> None:
    for start, end in ((T0.date() + timedelta(days=2), T0.date() + timedelta(days=4)),
                       (date(2026, 1, 1), LAST_DAY)):
        window = stats.StatisticsFilter(owner_issuer=issuer, start=start, end=end)
        rows = await stats.resource_hours(conn, V, window, group_by=DIMENSION_GROUPS,
                                          now=NOW)
        got = {_key(r, *DIMS): (r["vcpu_hours"], r["ram_gb_hours"], r["gpu_hours"])
               for r in rows}
        lo = datetime.combine(start, datetime.min.time(), UTC)
        hi = min(datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC), NOW)
        hour = 3_600_000_000
        expected = {dims[1:]: (v / hour, r / 1024 / hour, g / hour)
                    for dims, (v, r, g) in oracle.held_micros(lo, hi).items()
                    if dims[0] == issuer and (v or r or g)}
        assert got.keys() == expected.keys()
        for key, values in expected.items():
            assert got[key] == pytest.approx(values, rel=1e-9, abs=1e-9)
        # the per-issuer rollup (no owner dimension) gives the same totals per template type
        rows = await stats.resource_hours(conn, V, window, group_by=["templateType"], now=NOW)
        by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for (_, _, template_type, *_), values in expected.items():
            for index, value in enumerate(values):
                by_type[template_type][index] += value
        assert {r["template_type"] for r in rows} == set(by_type)
        for row in rows:
            assert (row["vcpu_hours"], row["ram_gb_hours"], row["gpu_hours"]) == pytest.approx(
                tuple(by_type[row["template_type"]]), rel=1e-9, abs=1e-9)


async def _outcomes(conn: Any, f: stats.StatisticsFilter, oracle: Oracle,
                    issuer: str) -> None:
    rows = await stats.create_outcomes(conn, V, f, group_by=DIMENSION_GROUPS, interval="day")
    got = {(r["period"], *_key(r, *DIMS)): (r["succeeded"], r["failed"],
                                            r["min_seconds_to_complete"],
                                            r["max_seconds_to_complete"]) for r in rows}
    expected = {(k[7], *k[1:7]): (v[0], v[1], v[3] / 1e6 if v[3] is not None else None,
                                  v[4] / 1e6 if v[4] is not None else None)
                for k, v in oracle.outcomes.items() if k[0] == issuer}
    assert got == expected
    for row in rows:
        key = (row["period"], *_key(row, *DIMS))
        total = next(v[2] for k, v in oracle.outcomes.items()
                     if k[0] == issuer and (k[7], *k[1:7]) == key)
        if row["succeeded"]:
            assert row["mean_seconds_to_complete"] == pytest.approx(
                total / row["succeeded"] / 1e6)
            assert row["success_rate"] == row["succeeded"] / (row["succeeded"] + row["failed"])


async def _failures(conn: Any, f: stats.StatisticsFilter, oracle: Oracle,
                    issuer: str) -> None:
    rows = await stats.failure_reasons(conn, V, f, group_by=DIMENSION_GROUPS, interval="day")
    got = {(r["period"], *_key(r, *DIMS, "status", "reason")): r["failures"] for r in rows}
    expected = {(k[7], *k[1:7], k[8], k[9]): v for k, v in oracle.failures.items()
                if k[0] == issuer}
    assert got == expected


WINDOWS: list[tuple[date | None, date | None]] = [
    (None, None), (date(2026, 2, 26), date(2026, 3, 3)), (date(2026, 2, 1), date(2026, 2, 28)),
    (date(2026, 3, 1), LAST_DAY), (date(2026, 2, 25), date(2026, 3, 1)),
    (T0.date() + timedelta(days=1), LAST_DAY - timedelta(days=2)),
    (date(2026, 1, 15), date(2026, 3, 31))]
"""Ranges that start or end inside a month, on its first or last day, or not at all."""


def _period_ends(start: date, end: date, interval: str) -> list[tuple[date, date]]:
    """(first, last day) of each period of [start, end]: written out, not stats._periods."""
    periods = []
    first = start
    while first <= end:
        if interval == "total":
            last = end
        elif interval == "day":
            last = first
        else:
            last = min((first.replace(day=28) + timedelta(days=4)).replace(day=1)
                       - timedelta(days=1), end)
        periods.append((first, last))
        first = last + timedelta(days=1)
    return periods


async def _windows(conn: Any, oracle: Oracle, issuer: str, owner: str | None) -> None:
    """Every view over ``WINDOWS`` bucketed by month and in total (and active per day), for
    the issuer's admin without the owner dimension (rollups) or with an owner filter."""

    def mine(key: tuple[Any, ...]) -> bool:
        return key[0] == issuer and (owner is None or key[1] == owner)

    for start, end in WINDOWS:

        def inside(day: date, start: date | None = start, end: date | None = end) -> bool:
            return (start is None or day >= start) and (end is None or day <= end)

        f = stats.StatisticsFilter(owner_issuer=issuer, start=start, end=end, owner=owner)
        intervals: tuple[stats.Interval, ...] = ("month", "total")
        for interval in intervals:

            def period(day: date, interval: str = interval) -> date | None:
                return None if interval == "total" else day.replace(day=1)

            rows = await stats.deployment_counts(conn, V, f, interval=interval,
                                                 group_by=["templateType", "status"])
            created: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
            for key, values in oracle.created.items():
                if mine(key) and inside(key[7]):
                    sums = created[(period(key[7]), key[3], key[8])]
                    for index, value in enumerate(values):
                        sums[index] += value
            assert {(r["period"], r["template_type"], r["status"]): [
                r["deployments"], r["vcpus"], r["ram_mb"], r["gpus"]] for r in rows} == {
                k: v for k, v in created.items() if v[0]}

            rows = await stats.create_outcomes(conn, V, f, interval=interval,
                                               group_by=["region"])
            outcomes: dict[tuple[Any, ...], list[Any]] = {}
            for key, (ok, failed, total, low, high) in oracle.outcomes.items():
                if mine(key) and inside(key[7]):
                    acc = outcomes.setdefault((period(key[7]), *key[4:7]),
                                              [0, 0, 0, None, None])
                    acc[0] += ok
                    acc[1] += failed
                    acc[2] += total
                    if low is not None:
                        acc[3] = low if acc[3] is None else min(acc[3], low)
                        acc[4] = high if acc[4] is None else max(acc[4], high)
            assert {(r["period"], *_key(r, "provider_id", "provider_name", "region")): (
                r["succeeded"], r["failed"], r["min_seconds_to_complete"],
                r["max_seconds_to_complete"]) for r in rows} == {
                k: (v[0], v[1], v[3] / 1e6 if v[3] is not None else None,
                    v[4] / 1e6 if v[4] is not None else None) for k, v in outcomes.items()}
            for r in rows:
                key = (r["period"], *_key(r, "provider_id", "provider_name", "region"))
                if r["succeeded"]:
                    assert r["mean_seconds_to_complete"] == pytest.approx(
                        outcomes[key][2] / r["succeeded"] / 1e6)

            rows = await stats.failure_reasons(conn, V, f, interval=interval,
                                               group_by=["group"])
            failures: dict[tuple[Any, ...], int] = defaultdict(int)
            for key, count in oracle.failures.items():
                if mine(key) and inside(key[7]):
                    failures[(period(key[7]), key[2], key[8], key[9])] += count
            assert {(r["period"], *_key(r, "user_group", "status", "reason")): r["failures"]
                    for r in rows} == dict(failures)

        # active at the end of each period (rows before the range count at its start)
        last_day = min(end or LAST_DAY, LAST_DAY)
        first_day = start or last_day
        for interval in ("day", *intervals):
            rows = await stats.active_deployments(conn, V, f, group_by=["templateType"],
                                                  interval=interval, today=LAST_DAY)
            got = {(r["at"], r["template_type"]): [r["active"], r["vcpus"], r["ram_mb"],
                                                   r["gpus"]] for r in rows}
            expected: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
            for _, at in _period_ends(first_day, last_day, interval):
                for dims, values in oracle.active_at(at).items():
                    if mine(dims):
                        sums = expected[(at, dims[3])]
                        for index, value in enumerate(values):
                            sums[index] += value
            assert got == {k: v for k, v in expected.items() if any(v)}

        # resource-hours inside the range (split where it starts, clipped to now)
        rows = await stats.resource_hours(conn, V, f, group_by=["templateType"], now=NOW)
        lo = datetime.combine(start or date(1970, 1, 1), datetime.min.time(), UTC)
        hi = min(datetime.combine((end or LAST_DAY) + timedelta(days=1), datetime.min.time(),
                                  UTC), NOW)
        hour = 3_600_000_000
        held: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for dims, (vcpu, ram, gpu) in oracle.held_micros(lo, hi).items():
            if mine(dims) and (vcpu or ram or gpu):
                for index, hours in enumerate((vcpu / hour, ram / 1024 / hour, gpu / hour)):
                    held[dims[3]][index] += hours
        assert {r["template_type"] for r in rows} == {k for k, v in held.items() if any(v)}
        for r in rows:
            assert (r["vcpu_hours"], r["ram_gb_hours"], r["gpu_hours"]) == pytest.approx(
                tuple(held[r["template_type"]]), rel=1e-9, abs=1e-9)


class Slice(NamedTuple):
    view: str
    group_by: tuple[str, ...]
    filters: dict[str, Any]
    window: tuple[date | None, date | None]
    interval: stats.Interval


slices = st.builds(
    Slice, view=st.sampled_from(["created", "active", "held", "outcomes", "failures"]),
    group_by=st.lists(st.sampled_from(["group", "templateType", "provider", "region",
                                       "status"]), max_size=3, unique=True).map(tuple),
    # At most two filters: more leave most slices empty on both sides.
    filters=st.lists(st.one_of(
        st.tuples(st.just("user_group"), st.sampled_from(["g1", "g2"])),
        st.tuples(st.just("template_type"), st.sampled_from(TYPES)),
        st.tuples(st.just("provider"), st.sampled_from(["prov-a", "CLOUD-VENETO", "prov-c"])),
        st.tuples(st.just("statuses"), st.sampled_from(
            [("CREATE_COMPLETE",), ("CREATE_FAILED", "DELETE_COMPLETE")]))),
        max_size=2, unique_by=lambda item: item[0]).map(dict),
    window=st.sampled_from(WINDOWS), interval=st.sampled_from(["day", "week", "month", "total"]))


@contextmanager
def owner_rows() -> Iterator[None]:
    """Queries read the owner-day rows, as a query filtering by owner does: the ground
    truth the rollups are sums of."""
    rollups = stats._needs_owner
    stats._needs_owner = lambda f, group_by: True
    try:
        yield
    finally:
        stats._needs_owner = rollups


async def _slice(conn: Any, issuer: str, s: Slice) -> None:
    """A view filtered and grouped on a few dimensions, read from the smallest rollup that
    holds them, equals the same view summed from the owner-day rows."""
    f = stats.StatisticsFilter(owner_issuer=issuer, start=s.window[0], end=s.window[1],
                               **s.filters)

    async def read() -> list[dict[str, Any]]:
        if s.view == "created":
            return await stats.deployment_counts(conn, V, f, group_by=s.group_by,
                                                 interval=s.interval)
        if s.view == "active":
            return await stats.active_deployments(conn, V, f, group_by=s.group_by,
                                                  interval=s.interval, today=LAST_DAY)
        if s.view == "held":
            return await stats.resource_hours(conn, V, f, group_by=s.group_by, now=NOW)
        if s.view == "outcomes":
            return await stats.create_outcomes(conn, V, f, group_by=s.group_by,
                                               interval=s.interval)
        return await stats.failure_reasons(conn, V, f, group_by=s.group_by,
                                           interval=s.interval)

    from_rollups = await read()
    with owner_rows():
        from_owner_rows = await read()
    assert from_rollups == from_owner_rows


@pytest.fixture(name="fx_example")
async def fixture_example(fx_store: EventStore, fx_engine: AsyncEngine) -> Example:
    example = Example(fx_store, fx_engine)
    await example.setup()
    return example


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plans_=plans(), mode=st.sampled_from(get_args(Mode)),
       slices_=st.lists(slices, min_size=10, max_size=10))
async def test_statistics_equal_a_count_over_the_log(fx_example: Example,
                                                     plans_: list[Plan], mode: Mode,
                                                     slices_: list[Slice]) -> None:
    await check(fx_example, plans_, mode, slices_)
