"""The state of one provider, as folded from its stream.

Collections are dicts keyed by natural key, for O(1) diffing of large catalogues. States are
values: ``evolve``/``fold`` build new dicts and never mutate the ones of a state they were
given, and callers must not mutate them either.
"""

from __future__ import annotations

import functools
from datetime import datetime

import msgspec

from .values import (
    Availability,
    Flavor,
    Image,
    Network,
    ObservedProvider,
    Project,
    ProviderAlias,
    ProviderDetails,
    ProviderStatus,
    QuotaKey,
    QuotaRecord,
    Region,
    RegionItemKey,
    ScanScope,
    ScopeFailure,
    Service,
    Sla,
    TrustedIdentityProvider,
    UserGroup,
)

DEFAULT_PRIORITY = 50


class FailingScope(msgspec.Struct, frozen=True, kw_only=True):
    """A scope whose latest scan failed, and since when (the first failure of the streak)."""

    failure: ScopeFailure
    since: datetime


class RegionCatalogue(msgspec.Struct, frozen=True, kw_only=True):
    """The flavours and images of one region, indexed for selection."""

    flavors: tuple[Flavor, ...]
    """In the order selection tries them: (gpus, vcpus, ram, disk, name, uuid)."""
    images: tuple[Image, ...]
    images_by_os: dict[tuple[str, str], tuple[Image, ...]]
    """By casefolded (os_distro, os_version)."""


class ProviderState(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """One provider as of some version of its stream; ``details is None``: not registered.

    ``status`` is the effective operational status; ``reported_status`` the last one the site
    configuration reported (see ``ProviderStatusChanged``). ``failing_scopes`` are the scopes
    whose latest scan failed.
    """

    provider_id: str = ""
    version: int = 0
    details: ProviderDetails | None = None
    status: ProviderStatus = ProviderStatus.ACTIVE
    reported_status: ProviderStatus | None = None
    priority: int = DEFAULT_PRIORITY
    aliases: tuple[ProviderAlias, ...] = ()
    regions: dict[str, Region] = msgspec.field(default_factory=dict)
    services: dict[RegionItemKey, Service] = msgspec.field(default_factory=dict)
    projects: dict[str, Project] = msgspec.field(default_factory=dict)
    identity_providers: dict[str, TrustedIdentityProvider] = msgspec.field(default_factory=dict)
    user_groups: dict[tuple[str, str], UserGroup] = msgspec.field(default_factory=dict)
    slas: dict[str, Sla] = msgspec.field(default_factory=dict)
    flavors: dict[RegionItemKey, Flavor] = msgspec.field(default_factory=dict)
    images: dict[RegionItemKey, Image] = msgspec.field(default_factory=dict)
    networks: dict[RegionItemKey, Network] = msgspec.field(default_factory=dict)
    quotas: dict[QuotaKey, QuotaRecord] = msgspec.field(default_factory=dict)
    failing_scopes: dict[ScanScope, FailingScope] = msgspec.field(default_factory=dict)
    availability: Availability = Availability.UNKNOWN

    @functools.cached_property
    def by_region(self) -> dict[str, RegionCatalogue]:
        """Per-region indexes of the catalogue, computed once per state (states are values)."""
        flavors: dict[str, list[Flavor]] = {}
        images: dict[str, list[Image]] = {}
        for (region, _), flavor in self.flavors.items():
            flavors.setdefault(region, []).append(flavor)
        for (region, _), image in self.images.items():
            images.setdefault(region, []).append(image)
        indexes = {}
        for region in flavors.keys() | images.keys():
            by_os: dict[tuple[str, str], list[Image]] = {}
            for image in images.get(region, ()):
                if image.os_distro is not None and image.os_version is not None:
                    key = (image.os_distro.casefold(), image.os_version.casefold())
                    by_os.setdefault(key, []).append(image)
            indexes[region] = RegionCatalogue(
                flavors=tuple(
                    sorted(
                        flavors.get(region, ()),
                        key=lambda f: (f.gpus, f.vcpus, f.ram_mib, f.disk_gib, f.name, f.uuid),
                    )
                ),
                images=tuple(images.get(region, ())),
                images_by_os={k: tuple(v) for k, v in by_os.items()},
            )
        return indexes

    @functools.cached_property
    def regions_of_project(self) -> dict[str, tuple[str, ...]]:
        """Per project, the regions where it has quota limits (sorted)."""
        found: dict[str, set[str]] = {}
        for region, project_id, _, kind in self.quotas:
            if kind == "limit":
                found.setdefault(project_id, set()).add(region)
        return {p: tuple(sorted(r)) for p, r in found.items()}

    @property
    def registered(self) -> bool:
        return self.details is not None

    @property
    def name(self) -> str:
        return self.details.name if self.details is not None else self.provider_id

    def alias(self, system: str, region: str | None = None) -> str:
        """This provider's name in ``system`` (for ``region`` if it has its own), else the
        registry name."""
        wide: str | None = None
        for alias in self.aliases:
            if alias.system != system:
                continue
            if alias.region is not None and alias.region == region:
                return alias.name
            if alias.region is None and wide is None:
                wide = alias.name
        return wide if wide is not None else self.name

    def catalogue(self) -> ObservedProvider:
        """The catalogue as a complete snapshot, items in natural-key order.

        Observing this snapshot (with every scope scanned) decides nothing: it is what the
        state knows, in the shape of an observation (used by tests and read models).
        """
        details = self.details
        if details is None:
            raise ValueError(f"provider {self.provider_id} is not registered")
        return ObservedProvider(
            name=details.name,
            type=details.type,
            status=self.reported_status,
            description=details.description,
            is_public=details.is_public,
            support_emails=details.support_emails,
            auth_endpoint=details.auth_endpoint,
            regions=tuple(self.regions[k] for k in sorted(self.regions)),
            services=tuple(self.services[k] for k in sorted(self.services)),
            projects=tuple(self.projects[k] for k in sorted(self.projects)),
            identity_providers=tuple(
                self.identity_providers[k] for k in sorted(self.identity_providers)
            ),
            user_groups=tuple(self.user_groups[k] for k in sorted(self.user_groups)),
            slas=tuple(self.slas[k] for k in sorted(self.slas)),
            flavors=tuple(self.flavors[k] for k in sorted(self.flavors)),
            images=tuple(self.images[k] for k in sorted(self.images)),
            networks=tuple(self.networks[k] for k in sorted(self.networks)),
            quotas=tuple(self.quotas[k] for k in sorted(self.quotas)),
            complete=True,
        )
