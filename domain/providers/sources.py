"""The two observed shapes that exist today, parsed strictly and normalised to one snapshot.

1. A Federation Registry provider tree, as the Feeder PUTs it (``provider-model.md`` 9.1):
   :func:`parse_provider_tree`, :func:`observe_tree`.
2. The Feeder's Kafka message, one per provider x region x project, v1.2.0-1.4.0 (4.6, 9.3):
   :func:`parse_feeder_message`, :func:`observe_feeder_messages`.

Parsing is strict about what the registry itself enforces (section 3.5): required fields,
types, enumerations, ranges, uniqueness of natural keys, references to the provider's own
projects, private items with projects, no GPU vendor without GPUs, SLA dates in order. Every
problem is reported with its path; any problem raises :class:`InvalidObservation` and nothing
is observed. Unknown fields are ignored (registry reads add ``uid``s, newer Feeders add keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from domain.identity import Actor

from .commands import ObserveProvider
from .decider import normalized_item, validate_snapshot
from .errors import InvalidObservation
from .naming import canonical_provider_id
from .values import (
    Flavor,
    Image,
    Location,
    Network,
    ObservedProvider,
    Project,
    ProviderStatus,
    ProviderType,
    QuotaKind,
    QuotaRecord,
    QuotaValues,
    Region,
    ScanScope,
    ScopeFailure,
    Service,
    ServiceType,
    Sla,
    TrustedIdentityProvider,
    UserGroup,
)

Text = Annotated[str, msgspec.Meta(min_length=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]
QuotaNumber = Annotated[int, msgspec.Meta(ge=-1)]
Factor = Annotated[float, msgspec.Meta(ge=0)]
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
Mtu = Annotated[int, msgspec.Meta(gt=0)]


class _Input(msgspec.Struct, kw_only=True):
    """Input shapes accept unknown fields: sources add keys over versions."""


class InLocation(_Input, kw_only=True):
    site: Text
    country: Text
    latitude: Latitude | None = None
    longitude: Longitude | None = None


class InFlavor(_Input, kw_only=True):
    uuid: Text
    name: Text
    description: str | None = ""
    vcpus: Count = 0
    ram: Count = 0
    disk: Count = 0
    swap: Count = 0
    ephemeral: Count = 0
    infiniband: bool = False
    gpus: Count = 0
    gpu_model: str | None = None
    gpu_vendor: str | None = None
    local_storage: str | None = None
    is_shared: bool = True
    projects: list[Text] = []


class InImage(_Input, kw_only=True):
    uuid: Text
    name: Text
    description: str | None = ""
    os_type: str | None = None
    os_distro: str | None = None
    os_version: str | None = None
    architecture: str | None = None
    kernel_id: str | None = None
    cuda_support: bool = False
    gpu_driver: bool = False
    created_at: datetime | None = None
    tags: list[str] = []
    is_shared: bool = True
    projects: list[Text] = []


class InNetwork(_Input, kw_only=True):
    uuid: Text
    name: Text
    description: str | None = ""
    is_router_external: bool = False
    is_default: bool = False
    mtu: Mtu | None = None
    proxy_host: str | None = None
    proxy_user: str | None = None
    tags: list[str] = []
    is_shared: bool = True
    projects: list[Text] = []


class _InQuota(_Input, kw_only=True, tag_field="type"):
    project: str | None = None
    usage: bool = False
    per_user: bool = False
    description: str | None = ""


class InComputeQuota(_InQuota, kw_only=True, tag="compute"):
    cores: Count | None = None
    instances: Count | None = None
    ram: Count | None = None
    requests_cpu: Count | None = None
    limits_cpu: Count | None = None
    requests_memory: Count | None = None
    limits_memory: Count | None = None
    pods: Count | None = None


class InBlockStorageQuota(_InQuota, kw_only=True, tag="block-storage"):
    gigabytes: QuotaNumber | None = None
    per_volume_gigabytes: QuotaNumber | None = None
    volumes: QuotaNumber | None = None
    pvcs: QuotaNumber | None = None
    storage: QuotaNumber | None = None
    requests_ephemeral_storage: QuotaNumber | None = None
    limits_ephemeral_storage: QuotaNumber | None = None


class InNetworkQuota(_InQuota, kw_only=True, tag="network"):
    public_ips: QuotaNumber | None = None
    networks: QuotaNumber | None = None
    ports: QuotaNumber | None = None
    security_groups: QuotaNumber | None = None
    security_group_rules: QuotaNumber | None = None


class InObjectStoreQuota(_InQuota, kw_only=True, tag="object-store"):
    bytes: QuotaNumber | None = None
    containers: QuotaNumber | None = None
    objects: QuotaNumber | None = None


InQuota = InComputeQuota | InBlockStorageQuota | InNetworkQuota | InObjectStoreQuota


class InService(_Input, kw_only=True):
    endpoint: Text
    name: Text
    description: str | None = ""
    quotas: list[InQuota] = []


class InComputeService(InService, kw_only=True):
    flavors: list[InFlavor] = []
    images: list[InImage] = []


class InNetworkService(InService, kw_only=True):
    networks: list[InNetwork] = []


class InRegion(_Input, kw_only=True):
    name: Text
    description: str | None = ""
    overbooking_cpu: Factor = 1.0
    overbooking_ram: Factor = 1.0
    bandwidth_in: Factor = 10.0
    bandwidth_out: Factor = 10.0
    location: InLocation | None = None
    identity_services: list[InService] = []
    compute_services: list[InComputeService] = []
    block_storage_services: list[InService] = []
    network_services: list[InNetworkService] = []
    object_store_services: list[InService] = []


class InSla(_Input, kw_only=True):
    doc_uuid: Text
    start_date: date
    end_date: date
    project: Text | None = None
    projects: list[Text] = []


class InUserGroup(_Input, kw_only=True):
    name: Text
    description: str | None = ""
    sla: InSla


class InAuthMethod(_Input, kw_only=True):
    idp_name: str | None = None
    protocol: str | None = None
    audience: str | None = None


class InIdentityProvider(_Input, kw_only=True):
    endpoint: Text
    group_claim: Text
    description: str | None = ""
    relationship: InAuthMethod | None = None
    user_groups: list[InUserGroup] = []


class InProject(_Input, kw_only=True):
    uuid: Text
    name: Text
    description: str | None = ""


class ProviderTree(_Input, kw_only=True):
    """A Federation Registry provider tree (``POST/PUT /providers``)."""

    name: Text
    type: ProviderType
    description: str | None = ""
    status: Literal["active", "maintenance", "limited", "removed"] = "active"
    is_public: bool = False
    support_emails: list[str] = []
    projects: list[InProject] = []
    identity_providers: list[InIdentityProvider] = []
    regions: list[InRegion] = []


FEEDER_MESSAGE_VERSIONS = ("1.2.0", "1.3.0", "1.4.0")


class FeederMessage(_Input, kw_only=True):
    """One Feeder Kafka message: what one region x project connection saw (v1.2.0-1.4.0)."""

    msg_version: Text
    timestamp: datetime | None = None
    provider_name: Text
    provider_type: ProviderType
    identity_endpoint: str | None = None
    region_name: Text
    overbooking_cpu: Factor = 1.0
    overbooking_ram: Factor = 1.0
    bandwidth_in: Factor = 10.0
    bandwidth_out: Factor = 10.0
    issuer_endpoint: Text
    issuer_name: str | None = None
    issuer_protocol: str | None = None
    issuer_audience: str | None = None
    user_group: Text
    project_id: Text
    compute_services: list[InComputeService] = []
    block_storage_services: list[InService] = []
    network_services: list[InNetworkService] = []
    object_store_services: list[InService] = []


SERVICE_NAMES: dict[ServiceType, frozenset[str]] = {
    ServiceType.COMPUTE: frozenset({"org.openstack.nova", "v1"}),
    ServiceType.BLOCK_STORAGE: frozenset({"org.openstack.cinder", "storage.k8s.io/v1"}),
    ServiceType.IDENTITY: frozenset({"org.openstack.keystone", "v1"}),
    ServiceType.NETWORK: frozenset({"org.openstack.neutron"}),
    ServiceType.OBJECT_STORE: frozenset({"org.openstack.swift", "org.openstack.swift-s3"}),
}
"""The registry's allowed service names per type (section 2.2)."""

OS_TYPES = {"linux": "Linux", "windows": "Windows", "macos": "MacOS"}

_QUOTA_SERVICE = {
    InComputeQuota: ServiceType.COMPUTE,
    InBlockStorageQuota: ServiceType.BLOCK_STORAGE,
    InNetworkQuota: ServiceType.NETWORK,
    InObjectStoreQuota: ServiceType.OBJECT_STORE,
}

In = TypeVar("In", bound=msgspec.Struct)


def _convert(data: Any, type_: type[In], source: str) -> In:
    if isinstance(data, type_):
        return data
    try:
        if isinstance(data, bytes | bytearray | memoryview | str):
            return msgspec.json.decode(data, type=type_)
        return msgspec.convert(data, type_)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidObservation(source, [str(exc)]) from None


def parse_provider_tree(data: bytes | str | Mapping[str, Any] | ProviderTree) -> ProviderTree:
    """A provider tree from JSON or a decoded mapping; raises :class:`InvalidObservation`."""
    tree = _convert(data, ProviderTree, "provider tree")
    problems = _TreeChecker().check(tree)
    if problems:
        raise InvalidObservation("provider tree", problems)
    return tree


def parse_feeder_message(data: bytes | str | Mapping[str, Any] | FeederMessage) -> FeederMessage:
    """A Feeder message from JSON or a decoded mapping; raises :class:`InvalidObservation`."""
    message = _convert(data, FeederMessage, "Feeder message")
    problems: list[str] = []
    if message.msg_version not in FEEDER_MESSAGE_VERSIONS:
        problems.append(
            f"msg_version: {message.msg_version!r} is not supported "
            f"(supported: {', '.join(FEEDER_MESSAGE_VERSIONS)})"
        )
    checker = _TreeChecker(projects=None, strict_projects=False)
    region = _message_region(message)
    checker.check_region(region, "")
    for path, quota in checker.quotas:
        if quota.project is not None and quota.project != message.project_id:
            problems.append(
                f"{path}.project: {quota.project!r} is not the message's project "
                f"{message.project_id!r}"
            )
    problems.extend(checker.problems)
    if problems:
        raise InvalidObservation("Feeder message", problems)
    return message


class _TreeChecker:
    """Section 3.5's validation rules, with paths."""

    def __init__(self, projects: set[str] | None = None, *, strict_projects: bool = True):
        self.projects = projects
        self.strict_projects = strict_projects
        self.problems: list[str] = []
        self.quotas: list[tuple[str, _InQuota]] = []

    def check(self, tree: ProviderTree) -> list[str]:
        self.projects = {p.uuid for p in tree.projects}
        self._unique("projects", [p.uuid for p in tree.projects], "uuid")
        self._unique("projects", [p.name for p in tree.projects], "name")
        self._unique(
            "identity_providers", [i.endpoint for i in tree.identity_providers], "endpoint"
        )
        self._unique("regions", [r.name for r in tree.regions], "name")
        sla_groups: dict[str, str] = {}
        project_slas: dict[str, str] = {}
        for i, idp in enumerate(tree.identity_providers):
            path = f"identity_providers[{i}]"
            self._unique(f"{path}.user_groups", [g.name for g in idp.user_groups], "name")
            for j, group in enumerate(idp.user_groups):
                gpath = f"{path}.user_groups[{j}].sla"
                sla = group.sla
                owner = f"{idp.endpoint} {group.name}"
                if sla_groups.setdefault(sla.doc_uuid, owner) != owner:
                    self.problems.append(
                        f"{gpath}.doc_uuid: {sla.doc_uuid} is already the SLA of another group"
                    )
                if sla.start_date >= sla.end_date:
                    self.problems.append(f"{gpath}: start_date must be before end_date")
                sla_projects = _sla_projects(sla)
                if not sla_projects:
                    self.problems.append(f"{gpath}: names no project")
                for project in sla_projects:
                    self._known_project(f"{gpath}.project", project)
                    if project_slas.setdefault(project, sla.doc_uuid) != sla.doc_uuid:
                        self.problems.append(
                            f"{gpath}.project: {project} is already covered by SLA "
                            f"{project_slas[project]}"
                        )
        for i, region in enumerate(tree.regions):
            self.check_region(region, f"regions[{i}].")
        for path, quota in self.quotas:
            if quota.project is None:
                self.problems.append(f"{path}.project: required")
            else:
                self._known_project(f"{path}.project", quota.project)
        return self.problems

    def check_region(self, region: InRegion, prefix: str) -> None:
        services: list[tuple[str, ServiceType, InService]] = [
            *(
                (f"{prefix}identity_services[{i}]", ServiceType.IDENTITY, s)
                for i, s in enumerate(region.identity_services)
            ),
            *(
                (f"{prefix}compute_services[{i}]", ServiceType.COMPUTE, s)
                for i, s in enumerate(region.compute_services)
            ),
            *(
                (f"{prefix}block_storage_services[{i}]", ServiceType.BLOCK_STORAGE, s)
                for i, s in enumerate(region.block_storage_services)
            ),
            *(
                (f"{prefix}network_services[{i}]", ServiceType.NETWORK, s)
                for i, s in enumerate(region.network_services)
            ),
            *(
                (f"{prefix}object_store_services[{i}]", ServiceType.OBJECT_STORE, s)
                for i, s in enumerate(region.object_store_services)
            ),
        ]
        self._unique(
            f"{prefix.rstrip('.') or 'region'} services",
            [s.endpoint for _, _, s in services],
            "endpoint",
        )
        quota_keys: dict[tuple[ServiceType, str | None, bool, bool], str] = {}
        for path, service_type, service in services:
            if service.name not in SERVICE_NAMES[service_type]:
                allowed = ", ".join(sorted(SERVICE_NAMES[service_type]))
                self.problems.append(
                    f"{path}.name: {service.name!r} is not a {service_type} service "
                    f"(allowed: {allowed})"
                )
            for k, quota in enumerate(service.quotas):
                qpath = f"{path}.quotas[{k}]"
                self.quotas.append((qpath, quota))
                if _QUOTA_SERVICE[type(quota)] != service_type:
                    self.problems.append(
                        f"{qpath}.type: a {_QUOTA_SERVICE[type(quota)]} quota in a "
                        f"{service_type} service"
                    )
                if quota.usage and quota.per_user:
                    self.problems.append(f"{qpath}: usage and per_user cannot both be true")
                key = (service_type, quota.project, quota.usage, quota.per_user)
                if key in quota_keys:
                    self.problems.append(
                        f"{qpath}: a second {_kind(quota)} {service_type} quota for project "
                        f"{quota.project} in this region (first at {quota_keys[key]})"
                    )
                quota_keys.setdefault(key, qpath)
            if isinstance(service, InComputeService):
                self._unique(f"{path}.flavors", [f.uuid for f in service.flavors], "uuid")
                self._unique(f"{path}.images", [m.uuid for m in service.images], "uuid")
                for k, flavor in enumerate(service.flavors):
                    fpath = f"{path}.flavors[{k}]"
                    self._private(fpath, flavor.is_shared, flavor.projects)
                    if flavor.gpus == 0 and (flavor.gpu_vendor or flavor.gpu_model):
                        self.problems.append(
                            f"{fpath}: gpu_vendor and gpu_model must be null when gpus is 0"
                        )
                for k, image in enumerate(service.images):
                    ipath = f"{path}.images[{k}]"
                    self._private(ipath, image.is_shared, image.projects)
                    if image.os_type is not None and image.os_type.lower() not in OS_TYPES:
                        self.problems.append(
                            f"{ipath}.os_type: {image.os_type!r} is not one of "
                            f"{', '.join(OS_TYPES.values())}"
                        )
            if isinstance(service, InNetworkService):
                self._unique(f"{path}.networks", [n.uuid for n in service.networks], "uuid")
                for k, network in enumerate(service.networks):
                    self._private(f"{path}.networks[{k}]", network.is_shared, network.projects)

    def _private(self, path: str, is_shared: bool, projects: list[str]) -> None:
        if is_shared:
            return
        if not projects:
            self.problems.append(f"{path}.projects: a private item needs at least one project")
        if self.strict_projects:
            for project in projects:
                self._known_project(f"{path}.projects", project)

    def _known_project(self, path: str, project: str) -> None:
        if self.projects is not None and project not in self.projects:
            self.problems.append(f"{path}: {project!r} is not one of the provider's projects")

    def _unique(self, path: str, values: Iterable[str], what: str) -> None:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                self.problems.append(f"{path}: {what} {value!r} appears twice")
            seen.add(value)


def _kind(quota: _InQuota) -> QuotaKind:
    if quota.usage:
        return QuotaKind.USAGE
    return QuotaKind.PER_USER if quota.per_user else QuotaKind.LIMIT


def _sla_projects(sla: InSla) -> list[str]:
    projects = list(sla.projects)
    if sla.project is not None and sla.project not in projects:
        projects.insert(0, sla.project)
    return projects


# --- normalisation ---------------------------------------------------------------------------


def snapshot_from_tree(
    tree: ProviderTree, *, observed_at: datetime | None = None
) -> tuple[ObservedProvider, tuple[ScanScope, ...]]:
    """The canonical snapshot of a (parsed) tree, and the scopes it shows scanned fine.

    A tree does not say which connections failed, only whether some did (``limited``): the
    scopes scanned fine are those with quota records (every successful Feeder connection
    reports its project's quotas). A ``limited`` tree is not complete; a ``maintenance`` or
    ``removed`` one neither (the Feeder empties it), and its status is recorded.
    """
    status = None if tree.status == "limited" else ProviderStatus(tree.status)
    catalogue = _Catalogue()
    for region in tree.regions:
        catalogue.add_region(region, location=True)
    idps: list[TrustedIdentityProvider] = []
    groups: list[UserGroup] = []
    slas: list[Sla] = []
    for idp in tree.identity_providers:
        auth = idp.relationship or InAuthMethod()
        idps.append(
            TrustedIdentityProvider(
                issuer=idp.endpoint,
                group_claim=idp.group_claim,
                idp_name=auth.idp_name,
                protocol=auth.protocol,
                audience=auth.audience,
            )
        )
        for group in idp.user_groups:
            groups.append(UserGroup(issuer=idp.endpoint, name=group.name))
            slas.append(
                Sla(
                    sla_id=group.sla.doc_uuid,
                    issuer=idp.endpoint,
                    user_group=group.name,
                    start_date=group.sla.start_date,
                    end_date=group.sla.end_date,
                    projects=tuple(sorted(_sla_projects(group.sla))),
                )
            )
    snapshot = ObservedProvider(
        name=tree.name,
        type=tree.type,
        status=status,
        description=tree.description or "",
        is_public=tree.is_public,
        support_emails=tuple(tree.support_emails),
        auth_endpoint=_auth_endpoint(tree.regions),
        regions=tuple(catalogue.regions),
        services=tuple(catalogue.services),
        projects=tuple(
            Project(project_id=p.uuid, name=p.name, description=p.description or "")
            for p in tree.projects
        ),
        identity_providers=tuple(idps),
        user_groups=tuple(groups),
        slas=tuple(slas),
        flavors=tuple(catalogue.flavors.values()),
        images=tuple(catalogue.images.values()),
        networks=tuple(catalogue.networks.values()),
        quotas=tuple(catalogue.quotas),
        complete=status == ProviderStatus.ACTIVE,
        observed_at=observed_at,
    )
    scopes = tuple(
        sorted({ScanScope(region=q.region, project_id=q.project_id) for q in snapshot.quotas})
    )
    return snapshot, scopes


def observe_tree(
    data: bytes | str | Mapping[str, Any] | ProviderTree,
    *,
    actor: Actor,
    provider_id: str | None = None,
    scan_id: str | None = None,
    observed_at: datetime | None = None,
    scopes_failed: Sequence[ScopeFailure] = (),
) -> ObserveProvider:
    """Parse a provider tree into the command that observes it.

    ``provider_id`` defaults to the canonical id of the tree's ``(name, type)``; pass the id
    the alias directory resolves when the provider was registered under another one.
    ``scopes_failed`` (when the caller knows which connections failed) makes the snapshot
    incomplete, as the Feeder drops what failed connections would have contributed.
    """
    tree = parse_provider_tree(data)
    snapshot, scopes = snapshot_from_tree(tree, observed_at=observed_at)
    if scopes_failed:
        snapshot = msgspec.structs.replace(snapshot, complete=False)
    failed = {f.scope for f in scopes_failed}
    return _command(
        snapshot,
        "provider tree",
        actor=actor,
        provider_id=provider_id,
        scan_id=scan_id,
        scopes_ok=tuple(s for s in scopes if s not in failed),
        scopes_failed=tuple(scopes_failed),
    )


def observe_feeder_messages(
    messages: Iterable[bytes | str | Mapping[str, Any] | FeederMessage],
    *,
    actor: Actor,
    provider_id: str | None = None,
    scan_id: str | None = None,
    scopes_failed: Sequence[ScopeFailure] = (),
) -> ObserveProvider:
    """The command observing Feeder messages of one provider (one or more scopes of a run).

    Each message is a scope scanned fine. The snapshot is never complete (a message does not
    list the provider's other regions or projects), so these observations add and change, and
    remove only what their own scopes prove gone. A message says which group uses the project
    but not under which SLA: it yields a synthetic SLA without dates (:func:`feeder_sla_id`).
    """
    parsed = [parse_feeder_message(m) for m in messages]
    if not parsed:
        raise InvalidObservation("Feeder messages", ["no message"])
    first = parsed[0]
    problems = [
        f"message {i}: provider {m.provider_name} ({m.provider_type}) is not "
        f"{first.provider_name} ({first.provider_type})"
        for i, m in enumerate(parsed)
        if (m.provider_name, m.provider_type) != (first.provider_name, first.provider_type)
    ]
    seen: dict[ScanScope, int] = {}
    for i, m in enumerate(parsed):
        scope = ScanScope(region=m.region_name, project_id=m.project_id)
        if scope in seen:
            problems.append(
                f"message {i}: scope {m.region_name}/{m.project_id} repeats message {seen[scope]}"
            )
        seen.setdefault(scope, i)
    if problems:
        raise InvalidObservation("Feeder messages", problems)

    catalogue = _Catalogue()
    idps: dict[str, TrustedIdentityProvider] = {}
    groups: dict[tuple[str, str], UserGroup] = {}
    slas: dict[str, Sla] = {}
    projects: dict[str, Project] = {}
    for message in parsed:
        catalogue.add_region(
            _message_region(message), location=False, default_project=message.project_id
        )
        if message.identity_endpoint:
            catalogue.add_service(
                message.region_name,
                ServiceType.IDENTITY,
                "v1"
                if message.provider_type == ProviderType.KUBERNETES
                else "org.openstack.keystone",
                message.identity_endpoint,
            )
        projects.setdefault(message.project_id, Project(project_id=message.project_id))
        idps.setdefault(
            message.issuer_endpoint,
            TrustedIdentityProvider(
                issuer=message.issuer_endpoint,
                idp_name=message.issuer_name,
                protocol=message.issuer_protocol,
                audience=message.issuer_audience,
            ),
        )
        groups.setdefault(
            (message.issuer_endpoint, message.user_group),
            UserGroup(issuer=message.issuer_endpoint, name=message.user_group),
        )
        sla_id = feeder_sla_id(message.issuer_endpoint, message.user_group, message.project_id)
        slas.setdefault(
            sla_id,
            Sla(
                sla_id=sla_id,
                issuer=message.issuer_endpoint,
                user_group=message.user_group,
                projects=(message.project_id,),
            ),
        )
    timestamps = [m.timestamp for m in parsed if m.timestamp is not None]
    snapshot = ObservedProvider(
        name=first.provider_name,
        type=first.provider_type,
        auth_endpoint=first.identity_endpoint,
        regions=tuple(catalogue.regions),
        services=tuple(catalogue.services),
        projects=tuple(projects.values()),
        identity_providers=tuple(idps.values()),
        user_groups=tuple(groups.values()),
        slas=tuple(slas.values()),
        flavors=tuple(catalogue.flavors.values()),
        images=tuple(catalogue.images.values()),
        networks=tuple(catalogue.networks.values()),
        quotas=tuple(catalogue.quotas),
        complete=False,
        observed_at=max(timestamps) if timestamps else None,
    )
    failed = {f.scope for f in scopes_failed}
    return _command(
        snapshot,
        "Feeder messages",
        actor=actor,
        provider_id=provider_id,
        scan_id=scan_id,
        scopes_ok=tuple(sorted(s for s in seen if s not in failed)),
        scopes_failed=tuple(scopes_failed),
    )


def feeder_sla_id(issuer: str, user_group: str, project_id: str) -> str:
    """The synthetic SLA id for "``user_group`` of ``issuer`` uses ``project_id``"."""
    return f"feeder:{issuer}|{user_group}|{project_id}"


def _command(
    snapshot: ObservedProvider,
    source: str,
    *,
    actor: Actor,
    provider_id: str | None,
    scan_id: str | None,
    scopes_ok: tuple[ScanScope, ...],
    scopes_failed: tuple[ScopeFailure, ...],
) -> ObserveProvider:
    problems = validate_snapshot(snapshot)
    if problems:
        raise InvalidObservation(source, problems)
    return ObserveProvider(
        provider_id=provider_id or canonical_provider_id(snapshot.name, snapshot.type),
        actor=actor,
        snapshot=snapshot,
        scopes_scanned_ok=scopes_ok,
        scopes_failed=scopes_failed,
        scan_id=scan_id,
    )


def _message_region(message: FeederMessage) -> InRegion:
    return InRegion(
        name=message.region_name,
        overbooking_cpu=message.overbooking_cpu,
        overbooking_ram=message.overbooking_ram,
        bandwidth_in=message.bandwidth_in,
        bandwidth_out=message.bandwidth_out,
        compute_services=message.compute_services,
        block_storage_services=message.block_storage_services,
        network_services=message.network_services,
        object_store_services=message.object_store_services,
    )


def _auth_endpoint(regions: list[InRegion]) -> str | None:
    for region in regions:
        for service in region.identity_services:
            return service.endpoint
    return None


Item = TypeVar("Item", Flavor, Image, Network)


class _Catalogue:
    """Merges services, items and quotas of one or more regions as the Feeder does (4.4):
    services by endpoint, items by uuid (first seen wins, private project lists unioned)."""

    def __init__(self) -> None:
        self.regions: list[Region] = []
        self._region_names: set[str] = set()
        self.services: list[Service] = []
        self._endpoints: set[tuple[str, str]] = set()
        self.flavors: dict[tuple[str, str], Flavor] = {}
        self.images: dict[tuple[str, str], Image] = {}
        self.networks: dict[tuple[str, str], Network] = {}
        self.quotas: list[QuotaRecord] = []

    def add_region(
        self, region: InRegion, *, location: bool, default_project: str | None = None
    ) -> None:
        name = region.name
        if name not in self._region_names:
            self._region_names.add(name)
            self.regions.append(
                Region(
                    name=name,
                    overbooking_cpu=region.overbooking_cpu,
                    overbooking_ram=region.overbooking_ram,
                    bandwidth_in=region.bandwidth_in,
                    bandwidth_out=region.bandwidth_out,
                    location=_location(region.location) if location else None,
                )
            )
        for service in region.identity_services:
            self.add_service(name, ServiceType.IDENTITY, service.name, service.endpoint)
        for compute in region.compute_services:
            self.add_service(name, ServiceType.COMPUTE, compute.name, compute.endpoint)
            for f in compute.flavors:
                self._merge(self.flavors, _flavor(name, f))
            for m in compute.images:
                self._merge(self.images, _image(name, m))
            self._quotas(name, compute, default_project)
        for storage in region.block_storage_services:
            self.add_service(name, ServiceType.BLOCK_STORAGE, storage.name, storage.endpoint)
            self._quotas(name, storage, default_project)
        for network_service in region.network_services:
            self.add_service(
                name, ServiceType.NETWORK, network_service.name, network_service.endpoint
            )
            for n in network_service.networks:
                self._merge(self.networks, _network(name, n))
            self._quotas(name, network_service, default_project)
        for store in region.object_store_services:
            self.add_service(name, ServiceType.OBJECT_STORE, store.name, store.endpoint)
            self._quotas(name, store, default_project)

    def add_service(self, region: str, type_: ServiceType, name: str, endpoint: str) -> None:
        if (region, endpoint) not in self._endpoints:
            self._endpoints.add((region, endpoint))
            self.services.append(Service(region=region, type=type_, name=name, endpoint=endpoint))

    def _merge(self, items: dict[tuple[str, str], Item], item: Item) -> None:
        key: tuple[str, str] = (item.region, item.uuid)
        if key not in items:
            items[key] = normalized_item(item)
            return
        if not items[key].is_shared and not item.is_shared:
            projects = tuple(sorted({*items[key].projects, *item.projects}))
            items[key] = msgspec.structs.replace(items[key], projects=projects)

    def _quotas(self, region: str, service: InService, default_project: str | None) -> None:
        for quota in service.quotas:
            project = quota.project or default_project
            assert project is not None  # the checkers require it
            self.quotas.append(
                QuotaRecord(
                    region=region,
                    project_id=project,
                    service_type=_QUOTA_SERVICE[type(quota)],
                    kind=_kind(quota),
                    values=_quota_values(quota),
                )
            )


def _location(location: InLocation | None) -> Location | None:
    if location is None:
        return None
    return Location(
        site=location.site,
        country=location.country,
        latitude=location.latitude,
        longitude=location.longitude,
    )


def _flavor(region: str, f: InFlavor) -> Flavor:
    return Flavor(
        region=region,
        uuid=f.uuid,
        name=f.name,
        description=f.description or "",
        vcpus=f.vcpus,
        ram_mib=f.ram,
        disk_gib=f.disk,
        swap_mib=f.swap,
        ephemeral_gib=f.ephemeral,
        gpus=f.gpus,
        gpu_vendor=f.gpu_vendor if f.gpus else None,
        gpu_model=f.gpu_model if f.gpus else None,
        infiniband=f.infiniband,
        local_storage=f.local_storage,
        is_shared=f.is_shared,
        projects=tuple(f.projects),
    )


def _image(region: str, m: InImage) -> Image:
    return Image(
        region=region,
        uuid=m.uuid,
        name=m.name,
        description=m.description or "",
        os_type=OS_TYPES[m.os_type.lower()] if m.os_type else None,
        os_distro=m.os_distro,
        os_version=m.os_version,
        architecture=m.architecture,
        kernel_id=m.kernel_id,
        cuda_support=m.cuda_support,
        gpu_driver=m.gpu_driver,
        created_at=m.created_at,
        tags=tuple(m.tags),
        is_shared=m.is_shared,
        projects=tuple(m.projects),
    )


def _network(region: str, n: InNetwork) -> Network:
    return Network(
        region=region,
        uuid=n.uuid,
        name=n.name,
        description=n.description or "",
        is_router_external=n.is_router_external,
        is_default=n.is_default,
        mtu=n.mtu,
        proxy_host=n.proxy_host,
        proxy_user=n.proxy_user,
        tags=tuple(n.tags),
        is_shared=n.is_shared,
        projects=tuple(n.projects),
    )


def _quota_values(quota: _InQuota) -> QuotaValues:
    fields = {
        name: getattr(quota, name)
        for name in quota.__struct_fields__
        if name not in {"project", "usage", "per_user", "description"}
    }
    if "ram" in fields:
        fields["ram_mib"] = fields.pop("ram")
    return QuotaValues(**fields)
