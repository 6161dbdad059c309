"""What the provider controllers need, as plain types and a protocol the bootstrap fills in.

The API never imports projections: the provider read models (the ``provider_catalogue`` and
``provider_capacity`` projections) reach it through ``ProviderReadModel``, implemented by the
bootstrap. Commands go through ``ProviderIngestion`` (``api.providers.ingestion``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import msgspec

from api.providers.ingestion import ProviderIngestion


class ProviderRow(msgspec.Struct, kw_only=True):
    """One provider of the status board, with its catalogue counts."""

    provider_id: str
    name: str
    type: str
    status: str
    availability: str
    priority: int
    aliases: list[dict[str, Any]]
    description: str
    is_public: bool
    support_emails: list[str]
    registered_at: datetime
    updated_at: datetime
    reported_status: str | None = None
    auth_endpoint: str | None = None
    regions: int = 0
    projects: int = 0
    slas: int = 0
    flavors: int = 0
    images: int = 0
    failing_scopes: int = 0


class SiteRow(msgspec.Struct, kw_only=True):
    """A (provider, region, project) a user group may use under one of its SLAs."""

    provider_id: str
    provider_name: str
    provider_type: str
    status: str
    availability: str
    priority: int
    region: str
    project_id: str
    sla_id: str
    failing: bool = False
    error_kind: str | None = None
    failing_since: datetime | None = None
    project_name: str | None = None
    site: str | None = None
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    start_date: date | None = None
    end_date: date | None = None


class FlavorRow(msgspec.Struct, kw_only=True):
    uuid: str
    name: str
    description: str
    vcpus: int
    ram_mib: int
    disk_gib: int
    swap_mib: int
    ephemeral_gib: int
    gpus: int
    infiniband: bool
    is_shared: bool
    gpu_vendor: str | None = None
    gpu_model: str | None = None
    local_storage: str | None = None


class ImageRow(msgspec.Struct, kw_only=True):
    uuid: str
    name: str
    description: str
    cuda_support: bool
    gpu_driver: bool
    tags: list[str]
    is_shared: bool
    os_type: str | None = None
    os_distro: str | None = None
    os_version: str | None = None
    architecture: str | None = None
    created_at: datetime | None = None


class QuotaRow(msgspec.Struct, kw_only=True):
    """A quota record: ``kind`` ``limit``, ``per_user`` or ``usage``."""

    region: str
    project_id: str
    service_type: str
    kind: str
    quota_values: dict[str, int]
    reported_at: datetime


class ScopeRow(msgspec.Struct, kw_only=True):
    """A scanned (region, project) of a provider, and its latest scan outcome."""

    region: str
    project_id: str
    limit_kinds: list[str]
    failing: bool
    error_kind: str | None = None
    message: str | None = None
    failing_since: datetime | None = None
    recovered_at: datetime | None = None


class ProviderReadModel(Protocol):
    async def providers(self) -> list[ProviderRow]: ...

    async def provider(self, provider_id: str) -> ProviderRow | None: ...

    async def sites(self, *, issuer: str, group: str, provider_id: str | None = None,
                    region: str | None = None) -> list[SiteRow]:
        """The group's sites (optionally of one provider, or one site)."""
        ...

    async def flavors(self, *, provider_id: str, region: str,
                      project_id: str) -> list[FlavorRow]:
        """Visible to the project there (shared, or private to it), sorted by
        (gpus, vcpus, ram, disk, name)."""
        ...

    async def images(self, *, provider_id: str, region: str,
                     project_id: str) -> list[ImageRow]: ...

    async def quotas(self, *, provider_id: str, region: str | None = None,
                     project_id: str | None = None) -> list[QuotaRow]: ...

    async def scopes(self, *, provider_id: str, region: str | None = None) -> list[ScopeRow]: ...

    async def provider_for_registry_name(self, name: str, provider_type: str) -> str | None:
        """The provider registered with this registry alias (an operator may have registered
        it under another id than the canonical one)."""
        ...


@dataclass
class ProvidersApi:
    """Everything the provider controllers use, in the application state."""

    reads: ProviderReadModel
    ingestion: ProviderIngestion
