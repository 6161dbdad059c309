"""Properties of the diff: any catalogue to any other, and the safety of failed scopes."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.providers import (
    ObservedProvider,
    ObserveProvider,
    ProviderEvent,
    ProviderState,
    ProviderStatus,
    ScanScope,
    ScopeFailure,
    decide,
    decode_event,
    encode_event,
    fold,
)
from domain.providers.values import quota_key

from .strategies import catalogues
from .support import INGEST, NOW

PROVIDER = "cloud-random.openstack"


def all_scopes(*snapshots: ObservedProvider) -> tuple[ScanScope, ...]:
    regions = {r.name for s in snapshots for r in s.regions}
    projects = {p.project_id for s in snapshots for p in s.projects}
    return tuple(
        ScanScope(region=r, project_id=p) for r in sorted(regions) for p in sorted(projects)
    )


def observe(snapshot: ObservedProvider, scopes: tuple[ScanScope, ...]) -> ObserveProvider:
    return ObserveProvider(
        provider_id=PROVIDER, actor=INGEST, snapshot=snapshot, scopes_scanned_ok=scopes
    )


def ingest(
    snapshot: ObservedProvider,
    state: ProviderState | None = None,
    scopes: tuple[ScanScope, ...] | None = None,
) -> tuple[list[ProviderEvent], ProviderState]:
    base = state if state is not None else fold(())
    events = decide(observe(snapshot, scopes or all_scopes(snapshot)), base, now=NOW)
    return events, fold(events, base)


def normalized(snapshot: ObservedProvider) -> ObservedProvider:
    """Collections in natural-key order, as ``ProviderState.catalogue`` returns them."""
    return msgspec.structs.replace(
        snapshot,
        regions=tuple(sorted(snapshot.regions, key=lambda r: r.name)),
        services=tuple(sorted(snapshot.services, key=lambda s: (s.region, s.endpoint))),
        projects=tuple(sorted(snapshot.projects, key=lambda p: p.project_id)),
        identity_providers=tuple(sorted(snapshot.identity_providers, key=lambda i: i.issuer)),
        user_groups=tuple(sorted(snapshot.user_groups, key=lambda g: (g.issuer, g.name))),
        slas=tuple(sorted(snapshot.slas, key=lambda s: s.sla_id)),
        flavors=tuple(sorted(snapshot.flavors, key=lambda i: (i.region, i.uuid))),
        images=tuple(sorted(snapshot.images, key=lambda i: (i.region, i.uuid))),
        networks=tuple(sorted(snapshot.networks, key=lambda i: (i.region, i.uuid))),
        quotas=tuple(sorted(snapshot.quotas, key=quota_key)),
    )


@settings(max_examples=300, deadline=None)
@given(catalogues(), catalogues())
def test_diffing_two_catalogues_and_applying_the_events_gives_the_second(
    first: ObservedProvider, second: ObservedProvider
) -> None:
    _, state = ingest(first)
    assert state.catalogue() == normalized(first)
    scopes = all_scopes(first, second)
    events, after = ingest(second, state, scopes)
    for event in events:
        assert decode_event(encode_event(event)) == event
    assert after.catalogue() == normalized(second)
    # and observing it again is a no-op
    assert decide(observe(second, scopes), after, now=NOW) == []


@settings(max_examples=200, deadline=None)
@given(catalogues(), catalogues(), st.data())
def test_failed_scopes_never_remove_anything(
    first: ObservedProvider, second: ObservedProvider, data: st.DataObject
) -> None:
    _, state = ingest(first)
    scopes = all_scopes(first, second)
    failed = data.draw(st.lists(st.sampled_from(scopes), unique=True, min_size=1))
    ok = tuple(s for s in scopes if s not in failed)
    # the data of failed scopes is missing, as the Feeder leaves it out
    partial = msgspec.structs.replace(
        second,
        complete=False,
        quotas=tuple(
            q
            for q in second.quotas
            if ScanScope(region=q.region, project_id=q.project_id) not in failed
        ),
    )
    command = ObserveProvider(
        provider_id=PROVIDER,
        actor=INGEST,
        snapshot=partial,
        scopes_scanned_ok=ok,
        scopes_failed=tuple(ScopeFailure(scope=s) for s in failed),
    )
    events = decide(command, state, now=NOW)
    after = fold(events, state)
    failed_regions = {s.region for s in failed}
    # nothing of a failed scope was removed: its quotas, its region, its project
    for scope in failed:
        for key, record in state.quotas.items():
            if (record.region, record.project_id) == (scope.region, scope.project_id):
                assert key in after.quotas
        if scope.region in state.regions:
            assert scope.region in after.regions
        if scope.project_id in state.projects:
            assert scope.project_id in after.projects
    # regions with no scope scanned fine keep their whole catalogue
    ok_regions = {s.region for s in ok}
    for region in failed_regions - ok_regions:
        for collection in ("flavors", "images", "networks", "services"):
            before = {k for k in getattr(state, collection) if k[0] == region}
            assert before <= set(getattr(after, collection))
    assert set(after.failing_scopes) == set(failed)


@settings(max_examples=100, deadline=None)
@given(catalogues())
def test_an_empty_non_active_observation_changes_no_catalogue(first: ObservedProvider) -> None:
    _, state = ingest(first)
    empty = ObservedProvider(name=first.name, type=first.type, status=ProviderStatus.MAINTENANCE)
    events, after = ingest(empty, state, ())
    assert [type(e).__name__ for e in events] == ["ProviderStatusChanged"]
    assert msgspec.structs.replace(after.catalogue(), status=None) == msgspec.structs.replace(
        state.catalogue(), status=None
    )
