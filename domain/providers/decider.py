"""The provider decider: ``initial_state``, ``evolve``, ``fold`` and ``decide``.

Observations are diffed against the state by natural key and only real changes become
events. The rules that make partial scans safe (``provider-model.md`` sections 4.7 and 10.1):

- A failed scope never removes or narrows anything; it records ``provider.scope_scan_failed``
  (once per failure streak) and may change the provider's availability.
- A flavour, image or network missing from a scan is removed only if its region was scanned
  fine by at least one scope: a shared item is visible to every project, so one good scope that
  does not see it proves it gone; a private item loses only the projects whose scope was
  scanned fine (or that left a complete snapshot's configuration), and is removed when none is
  left. Services follow the region rule, quota limits the exact-scope rule.
- Regions, projects, trusted identity providers, user groups and SLAs are removed only by a
  *complete* snapshot (one that lists every one of them, see ``ObservedProvider.complete``),
  and a region or project with a failed scope is never removed.
- A provider that is not ``active`` keeps its catalogue: its observations may add and change
  things but never remove any (the Feeder empties non-active providers' trees).
- An unchanged observation decides nothing; scan outcomes are recorded only when they change.

Operator commands (register, status, aliases, priority) are idempotent: repeating one decides
``[]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from .commands import (
    AddProviderAlias,
    ObserveProvider,
    ProviderCommand,
    RegisterProvider,
    RemoveProviderAlias,
    SetProviderPriority,
    SetProviderStatus,
)
from .errors import AlreadyRegistered, InvalidCommand, InvalidObservation, ProviderNotFound
from .events import (
    AvailabilityChanged,
    FlavorAdded,
    FlavorChanged,
    FlavorRemoved,
    IdentityProviderChanged,
    IdentityProviderTrusted,
    IdentityProviderUntrusted,
    ImageAdded,
    ImageChanged,
    ImageRemoved,
    NetworkAdded,
    NetworkChanged,
    NetworkRemoved,
    ProjectAdded,
    ProjectChanged,
    ProjectRemoved,
    ProviderAliasAdded,
    ProviderAliasRemoved,
    ProviderDetailsChanged,
    ProviderEvent,
    ProviderPrioritySet,
    ProviderRegistered,
    ProviderStatusChanged,
    QuotaLimitsChanged,
    QuotaLimitsRemoved,
    RegionAdded,
    RegionChanged,
    RegionRemoved,
    ScopeScanFailed,
    ScopeScanRecovered,
    ServiceAdded,
    ServiceChanged,
    ServiceRemoved,
    SlaAdded,
    SlaChanged,
    SlaRemoved,
    UserGroupAdded,
    UserGroupRemoved,
)
from .naming import check_provider_id
from .state import DEFAULT_PRIORITY, FailingScope, ProviderState
from .values import (
    AliasSystem,
    Availability,
    ChangeSource,
    Flavor,
    Image,
    Network,
    ObservedProvider,
    ProviderAlias,
    ProviderDetails,
    ProviderStatus,
    QuotaKind,
    ScanScope,
    quota_key,
    scope_of,
)

T = TypeVar("T", bound=msgspec.Struct)
K = TypeVar("K")


def initial_state(provider_id: str = "") -> ProviderState:
    return ProviderState(provider_id=provider_id)


# --- evolve ----------------------------------------------------------------------------------


class _Working:
    """Mutable copies of a state's collections, so that folding a batch copies once."""

    def __init__(self, state: ProviderState) -> None:
        self.fields: dict[str, Any] = {
            name: getattr(state, name) for name in state.__struct_fields__
        }
        for name, value in self.fields.items():
            if isinstance(value, dict):
                self.fields[name] = dict(value)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.fields[name] = value

    def freeze(self) -> ProviderState:
        return ProviderState(**self.fields)


def _apply(w: _Working, event: ProviderEvent) -> None:
    w["version"] += 1
    match event:
        case ProviderRegistered():
            w["provider_id"] = event.provider_id
            w["details"] = event.details
            w["status"] = event.status
            w["reported_status"] = event.reported_status
            w["priority"] = event.priority
            w["aliases"] = tuple(sorted(set(event.aliases)))
        case ProviderDetailsChanged():
            w["details"] = event.details
        case ProviderStatusChanged():
            w["status"] = event.to_status
            if event.source == ChangeSource.OBSERVATION:
                w["reported_status"] = event.to_status
        case ProviderAliasAdded():
            w["aliases"] = tuple(sorted({*w["aliases"], event.alias}))
        case ProviderAliasRemoved():
            w["aliases"] = tuple(a for a in w["aliases"] if a != event.alias)
        case ProviderPrioritySet():
            w["priority"] = event.priority
        case RegionAdded() | RegionChanged():
            w["regions"][event.region.name] = event.region
        case RegionRemoved():
            _remove_region(w, event.region_name)
        case ServiceAdded() | ServiceChanged():
            w["services"][(event.service.region, event.service.endpoint)] = event.service
        case ServiceRemoved():
            w["services"].pop((event.region, event.endpoint), None)
        case ProjectAdded() | ProjectChanged():
            w["projects"][event.project.project_id] = event.project
        case ProjectRemoved():
            _remove_project(w, event.project_id)
        case IdentityProviderTrusted() | IdentityProviderChanged():
            w["identity_providers"][event.identity_provider.issuer] = event.identity_provider
        case IdentityProviderUntrusted():
            w["identity_providers"].pop(event.issuer, None)
        case UserGroupAdded():
            group = event.user_group
            w["user_groups"][(group.issuer, group.name)] = group
        case UserGroupRemoved():
            w["user_groups"].pop((event.issuer, event.name), None)
        case SlaAdded() | SlaChanged():
            w["slas"][event.sla.sla_id] = event.sla
        case SlaRemoved():
            w["slas"].pop(event.sla_id, None)
        case FlavorAdded() | FlavorChanged():
            w["flavors"][(event.flavor.region, event.flavor.uuid)] = event.flavor
        case FlavorRemoved():
            w["flavors"].pop((event.region, event.uuid), None)
        case ImageAdded() | ImageChanged():
            w["images"][(event.image.region, event.image.uuid)] = event.image
        case ImageRemoved():
            w["images"].pop((event.region, event.uuid), None)
        case NetworkAdded() | NetworkChanged():
            w["networks"][(event.network.region, event.network.uuid)] = event.network
        case NetworkRemoved():
            w["networks"].pop((event.region, event.uuid), None)
        case QuotaLimitsChanged():
            w["quotas"][quota_key(event.quota)] = event.quota
        case QuotaLimitsRemoved():
            key = (event.region, event.project_id, event.service_type, event.kind)
            w["quotas"].pop(key, None)
        case ScopeScanFailed():
            w["failing_scopes"][event.failure.scope] = FailingScope(
                failure=event.failure, since=event.occurred_at
            )
        case ScopeScanRecovered():
            w["failing_scopes"].pop(event.scope, None)
        case AvailabilityChanged():
            w["availability"] = event.to_availability
        case _:  # pragma: no cover - the union is closed
            raise TypeError(f"unknown provider event {type(event).__name__}")


def _remove_region(w: _Working, region: str) -> None:
    w["regions"].pop(region, None)
    for name in ("services", "flavors", "images", "networks"):
        collection: dict[tuple[str, str], Any] = w[name]
        for key in [k for k in collection if k[0] == region]:
            del collection[key]
    quotas = w["quotas"]
    for key in [k for k in quotas if k[0] == region]:
        del quotas[key]
    failing = w["failing_scopes"]
    for scope in [s for s in failing if s.region == region]:
        del failing[scope]


def _remove_project(w: _Working, project_id: str) -> None:
    w["projects"].pop(project_id, None)
    quotas = w["quotas"]
    for key in [k for k in quotas if k[1] == project_id]:
        del quotas[key]
    failing = w["failing_scopes"]
    for scope in [s for s in failing if s.project_id == project_id]:
        del failing[scope]


def fold(events: Iterable[ProviderEvent], state: ProviderState | None = None) -> ProviderState:
    """The state after ``events`` (from ``state``, else from the initial state)."""
    working = _Working(state if state is not None else initial_state())
    for event in events:
        _apply(working, event)
    return working.freeze()


def evolve(state: ProviderState, event: ProviderEvent) -> ProviderState:
    return fold((event,), state)


# --- decide ----------------------------------------------------------------------------------


def decide(command: ProviderCommand, state: ProviderState, *, now: datetime) -> list[ProviderEvent]:
    """The events ``command`` causes in ``state``; raises errors from ``errors.py``."""
    check_provider_id(command.provider_id)
    if state.registered and state.provider_id != command.provider_id:
        raise ValueError(
            f"command for provider {command.provider_id} decided against the state of "
            f"{state.provider_id}"
        )
    match command:
        case ObserveProvider():
            return _observe(command, state, now)
        case RegisterProvider():
            return _register(command, state, now)
    if not state.registered:
        raise ProviderNotFound(command.provider_id)
    match command:
        case SetProviderStatus():
            if command.status == state.status:
                return []
            return [
                ProviderStatusChanged(
                    provider_id=command.provider_id,
                    occurred_at=now,
                    actor=command.actor,
                    from_status=state.status,
                    to_status=command.status,
                    source=ChangeSource.OPERATOR,
                    reason=command.reason,
                )
            ]
        case AddProviderAlias():
            if command.alias in state.aliases:
                return []
            return [
                ProviderAliasAdded(
                    provider_id=command.provider_id,
                    occurred_at=now,
                    actor=command.actor,
                    alias=_checked_alias(command.alias),
                )
            ]
        case RemoveProviderAlias():
            if command.alias not in state.aliases:
                return []
            return [
                ProviderAliasRemoved(
                    provider_id=command.provider_id,
                    occurred_at=now,
                    actor=command.actor,
                    alias=command.alias,
                )
            ]
        case SetProviderPriority():
            _check_priority(command.priority)
            if command.priority == state.priority:
                return []
            return [
                ProviderPrioritySet(
                    provider_id=command.provider_id,
                    occurred_at=now,
                    actor=command.actor,
                    priority=command.priority,
                    previous=state.priority,
                    reason=command.reason,
                )
            ]
    raise TypeError(f"unknown provider command {type(command).__name__}")


def _check_priority(priority: int) -> None:
    if not 0 <= priority <= 100:
        raise InvalidCommand(f"Priority must be between 0 and 100, not {priority}")


def _checked_alias(alias: ProviderAlias) -> ProviderAlias:
    if not alias.name.strip():
        raise InvalidCommand("An alias needs a non-blank name")
    return alias


def _register(
    command: RegisterProvider, state: ProviderState, now: datetime
) -> list[ProviderEvent]:
    _check_priority(command.priority)
    aliases = tuple(
        sorted(
            {
                ProviderAlias(system=AliasSystem.REGISTRY, name=command.details.name),
                *(_checked_alias(a) for a in command.aliases),
            }
        )
    )
    if state.registered:
        if (
            state.details == command.details
            and state.status == command.status
            and set(aliases) <= set(state.aliases)
        ):
            return []
        raise AlreadyRegistered(command.provider_id, f"as {state.name} ({state.status})")
    return [
        ProviderRegistered(
            provider_id=command.provider_id,
            occurred_at=now,
            actor=command.actor,
            details=command.details,
            status=command.status,
            source=ChangeSource.OPERATOR,
            aliases=aliases,
            priority=command.priority,
        )
    ]


# --- observations ----------------------------------------------------------------------------


def validate_snapshot(snapshot: ObservedProvider) -> list[str]:
    """Consistency problems of a snapshot (empty if fine); sources raise on any."""
    problems: list[str] = []
    regions = {r.name for r in snapshot.regions}
    if len(regions) != len(snapshot.regions):
        problems.append("regions: duplicate region names")
    project_ids = {p.project_id for p in snapshot.projects}
    if len(project_ids) != len(snapshot.projects):
        problems.append("projects: duplicate project ids")
    issuers = {i.issuer for i in snapshot.identity_providers}
    if len(issuers) != len(snapshot.identity_providers):
        problems.append("identity_providers: duplicate issuers")

    def unique(kind: str, keys: list[Any]) -> None:
        seen: set[Any] = set()
        for key in keys:
            if key in seen:
                problems.append(f"{kind}: {key!r} appears twice")
            seen.add(key)

    unique("services", [(s.region, s.endpoint) for s in snapshot.services])
    unique("user_groups", [(g.issuer, g.name) for g in snapshot.user_groups])
    unique("slas", [s.sla_id for s in snapshot.slas])
    unique("quotas", [quota_key(q) for q in snapshot.quotas])
    for kind, items in (
        ("flavors", snapshot.flavors),
        ("images", snapshot.images),
        ("networks", snapshot.networks),
    ):
        unique(kind, [(i.region, i.uuid) for i in items])
        for item in items:
            if item.region not in regions:
                problems.append(f"{kind}: {item.uuid} is in unknown region {item.region!r}")
            if not item.is_shared and not item.projects:
                problems.append(f"{kind}: private {item.uuid} lists no project")
            if snapshot.complete:
                for project in item.projects:
                    if project not in project_ids:
                        problems.append(
                            f"{kind}: {item.uuid} names project {project!r} of no scope"
                        )
    for flavor in snapshot.flavors:
        if flavor.gpus == 0 and (flavor.gpu_vendor or flavor.gpu_model):
            problems.append(f"flavors: {flavor.uuid} has a GPU vendor/model but no GPU")
    problems.extend(
        f"{kind}: unknown region {region!r}"
        for kind, region in (
            *(("services", s.region) for s in snapshot.services),
            *(("quotas", q.region) for q in snapshot.quotas),
        )
        if region not in regions
    )
    for group in snapshot.user_groups:
        if group.issuer not in issuers:
            problems.append(f"user_groups: {group.name} of untrusted issuer {group.issuer}")
    for sla in snapshot.slas:
        if sla.start_date and sla.end_date and sla.start_date >= sla.end_date:
            problems.append(f"slas: {sla.sla_id} starts on or after its end")
        if snapshot.complete:
            if (sla.issuer, sla.user_group) not in {
                (g.issuer, g.name) for g in snapshot.user_groups
            }:
                problems.append(f"slas: {sla.sla_id} is for an unknown user group")
            problems.extend(
                f"slas: {sla.sla_id} names unknown project {p!r}"
                for p in sla.projects
                if p not in project_ids
            )
    if snapshot.complete:
        problems.extend(
            f"quotas: unknown project {q.project_id!r}"
            for q in snapshot.quotas
            if q.project_id not in project_ids
        )
    return problems


def _observe(command: ObserveProvider, state: ProviderState, now: datetime) -> list[ProviderEvent]:
    snapshot = command.snapshot
    problems = validate_snapshot(snapshot)
    scopes_ok = set(command.scopes_scanned_ok)
    failures = {f.scope: f for f in command.scopes_failed}
    problems.extend(
        f"scope {s.region}/{s.project_id} is both scanned fine and failed"
        for s in sorted(scopes_ok & failures.keys())
    )
    problems.extend(
        f"quotas: data for failed scope {q.region}/{q.project_id}"
        for q in snapshot.quotas
        if scope_of(q) in failures
    )
    if problems:
        raise InvalidObservation("observation", problems)
    emit = _Emitter(command, snapshot.observed_at or now)

    # 1. the provider itself, then regions and projects (removals cascade in evolve, so the
    #    rest is diffed against the state after them)
    if not state.registered:
        emit(
            ProviderRegistered,
            details=ProviderDetails(
                name=snapshot.name,
                type=snapshot.type,
                description=snapshot.description or "",
                is_public=bool(snapshot.is_public),
                support_emails=snapshot.support_emails or (),
                auth_endpoint=snapshot.auth_endpoint,
            ),
            status=snapshot.status or ProviderStatus.ACTIVE,
            source=ChangeSource.OBSERVATION,
            aliases=(ProviderAlias(system=AliasSystem.REGISTRY, name=snapshot.name),),
            priority=DEFAULT_PRIORITY,
            reported_status=snapshot.status,
        )
    else:
        _diff_details(emit, state, snapshot)
        if snapshot.status is not None and snapshot.status != state.reported_status:
            emit(
                ProviderStatusChanged,
                from_status=state.status,
                to_status=snapshot.status,
                source=ChangeSource.OBSERVATION,
                reason="reported by the site configuration",
            )
    events = emit.take()
    work = fold(events, state)
    removals_allowed = work.status == ProviderStatus.ACTIVE
    complete = snapshot.complete and removals_allowed
    failed_regions = {s.region for s in failures}
    failed_projects = {s.project_id for s in failures}
    merge = not snapshot.complete

    regions = {r.name: r for r in snapshot.regions}
    _diff_entities(
        emit,
        work.regions,
        regions,
        merge_fields=("location",) if merge else (),
        added=lambda r: (RegionAdded, {"region": r}),
        changed=lambda r, c: (RegionChanged, {"region": r, "changed": c}),
        removed=lambda k, r: (RegionRemoved, {"region_name": k}),
        may_remove=lambda k: complete and k not in failed_regions,
    )
    projects = {p.project_id: p for p in snapshot.projects}
    _diff_entities(
        emit,
        work.projects,
        projects,
        merge_fields=("name",) if merge else (),
        added=lambda p: (ProjectAdded, {"project": p}),
        changed=lambda p, c: (ProjectChanged, {"project": p, "changed": c}),
        removed=lambda k, p: (ProjectRemoved, {"project_id": k}),
        may_remove=lambda k: complete and k not in failed_projects,
    )
    batch = emit.take()
    work = fold(batch, work)
    events.extend(batch)

    # 2. trust and entitlements (configuration: complete snapshots only remove)
    _diff_entities(
        emit,
        work.identity_providers,
        {i.issuer: i for i in snapshot.identity_providers},
        merge_fields=("group_claim", "idp_name", "protocol", "audience") if merge else (),
        added=lambda i: (IdentityProviderTrusted, {"identity_provider": i}),
        changed=lambda i, c: (IdentityProviderChanged, {"identity_provider": i, "changed": c}),
        removed=lambda k, i: (IdentityProviderUntrusted, {"issuer": k}),
        may_remove=lambda k: complete,
    )
    _diff_entities(
        emit,
        work.user_groups,
        {(g.issuer, g.name): g for g in snapshot.user_groups},
        merge_fields=(),
        added=lambda g: (UserGroupAdded, {"user_group": g}),
        changed=lambda g, c: (UserGroupAdded, {"user_group": g}),
        removed=lambda k, g: (UserGroupRemoved, {"issuer": k[0], "name": k[1]}),
        may_remove=lambda k: complete,
    )
    _diff_entities(
        emit,
        work.slas,
        {s.sla_id: _sorted_projects(s) for s in snapshot.slas},
        merge_fields=(),
        added=lambda s: (SlaAdded, {"sla": s}),
        changed=lambda s, c: (SlaChanged, {"sla": s, "changed": c}),
        removed=lambda k, s: (SlaRemoved, {"sla_id": k}),
        may_remove=lambda k: complete,
    )

    # 3. catalogue, judged per scanned scope
    ok_projects: dict[str, set[str]] = {}
    for scope in scopes_ok:
        ok_projects.setdefault(scope.region, set()).add(scope.project_id)
    scanned_regions = set(ok_projects) if removals_allowed else set()

    def narrowable(region: str, project: str) -> bool:
        """May this scan drop ``project`` from an item's access list?"""
        if not removals_allowed:
            return False
        if project in ok_projects.get(region, ()):
            return True
        return complete and project not in projects and project not in failed_projects

    _diff_entities(
        emit,
        work.services,
        {(s.region, s.endpoint): s for s in snapshot.services},
        merge_fields=(),
        added=lambda s: (ServiceAdded, {"service": s}),
        changed=lambda s, c: (ServiceChanged, {"service": s, "changed": c}),
        removed=lambda k, s: (
            ServiceRemoved,
            {"region": k[0], "endpoint": k[1], "service_type": s.type},
        ),
        may_remove=lambda k: k[0] in scanned_regions,
    )
    _diff_items(emit, work.flavors, snapshot.flavors, scanned_regions, narrowable, _FLAVORS)
    _diff_items(emit, work.images, snapshot.images, scanned_regions, narrowable, _IMAGES)
    _diff_items(emit, work.networks, snapshot.networks, scanned_regions, narrowable, _NETWORKS)

    # 4. quota limits (usage goes to its own stream, see usage.py)
    observed_limits = {quota_key(q): q for q in snapshot.quotas if q.kind != QuotaKind.USAGE}
    for key in sorted(observed_limits):
        record = observed_limits[key]
        previous = work.quotas.get(key)
        if previous != record:
            emit(QuotaLimitsChanged, quota=record, previous=previous)
    for key in sorted(work.quotas.keys() - observed_limits.keys()):
        region, project_id, service_type, kind = key
        if removals_allowed and ScanScope(region=region, project_id=project_id) in scopes_ok:
            emit(
                QuotaLimitsRemoved,
                region=region,
                project_id=project_id,
                service_type=service_type,
                kind=kind,
            )

    # 5. scan outcomes, only when they change
    for scope in sorted(failures):
        if scope not in work.failing_scopes:
            emit(ScopeScanFailed, failure=failures[scope])
    for scope in sorted(scopes_ok):
        if scope in work.failing_scopes:
            emit(ScopeScanRecovered, scope=scope)
    batch = emit.take()
    work = fold(batch, work)
    events.extend(batch)

    availability = derive_availability(work, scanned_fine=bool(scopes_ok))
    if availability != work.availability:
        emit(
            AvailabilityChanged,
            from_availability=work.availability,
            to_availability=availability,
            failing_scopes=tuple(sorted(work.failing_scopes)),
        )
    events.extend(emit.take())
    return events


def derive_availability(state: ProviderState, *, scanned_fine: bool = False) -> Availability:
    """Availability from the failing scopes: none failing is ``available`` (once some scan
    went fine), all known scopes failing is ``unavailable``, otherwise ``partially``."""
    failing = set(state.failing_scopes)
    if not failing:
        if scanned_fine or state.availability != Availability.UNKNOWN:
            return Availability.AVAILABLE
        return Availability.UNKNOWN
    known = {scope_of(q) for q in state.quotas.values()} | failing
    if known <= failing and not scanned_fine:
        return Availability.UNAVAILABLE
    return Availability.PARTIALLY_AVAILABLE


class _Emitter:
    """Collects events of one decision, stamping the common fields."""

    def __init__(self, command: ObserveProvider, occurred_at: datetime) -> None:
        self.common: dict[str, Any] = {
            "provider_id": command.provider_id,
            "occurred_at": occurred_at,
            "actor": command.actor,
            "scan_id": command.scan_id,
        }
        self.pending: list[ProviderEvent] = []

    def __call__(self, event_type: type[ProviderEvent], **fields: Any) -> None:
        self.pending.append(event_type(**self.common, **fields))

    def take(self) -> list[ProviderEvent]:
        taken, self.pending = self.pending, []
        return taken


def _changed_fields(old: msgspec.Struct, new: msgspec.Struct) -> tuple[str, ...]:
    return tuple(name for name in old.__struct_fields__ if getattr(old, name) != getattr(new, name))


def _diff_details(emit: _Emitter, state: ProviderState, snapshot: ObservedProvider) -> None:
    assert state.details is not None
    reported: dict[str, Any] = {
        "description": snapshot.description,
        "is_public": snapshot.is_public,
        "support_emails": snapshot.support_emails,
        "auth_endpoint": snapshot.auth_endpoint,
    }
    new = msgspec.structs.replace(
        state.details, **{k: v for k, v in reported.items() if v is not None}
    )
    changed = _changed_fields(state.details, new)
    if changed:
        emit(ProviderDetailsChanged, details=new, changed=changed)


EventSpec = tuple[type[ProviderEvent], dict[str, Any]]


def _diff_entities(
    emit: _Emitter,
    known: Mapping[K, T],
    observed: Mapping[K, T],
    *,
    merge_fields: tuple[str, ...],
    added: Callable[[T], EventSpec],
    changed: Callable[[T, tuple[str, ...]], EventSpec],
    removed: Callable[[K, T], EventSpec],
    may_remove: Callable[[K], bool],
) -> None:
    """Added/changed for observed entities, removed for known ones absent and removable.

    ``merge_fields`` that are ``None`` in the observation keep the known value (the source
    did not report them).
    """
    for key in sorted(observed):  # type: ignore[type-var]
        entity = observed[key]
        previous = known.get(key)
        if previous is None:
            event_type, fields = added(entity)
            emit(event_type, **fields)
            continue
        if merge_fields:
            kept = {f: getattr(previous, f) for f in merge_fields if getattr(entity, f) is None}
            if kept:
                entity = msgspec.structs.replace(entity, **kept)
        fields_changed = _changed_fields(previous, entity)
        if fields_changed:
            event_type, fields = changed(entity, fields_changed)
            emit(event_type, **fields)
    for key in sorted(known.keys() - observed.keys()):  # type: ignore[type-var]
        if may_remove(key):
            event_type, fields = removed(key, known[key])
            emit(event_type, **fields)


class _ItemEvents(msgspec.Struct, frozen=True):
    added: type[ProviderEvent]
    changed: type[ProviderEvent]
    removed: type[ProviderEvent]
    field: str


_FLAVORS = _ItemEvents(FlavorAdded, FlavorChanged, FlavorRemoved, "flavor")
_IMAGES = _ItemEvents(ImageAdded, ImageChanged, ImageRemoved, "image")
_NETWORKS = _ItemEvents(NetworkAdded, NetworkChanged, NetworkRemoved, "network")

CatalogueItem = TypeVar("CatalogueItem", Flavor, Image, Network)


def _diff_items(
    emit: _Emitter,
    known: Mapping[tuple[str, str], CatalogueItem],
    observed_items: tuple[CatalogueItem, ...],
    scanned_regions: set[str],
    narrowable: Callable[[str, str], bool],
    kinds: _ItemEvents,
) -> None:
    """Flavours, images, networks: see the module docstring for the visibility rules."""
    observed = {(i.region, i.uuid): normalized_item(i) for i in observed_items}
    for key in sorted(observed):
        item = observed[key]
        previous = known.get(key)
        if not item.is_shared and previous is not None and not previous.is_shared:
            kept = {p for p in previous.projects if not narrowable(item.region, p)}
            if not kept <= set(item.projects):
                item = msgspec.structs.replace(
                    item, projects=tuple(sorted(kept | set(item.projects)))
                )
        if previous is None:
            emit(kinds.added, **{kinds.field: item})
        elif previous != item:
            emit(kinds.changed, **{kinds.field: item, "changed": _changed_fields(previous, item)})
    for key in sorted(known.keys() - observed.keys()):
        previous = known[key]
        if previous.region not in scanned_regions:
            continue
        remaining = tuple(p for p in previous.projects if not narrowable(previous.region, p))
        if previous.is_shared or not remaining:
            emit(kinds.removed, region=previous.region, uuid=previous.uuid, name=previous.name)
        elif remaining != previous.projects:
            narrowed = msgspec.structs.replace(previous, projects=remaining)
            emit(kinds.changed, **{kinds.field: narrowed, "changed": ("projects",)})


def normalized_item(item: CatalogueItem) -> CatalogueItem:
    """Access lists sorted and unique (empty for shared items), tags sorted and unique."""
    projects = () if item.is_shared else tuple(sorted(set(item.projects)))
    changes: dict[str, Any] = {}
    if projects != item.projects:
        changes["projects"] = projects
    if isinstance(item, Image | Network):
        tags = tuple(sorted(set(item.tags)))
        if tags != item.tags:
            changes["tags"] = tags
    return msgspec.structs.replace(item, **changes) if changes else item


def _sorted_projects(sla: Any) -> Any:
    projects = tuple(sorted(set(sla.projects)))
    return sla if projects == sla.projects else msgspec.structs.replace(sla, projects=projects)
