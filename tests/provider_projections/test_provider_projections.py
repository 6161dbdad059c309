"""The provider read models hold exactly what the domain folds.

Random catalogues (the domain's strategies) are observed twice, the second time with random
failed scopes; the events, encoded and decoded by the event registry as the runners do, are
applied to the ``provider_catalogue`` and ``provider_capacity`` tables in Postgres; every table
must then equal the folded ``ProviderState`` (and the folded quota usage). The
``provider_states`` projection, fed in two batches the second of which redelivers the first,
must hold those same folded states.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.providers import (
    ObservedProvider,
    ObserveProvider,
    ProviderEvent,
    ProviderState,
    QuotaKind,
    ScanScope,
    ScopeFailure,
    decide,
    fold,
    usage_command,
)
from domain.providers.usage import QuotaUsageState, decide_usage, fold_usage
from eventstore.projection import create_tables, versioned_tables
from eventstore.records import Metadata, RecordedEvent
from orchestrator.bootstrap import event_registry
from orchestrator.settings import database_engine
from projections import provider_capacity, provider_catalogue, provider_states
from tests.domain.providers.strategies import catalogues
from tests.domain.providers.support import INGEST, NOW

PROVIDER = "cloud-random.openstack"
REGISTRY = event_registry()
BUILDS = itertools.count(1)


def all_scopes(*snapshots: ObservedProvider) -> tuple[ScanScope, ...]:
    regions = sorted({r.name for s in snapshots for r in s.regions})
    projects = sorted({p.project_id for s in snapshots for p in s.projects})
    return tuple(ScanScope(region=r, project_id=p) for r in regions for p in projects)


def recorded(events: list[Any], stream: str, first_version: int) -> list[RecordedEvent]:
    """The events as a runner receives them: registry-encoded envelopes."""
    found = []
    for version, event in enumerate(events, start=first_version):
        new = REGISTRY.encode(event, str(uuid.uuid4()))
        found.append(RecordedEvent(
            position=version, tx_id=1, stream_id=stream, category=stream.split("-")[0],
            version=version, event_id=new.event_id, type=new.type,
            schema_version=new.schema_version, data=new.data, metadata=Metadata(),
            recorded_at=datetime.now(UTC), hash=b""))
    return found


async def rows(conn: AsyncConnection, table: Any, *exclude: str) -> list[dict[str, Any]]:
    result = await conn.execute(select(table))
    return sorted(({str(k): v for k, v in r._mapping.items() if str(k) not in exclude}
                   for r in result), key=repr)


def item_rows(items: dict[Any, Any], table: Any) -> list[dict[str, Any]]:
    return sorted(({**{c: (list(v) if isinstance(v, tuple) else v)
                       for c in table.c.keys()
                       if (v := getattr(item, c, None)) is not None or hasattr(item, c)},
                    "provider_id": PROVIDER} for item in items.values()), key=repr)


async def check(database_url: str, first: ObservedProvider, second: ObservedProvider,
                failed: list[ScanScope]) -> None:
    state: ProviderState = fold(())
    usage = QuotaUsageState()
    provider_events: list[ProviderEvent] = []
    usage_events: list[Any] = []
    scopes = all_scopes(first, second)
    partial = msgspec.structs.replace(second, complete=False, quotas=tuple(
        q for q in second.quotas if ScanScope(region=q.region, project_id=q.project_id)
        not in failed))
    for command in (
        ObserveProvider(provider_id=PROVIDER, actor=INGEST, snapshot=first,
                        scopes_scanned_ok=all_scopes(first)),
        ObserveProvider(provider_id=PROVIDER, actor=INGEST, snapshot=partial,
                        scopes_scanned_ok=tuple(s for s in scopes if s not in failed),
                        scopes_failed=tuple(ScopeFailure(scope=s, message="timeout")
                                            for s in failed)),
    ):
        events = decide(command, state, now=NOW)
        state = fold(events, state)
        provider_events += events
        sampled = decide_usage(usage_command(command), usage, now=NOW)
        usage = fold_usage(sampled, usage)
        usage_events += sampled

    engine = database_engine(database_url)
    build = next(BUILDS)
    try:
        catalogue_tables = versioned_tables(provider_catalogue.projection, build)
        capacity_tables = versioned_tables(provider_capacity.projection, build)
        async with engine.begin() as conn:
            await create_tables(conn, [*catalogue_tables, *capacity_tables])
            for event in recorded(provider_events, f"provider-{PROVIDER}", 1):
                decoded = REGISTRY.decode_recorded(event)
                for projection, tables in ((provider_catalogue.projection, catalogue_tables),
                                           (provider_capacity.projection, capacity_tables)):
                    if event.type in projection.HANDLES:
                        await projection.apply(conn, event, decoded, tables)
            for event in recorded(usage_events, f"quotausage-{PROVIDER}", 1):
                await provider_capacity.projection.apply(
                    conn, event, REGISTRY.decode_recorded(event), capacity_tables)

        states_tables = versioned_tables(provider_states.projection, build)
        items = [(event, REGISTRY.decode_recorded(event)) for event in
                 [*recorded(provider_events, f"provider-{PROVIDER}", 1),
                  *recorded(usage_events, f"quotausage-{PROVIDER}", 1)]]
        async with engine.begin() as conn:
            await create_tables(conn, states_tables)
            await provider_states.projection.apply_batch(conn, items[:len(items) // 2],
                                                         states_tables)
        async with engine.begin() as conn:  # a redelivery of the first half, then the rest
            await provider_states.projection.apply_batch(conn, items, states_tables)
        async with engine.connect() as conn:
            found = await provider_states.provider_states(conn, build, [PROVIDER])
            found_usage = await provider_states.usage_states(conn, build, [PROVIDER])
        assert found == {PROVIDER: (len(provider_events), state)}
        assert found_usage == ({PROVIDER: (len(usage_events), usage)} if usage_events else {})

        providers, regions, projects, slas, flavors, images, scopes_table = catalogue_tables
        limits, usage_table = capacity_tables
        async with engine.connect() as conn:
            (provider,) = await rows(conn, providers)
            assert provider["status"] == state.status.value
            assert provider["availability"] == state.availability.value
            assert provider["priority"] == state.priority
            assert provider["aliases"] == msgspec.to_builtins(list(state.aliases))
            assert await rows(conn, flavors) == item_rows(state.flavors, flavors)
            assert await rows(conn, images) == item_rows(state.images, images)
            assert [r["region"] for r in await rows(conn, regions)] == sorted(
                state.regions, key=repr)
            assert sorted((r["project_id"], r["name"]) for r in await rows(conn, projects)) == \
                sorted((p.project_id, p.name) for p in state.projects.values())
            assert sorted((r["sla_id"], r["user_group"], r["start_date"], r["end_date"],
                           tuple(r["projects"])) for r in await rows(conn, slas)) == sorted(
                (s.sla_id, s.user_group, s.start_date, s.end_date, s.projects)
                for s in state.slas.values())
            # a scope is a site of its project where it has limits, or while it is failing
            expected_scopes = {}
            for region, project, service, kind in state.quotas:
                if kind == QuotaKind.LIMIT:
                    expected_scopes.setdefault((region, project), set()).add(service.value)
            for scope in state.failing_scopes:
                expected_scopes.setdefault((scope.region, scope.project_id), set())
            assert {(r["region"], r["project_id"]): (set(r["limit_kinds"]), r["failing"])
                    for r in await rows(conn, scopes_table)} == {
                key: (kinds, ScanScope(region=key[0], project_id=key[1])
                      in state.failing_scopes)
                for key, kinds in expected_scopes.items()}
            assert {(r["region"], r["project_id"], r["service_type"], r["kind"]):
                    r["quota_values"] for r in await rows(conn, limits)} == {
                (k[0], k[1], k[2].value, k[3].value): msgspec.to_builtins(q.values)
                for k, q in state.quotas.items()}
            # usage rows: the latest sample per key, minus those of removed regions/projects
            kept = {k: s for k, s in usage.samples.items()
                    if k[0] in state.regions and k[1] in state.projects}
            assert {(r["region"], r["project_id"], r["service_type"]): r["quota_values"]
                    for r in await rows(conn, usage_table)} == {
                (k[0], k[1], k[2].value): msgspec.to_builtins(s.values)
                for k, s in kept.items()}
    finally:
        await engine.dispose()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(catalogues(), catalogues(), st.data())
def test_the_tables_equal_the_folded_state(fx_database_url: str, first: ObservedProvider,
                                           second: ObservedProvider,
                                           data: st.DataObject) -> None:
    failed = data.draw(st.lists(st.sampled_from(all_scopes(first, second)), unique=True))
    asyncio.run(check(fx_database_url, first, second, failed))
