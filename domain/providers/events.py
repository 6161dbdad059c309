"""Provider events: the storage format of the ``provider-<provider id>`` streams.

Tags are stable public names (``provider.<fact>``); class names may change, tags may not.
Evolution is additive (new fields get defaults), unknown fields are accepted on decode, and
the store records :data:`SCHEMA_VERSIONS` per tag.

Every event names the provider, when it happened (``occurred_at``: the observation time for
scan-derived facts, else the decision time), who caused it (``actor``: an operator, or the
system identity of the ingestion) and, for scan-derived facts, the ``scan_id``.

Entity events carry the *whole* new value of the entity (``*_added`` / ``*_changed``) plus,
for changes, the names of the fields that changed; removals carry the natural key. That keeps
``evolve`` trivial and lets a reader see a catalogue item without folding its history.

Adapted from ``provider-model.md`` section 10.2: one stream per provider rather than
separate catalogue/capacity streams (a scan of a provider is diffed as a whole and appended in
one transaction); quota usage lives on its own category (``usage.py``); scan outcomes are
recorded only when they change (no per-scan event, so an identical observation appends
nothing); the SLA is keyed by its document id and holds its projects on this provider.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

from domain.event_catalogue import EventCatalogue
from domain.identity import Actor

from .values import (
    Availability,
    ChangeSource,
    Flavor,
    Image,
    Network,
    Project,
    ProviderAlias,
    ProviderDetails,
    ProviderStatus,
    QuotaKind,
    QuotaRecord,
    Region,
    ScanScope,
    ScopeFailure,
    Service,
    ServiceType,
    Sla,
    TrustedIdentityProvider,
    UserGroup,
)


class ProviderEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every provider event."""

    provider_id: str
    occurred_at: datetime
    actor: Actor
    scan_id: str | None = None


# --- registration and lifecycle --------------------------------------------------------------


class ProviderRegistered(ProviderEvent, tag="provider.registered", frozen=True, kw_only=True):
    """The provider exists: first seen in a scan, or registered by an operator.

    ``reported_status`` is the status the site configuration reported (scans only).
    """

    details: ProviderDetails
    status: ProviderStatus
    source: ChangeSource
    aliases: tuple[ProviderAlias, ...] = ()
    priority: int = 50
    reported_status: ProviderStatus | None = None


class ProviderDetailsChanged(
    ProviderEvent, tag="provider.details_changed", frozen=True, kw_only=True
):
    details: ProviderDetails
    changed: tuple[str, ...]


class ProviderStatusChanged(
    ProviderEvent, tag="provider.status_changed", frozen=True, kw_only=True
):
    """The operational status was set, by an operator or by the site configuration.

    A scan records the status its configuration reports when *that* value changes, so an
    operator's later decision is not overwritten by the next scan repeating an old value.
    ``from_status == to_status`` happens when the configuration starts reporting the status
    an operator had already set (the event then only records the reported value).
    """

    from_status: ProviderStatus
    to_status: ProviderStatus
    source: ChangeSource
    reason: str = ""


class ProviderAliasAdded(ProviderEvent, tag="provider.alias_added", frozen=True, kw_only=True):
    alias: ProviderAlias


class ProviderAliasRemoved(ProviderEvent, tag="provider.alias_removed", frozen=True, kw_only=True):
    alias: ProviderAlias


class ProviderPrioritySet(ProviderEvent, tag="provider.priority_set", frozen=True, kw_only=True):
    """The operator priority (0-100, default 50) used by the built-in ranking."""

    priority: int
    previous: int
    reason: str = ""


# --- topology --------------------------------------------------------------------------------


class RegionAdded(ProviderEvent, tag="provider.region_added", frozen=True, kw_only=True):
    region: Region


class RegionChanged(ProviderEvent, tag="provider.region_changed", frozen=True, kw_only=True):
    """Overbooking, bandwidth or location changed."""

    region: Region
    changed: tuple[str, ...]


class RegionRemoved(ProviderEvent, tag="provider.region_removed", frozen=True, kw_only=True):
    """The region left the configuration; its services, catalogue and quotas go with it."""

    region_name: str


class ServiceAdded(ProviderEvent, tag="provider.service_added", frozen=True, kw_only=True):
    service: Service


class ServiceChanged(ProviderEvent, tag="provider.service_changed", frozen=True, kw_only=True):
    service: Service
    changed: tuple[str, ...]


class ServiceRemoved(ProviderEvent, tag="provider.service_removed", frozen=True, kw_only=True):
    region: str
    endpoint: str
    service_type: ServiceType


class ProjectAdded(ProviderEvent, tag="provider.project_added", frozen=True, kw_only=True):
    project: Project


class ProjectChanged(ProviderEvent, tag="provider.project_changed", frozen=True, kw_only=True):
    project: Project
    changed: tuple[str, ...]


class ProjectRemoved(ProviderEvent, tag="provider.project_removed", frozen=True, kw_only=True):
    """The project left the configuration; its quotas go with it."""

    project_id: str


# --- trust and entitlements ------------------------------------------------------------------


class IdentityProviderTrusted(
    ProviderEvent, tag="provider.identity_provider_trusted", frozen=True, kw_only=True
):
    identity_provider: TrustedIdentityProvider


class IdentityProviderChanged(
    ProviderEvent, tag="provider.identity_provider_changed", frozen=True, kw_only=True
):
    identity_provider: TrustedIdentityProvider
    changed: tuple[str, ...]


class IdentityProviderUntrusted(
    ProviderEvent, tag="provider.identity_provider_untrusted", frozen=True, kw_only=True
):
    issuer: str


class UserGroupAdded(ProviderEvent, tag="provider.user_group_added", frozen=True, kw_only=True):
    user_group: UserGroup


class UserGroupRemoved(ProviderEvent, tag="provider.user_group_removed", frozen=True, kw_only=True):
    issuer: str
    name: str


class SlaAdded(ProviderEvent, tag="provider.sla_added", frozen=True, kw_only=True):
    sla: Sla


class SlaChanged(ProviderEvent, tag="provider.sla_changed", frozen=True, kw_only=True):
    """Dates, group or covered projects changed."""

    sla: Sla
    changed: tuple[str, ...]


class SlaRemoved(ProviderEvent, tag="provider.sla_removed", frozen=True, kw_only=True):
    sla_id: str


# --- catalogue -------------------------------------------------------------------------------


class FlavorAdded(ProviderEvent, tag="provider.flavor_added", frozen=True, kw_only=True):
    flavor: Flavor


class FlavorChanged(ProviderEvent, tag="provider.flavor_changed", frozen=True, kw_only=True):
    """Specs, name or access (``is_shared``/``projects``) changed."""

    flavor: Flavor
    changed: tuple[str, ...]


class FlavorRemoved(ProviderEvent, tag="provider.flavor_removed", frozen=True, kw_only=True):
    region: str
    uuid: str
    name: str


class ImageAdded(ProviderEvent, tag="provider.image_added", frozen=True, kw_only=True):
    image: Image


class ImageChanged(ProviderEvent, tag="provider.image_changed", frozen=True, kw_only=True):
    image: Image
    changed: tuple[str, ...]


class ImageRemoved(ProviderEvent, tag="provider.image_removed", frozen=True, kw_only=True):
    region: str
    uuid: str
    name: str


class NetworkAdded(ProviderEvent, tag="provider.network_added", frozen=True, kw_only=True):
    network: Network


class NetworkChanged(ProviderEvent, tag="provider.network_changed", frozen=True, kw_only=True):
    network: Network
    changed: tuple[str, ...]


class NetworkRemoved(ProviderEvent, tag="provider.network_removed", frozen=True, kw_only=True):
    region: str
    uuid: str
    name: str


# --- capacity --------------------------------------------------------------------------------


class QuotaLimitsChanged(
    ProviderEvent, tag="provider.quota_limits_changed", frozen=True, kw_only=True
):
    """A project's limits (``kind`` limit or per_user) on a service type were set or changed.

    ``previous`` is ``None`` for a new record.
    """

    quota: QuotaRecord
    previous: QuotaRecord | None = None


class QuotaLimitsRemoved(
    ProviderEvent, tag="provider.quota_limits_removed", frozen=True, kw_only=True
):
    region: str
    project_id: str
    service_type: ServiceType
    kind: QuotaKind


# --- observation and health ------------------------------------------------------------------


class ScopeScanFailed(ProviderEvent, tag="provider.scope_scan_failed", frozen=True, kw_only=True):
    """A scope that was fine (or never seen) failed to scan; nothing of it was removed."""

    failure: ScopeFailure


class ScopeScanRecovered(
    ProviderEvent, tag="provider.scope_scan_recovered", frozen=True, kw_only=True
):
    scope: ScanScope


class AvailabilityChanged(
    ProviderEvent, tag="provider.availability_changed", frozen=True, kw_only=True
):
    """The aggregate of the scope outcomes changed."""

    from_availability: Availability
    to_availability: Availability
    failing_scopes: tuple[ScanScope, ...] = ()


EVENT_TYPES: Final[tuple[type[ProviderEvent], ...]] = (
    ProviderRegistered,
    ProviderDetailsChanged,
    ProviderStatusChanged,
    ProviderAliasAdded,
    ProviderAliasRemoved,
    ProviderPrioritySet,
    RegionAdded,
    RegionChanged,
    RegionRemoved,
    ServiceAdded,
    ServiceChanged,
    ServiceRemoved,
    ProjectAdded,
    ProjectChanged,
    ProjectRemoved,
    IdentityProviderTrusted,
    IdentityProviderChanged,
    IdentityProviderUntrusted,
    UserGroupAdded,
    UserGroupRemoved,
    SlaAdded,
    SlaChanged,
    SlaRemoved,
    FlavorAdded,
    FlavorChanged,
    FlavorRemoved,
    ImageAdded,
    ImageChanged,
    ImageRemoved,
    NetworkAdded,
    NetworkChanged,
    NetworkRemoved,
    QuotaLimitsChanged,
    QuotaLimitsRemoved,
    ScopeScanFailed,
    ScopeScanRecovered,
    AvailabilityChanged,
)

_CATALOGUE: Final = EventCatalogue[ProviderEvent](EVENT_TYPES)
EVENT_TYPES_BY_TAG: Final = _CATALOGUE.types_by_tag
SCHEMA_VERSIONS: Final = _CATALOGUE.schema_versions
encode_event: Final = _CATALOGUE.encode
decode_event: Final = _CATALOGUE.decode
