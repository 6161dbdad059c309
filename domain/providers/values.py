"""Value objects of the provider catalogue: vocabularies, catalogue entities, observations.

The entity model follows the Federation Registry (fedreg lib v1.3.x, ``provider-model.md``
section 2) with two deliberate changes: units are explicit in field names (``ram_mib``,
``disk_gib``), and every catalogue item carries the region it belongs to, so that an item's
natural key is a plain tuple (``(region, uuid)`` for flavours, images and networks).

Natural keys (section 2.3) are the identities used everywhere; the registry's ``uid``s are not
stable and never appear here.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

import msgspec


class ProviderType(enum.StrEnum):
    OPENSTACK = "openstack"
    KUBERNETES = "kubernetes"


class ProviderStatus(enum.StrEnum):
    """Operational (lifecycle) status of a provider, as an operator or the site config sets it.

    The registry's fourth value, ``limited``, is not a lifecycle status: the Feeder sets it when
    some scan failed. Here scan outcomes are their own facts (:class:`Availability`), so
    ``limited`` on input means "status not reported" (see ``sources.py``).
    """

    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    REMOVED = "removed"


class Availability(enum.StrEnum):
    """What the latest scans say about a provider's scopes (derived, never set by hand)."""

    UNKNOWN = "unknown"
    AVAILABLE = "available"
    PARTIALLY_AVAILABLE = "partially_available"
    UNAVAILABLE = "unavailable"


class ServiceType(enum.StrEnum):
    COMPUTE = "compute"
    BLOCK_STORAGE = "block-storage"
    IDENTITY = "identity"
    NETWORK = "network"
    OBJECT_STORE = "object-store"


class QuotaKind(enum.StrEnum):
    """The three quota records the registry keeps per (service, project)."""

    LIMIT = "limit"
    PER_USER = "per_user"
    USAGE = "usage"


class AliasSystem(enum.StrEnum):
    """Systems that name providers their own way (``provider-model.md`` section 12 #2)."""

    REGISTRY = "registry"  # Federation Registry / Feeder: the provider ``name``
    MONITORING = "monitoring"  # Rally environment names, e.g. ``recas_bari`` (per region)
    RANKER = "ranker"  # INFN ai-ranker ``provider_name`` (per region when it differs)
    FEDERATION_MANAGER = "fed-mgr"  # Federation-Manager provider id


class ChangeSource(enum.StrEnum):
    """Where a lifecycle change came from: a scan of the site config, or an operator."""

    OBSERVATION = "observation"
    OPERATOR = "operator"


# --- provider-level values -------------------------------------------------------------------


class ProviderAlias(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """A name another system uses for the provider, optionally only for one of its regions."""

    system: AliasSystem
    name: str
    region: str | None = None


class ProviderDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Descriptive fields of a provider. ``name`` and ``type`` are the registry's key."""

    name: str
    type: ProviderType
    description: str = ""
    is_public: bool = False
    support_emails: tuple[str, ...] = ()
    auth_endpoint: str | None = None


# --- catalogue entities ----------------------------------------------------------------------


class Location(msgspec.Struct, frozen=True, kw_only=True):
    site: str
    country: str
    latitude: float | None = None
    longitude: float | None = None


class Region(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    overbooking_cpu: float = 1.0
    overbooking_ram: float = 1.0
    bandwidth_in: float = 10.0
    bandwidth_out: float = 10.0
    location: Location | None = None


class Service(msgspec.Struct, frozen=True, kw_only=True):
    """A service endpoint of a region; key ``(region, endpoint)``."""

    region: str
    type: ServiceType
    name: str
    endpoint: str


class Project(msgspec.Struct, frozen=True, kw_only=True):
    """A project (Keystone project, or Kubernetes namespace); key ``project_id`` (IaaS id).

    ``name`` is ``None`` when the source did not report it (Feeder messages carry only the id).
    """

    project_id: str
    name: str | None = None
    description: str = ""


class TrustedIdentityProvider(msgspec.Struct, frozen=True, kw_only=True):
    """An OIDC issuer the provider accepts, with how it is configured there; key ``issuer``.

    ``idp_name``/``protocol`` are the Keystone federation settings, ``audience`` the Kubernetes
    one. ``group_claim`` is ``None`` when the source did not report it.
    """

    issuer: str
    group_claim: str | None = None
    idp_name: str | None = None
    protocol: str | None = None
    audience: str | None = None


class UserGroup(msgspec.Struct, frozen=True, kw_only=True):
    """A user group of an issuer that has access to the provider; key ``(issuer, name)``."""

    issuer: str
    name: str


class Sla(msgspec.Struct, frozen=True, kw_only=True):
    """An agreement giving a user group the use of some of this provider's projects.

    Key ``sla_id`` (the registry's ``doc_uuid``). ``projects`` are the provider's projects it
    covers (an SLA may span providers; each provider stream holds its own part). Dates are
    ``None`` when unknown: Feeder messages say which group uses a project but not under which
    SLA, so they yield a synthetic SLA (see :func:`domain.providers.sources.feeder_sla_id`).
    """

    sla_id: str
    issuer: str
    user_group: str
    start_date: date | None = None
    end_date: date | None = None
    projects: tuple[str, ...] = ()


class Flavor(msgspec.Struct, frozen=True, kw_only=True):
    """A Nova flavour of a region; key ``(region, uuid)``.

    Shared flavours are visible to every project of the region; private ones to ``projects``.
    """

    region: str
    uuid: str
    name: str
    description: str = ""
    vcpus: int = 0
    ram_mib: int = 0
    disk_gib: int = 0
    swap_mib: int = 0
    ephemeral_gib: int = 0
    gpus: int = 0
    gpu_vendor: str | None = None
    gpu_model: str | None = None
    infiniband: bool = False
    local_storage: str | None = None
    is_shared: bool = True
    projects: tuple[str, ...] = ()


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """A Glance image of a region; key ``(region, uuid)`` (the same uuid may be in several)."""

    region: str
    uuid: str
    name: str
    description: str = ""
    os_type: str | None = None
    os_distro: str | None = None
    os_version: str | None = None
    architecture: str | None = None
    kernel_id: str | None = None
    cuda_support: bool = False
    gpu_driver: bool = False
    created_at: datetime | None = None
    tags: tuple[str, ...] = ()
    is_shared: bool = True
    projects: tuple[str, ...] = ()


class Network(msgspec.Struct, frozen=True, kw_only=True):
    """A Neutron network of a region; key ``(region, uuid)``."""

    region: str
    uuid: str
    name: str
    description: str = ""
    is_router_external: bool = False
    is_default: bool = False
    mtu: int | None = None
    proxy_host: str | None = None
    proxy_user: str | None = None
    tags: tuple[str, ...] = ()
    is_shared: bool = True
    projects: tuple[str, ...] = ()


class QuotaValues(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Quota numbers as the registry reports them; ``None`` = not reported, ``-1`` = unlimited.

    Compute (OpenStack): ``cores``, ``instances``, ``ram_mib``; block storage: ``gigabytes``,
    ``per_volume_gigabytes``, ``volumes``; network: ``public_ips``, ``networks``, ``ports``,
    ``security_groups``, ``security_group_rules``; object store: ``bytes``, ``containers``,
    ``objects``; Kubernetes: the ``requests_*``/``limits_*``, ``pods``, ``pvcs``, ``storage``
    fields (units as lossy as the Feeder makes them, section 2.6).
    """

    cores: int | None = None
    instances: int | None = None
    ram_mib: int | None = None
    gigabytes: int | None = None
    per_volume_gigabytes: int | None = None
    volumes: int | None = None
    public_ips: int | None = None
    networks: int | None = None
    ports: int | None = None
    security_groups: int | None = None
    security_group_rules: int | None = None
    bytes: int | None = None
    containers: int | None = None
    objects: int | None = None
    pods: int | None = None
    requests_cpu: int | None = None
    limits_cpu: int | None = None
    requests_memory: int | None = None
    limits_memory: int | None = None
    pvcs: int | None = None
    storage: int | None = None
    requests_ephemeral_storage: int | None = None
    limits_ephemeral_storage: int | None = None


class QuotaRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One quota record; key ``(region, project_id, service_type, kind)``."""

    region: str
    project_id: str
    service_type: ServiceType
    kind: QuotaKind
    values: QuotaValues


# --- scans -----------------------------------------------------------------------------------


class ScanScope(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """What one Feeder connection scans: a project in a region."""

    region: str
    project_id: str


class ScopeFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A scope whose scan failed, and why (never a credential: kind and a short message)."""

    scope: ScanScope
    error_kind: str = "scan_error"
    message: str = ""


class ObservedProvider(msgspec.Struct, frozen=True, kw_only=True):
    """The canonical snapshot of one provider, normalised from whichever source shape.

    Provider-level fields set to ``None`` were not reported by the source (a Feeder message
    does not carry ``is_public``, for instance) and never overwrite what is known.

    ``complete`` says the snapshot lists *every* region, project, trusted identity provider,
    user group and SLA of the provider, so that anything known but absent was removed from its
    configuration. A Feeder tree of an active provider is complete; a ``limited`` one (some
    connections failed and contributed nothing), a non-active one (the Feeder empties it) and
    a per-scope Feeder message are not. In an incomplete snapshot ``None`` in
    ``Region.location``, ``Project.name`` and ``TrustedIdentityProvider.group_claim`` also
    means "not reported".

    Catalogue items (services, flavours, images, networks, quotas) are judged per scanned scope
    instead, see :func:`domain.providers.decider.decide`.
    """

    name: str
    type: ProviderType
    status: ProviderStatus | None = None
    description: str | None = None
    is_public: bool | None = None
    support_emails: tuple[str, ...] | None = None
    auth_endpoint: str | None = None
    regions: tuple[Region, ...] = ()
    services: tuple[Service, ...] = ()
    projects: tuple[Project, ...] = ()
    identity_providers: tuple[TrustedIdentityProvider, ...] = ()
    user_groups: tuple[UserGroup, ...] = ()
    slas: tuple[Sla, ...] = ()
    flavors: tuple[Flavor, ...] = ()
    images: tuple[Image, ...] = ()
    networks: tuple[Network, ...] = ()
    quotas: tuple[QuotaRecord, ...] = ()
    complete: bool = False
    observed_at: datetime | None = None


# --- keys ------------------------------------------------------------------------------------

RegionItemKey = tuple[str, str]
"""``(region, uuid)`` of a flavour, image or network; ``(region, endpoint)`` of a service."""

QuotaKey = tuple[str, str, ServiceType, QuotaKind]
"""``(region, project_id, service_type, kind)``."""


def quota_key(record: QuotaRecord) -> QuotaKey:
    return (record.region, record.project_id, record.service_type, record.kind)


def scope_of(record: QuotaRecord) -> ScanScope:
    return ScanScope(region=record.region, project_id=record.project_id)


def visible_to(item: Flavor | Image | Network, project_id: str) -> bool:
    """The registry's visibility rule: shared items, and private ones linked to the project."""
    return item.is_shared or project_id in item.projects
