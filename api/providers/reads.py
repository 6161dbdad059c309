"""The scheduling-first reads for the dashboard, and the admin status board.

- ``GET /v1/groups/{group}/sites``: the sites (provider x region, with the group's project
  there) the caller's user group may use: SLA and its validity today, location, status,
  availability, scan outcome of the project's scope, headline headroom;
- ``GET /v1/groups/{group}/sites/{site}/flavors`` and ``/images``: only what the group's
  project sees at that site; flavours sorted (gpus, vcpus, ram, disk, name) and marked when
  they no longer fit the project's quota; images grouped by operating system;
- ``GET /v1/groups/{group}/sites/{site}/capacity`` and ``/health``;
- ``GET /v1/admin/providers`` and ``/v1/admin/providers/{id}``: the status board (admins).

A site id is ``<provider id>:<region>``. When the group has several projects at one site, the
``project`` query parameter picks one (default: the first by id). Reads come from the
provider read models only (eventually consistent with the log).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.params import FromPath, QueryParameter

from api.auth import Principal
from api.errors import ApiError
from api.legacy.shapes import JSON_MEDIA_TYPE, errors
from api.providers.ports import (
    FlavorRow,
    ImageRow,
    ProviderRow,
    ProvidersApi,
    QuotaRow,
    ScopeRow,
    SiteRow,
)
from api.providers.security import DEPENDENCIES, Caller, Providers, authenticated, check_group

READ_ERRORS = errors(400, 401, 403, 404)
PathStr = FromPath[str]

# ---------------------------------------------------------------- JSON shapes


class Location(msgspec.Struct, kw_only=True):
    site: str | None
    country: str | None
    latitude: float | None
    longitude: float | None


class SlaJson(msgspec.Struct, kw_only=True):
    id: str
    startDate: date | None
    endDate: date | None
    active: bool | None
    """Valid today; ``null`` when the dates are unknown (SLAs learnt from Feeder messages)."""


class ProjectJson(msgspec.Struct, kw_only=True):
    id: str
    name: str | None


class ScanJson(msgspec.Struct, kw_only=True):
    failing: bool
    errorKind: str | None = None
    failingSince: datetime | None = None


class Headroom(msgspec.Struct, kw_only=True):
    """Free quota of the project (limit minus latest usage); ``-1`` unlimited, ``null``
    unknown (no limit reported)."""

    cores: int | None = None
    ramMib: int | None = None
    instances: int | None = None
    publicIps: int | None = None
    volumeGib: int | None = None


class SiteJson(msgspec.Struct, kw_only=True):
    id: str
    label: str
    providerId: str
    providerName: str
    providerType: str
    region: str
    location: Location | None
    status: str
    availability: str
    priority: int
    sla: SlaJson
    project: ProjectJson
    scan: ScanJson
    headroom: Headroom


class SitesJson(msgspec.Struct, kw_only=True):
    group: str
    sites: list[SiteJson]


class FlavorJson(msgspec.Struct, kw_only=True):
    uuid: str
    name: str
    description: str
    label: str
    vcpus: int
    ramMib: int
    diskGib: int
    swapMib: int
    ephemeralGib: int
    gpus: int
    gpuVendor: str | None
    gpuModel: str | None
    infiniband: bool
    localStorage: str | None
    shared: bool
    fitsQuota: bool | None
    """False when the project's headroom cannot take one more server of this flavour;
    ``null`` when the project has no compute limits reported."""
    overQuota: list[str]
    """The quota items (``cores``, ``ramMib``, ``instances``) it would exceed."""


class FlavorsJson(msgspec.Struct, kw_only=True):
    site: str
    project: str
    headroom: Headroom
    flavors: list[FlavorJson]


class ImageJson(msgspec.Struct, kw_only=True):
    uuid: str
    name: str
    description: str
    osType: str | None
    osDistro: str | None
    osVersion: str | None
    architecture: str | None
    cudaSupport: bool
    gpuDriver: bool
    createdAt: datetime | None
    tags: list[str]
    shared: bool


class OperatingSystemJson(msgspec.Struct, kw_only=True):
    label: str
    osType: str | None
    osDistro: str | None
    osVersion: str | None
    images: list[str]
    """Image uuids, newest first."""


class ImagesJson(msgspec.Struct, kw_only=True):
    site: str
    project: str
    operatingSystems: list[OperatingSystemJson]
    images: list[ImageJson]


class ServiceCapacityJson(msgspec.Struct, kw_only=True):
    serviceType: str
    limits: dict[str, int] | None
    perUser: dict[str, int] | None
    usage: dict[str, int] | None
    usageSampledAt: datetime | None
    headroom: dict[str, int]


class CapacityJson(msgspec.Struct, kw_only=True):
    site: str
    project: str
    services: list[ServiceCapacityJson]


class ScopeJson(msgspec.Struct, kw_only=True):
    region: str
    projectId: str
    failing: bool
    errorKind: str | None
    message: str | None
    failingSince: datetime | None
    recoveredAt: datetime | None


class HealthJson(msgspec.Struct, kw_only=True):
    site: str
    status: str
    availability: str
    scopesFailing: int
    scopesKnown: int
    projectScope: ScopeJson | None


class ProviderBoardJson(msgspec.Struct, kw_only=True):
    providerId: str
    name: str
    type: str
    status: str
    reportedStatus: str | None
    availability: str
    priority: int
    aliases: list[dict[str, Any]]
    regions: int
    projects: int
    slas: int
    flavors: int
    images: int
    failingScopes: int
    registeredAt: datetime
    updatedAt: datetime


class ProviderDetailJson(msgspec.Struct, kw_only=True):
    provider: ProviderBoardJson
    scopes: list[ScopeJson]
    quotas: list[QuotaRow]


# ---------------------------------------------------------------- computations


def _headroom_value(limit: int | None, used: int | None) -> int | None:
    if limit is None:
        return None
    if limit < 0:
        return -1
    return max(0, limit - (used or 0))


_HEADLINE = (  # (Headroom field, service type, quota field)
    ("cores", "compute", "cores"),
    ("ramMib", "compute", "ram_mib"),
    ("instances", "compute", "instances"),
    ("publicIps", "network", "public_ips"),
    ("volumeGib", "block-storage", "gigabytes"),
)


def _by_service(quotas: list[QuotaRow], region: str,
                project_id: str) -> dict[str, dict[str, QuotaRow]]:
    found: dict[str, dict[str, QuotaRow]] = {}
    for q in quotas:
        if q.region == region and q.project_id == project_id:
            found.setdefault(q.service_type, {})[q.kind] = q
    return found


def headroom(quotas: list[QuotaRow], region: str, project_id: str) -> Headroom:
    services = _by_service(quotas, region, project_id)
    values: dict[str, int | None] = {}
    for field, service_type, name in _HEADLINE:
        records = services.get(service_type, {})
        limit = records.get("limit")
        usage = records.get("usage")
        values[field] = _headroom_value(
            limit.quota_values.get(name) if limit else None,
            usage.quota_values.get(name) if usage else None)
    return Headroom(**values)


def flavor_fit(flavor: FlavorRow, room: Headroom) -> tuple[bool | None, list[str]]:
    """Does one more server of ``flavor`` fit the project's compute headroom?"""
    needs = (("cores", flavor.vcpus, room.cores), ("ramMib", flavor.ram_mib, room.ramMib),
             ("instances", 1, room.instances))
    if all(free is None for _, _, free in needs):
        return None, []
    over = [name for name, need, free in needs if free is not None and free >= 0 and need > free]
    return not over, over


def flavor_label(f: FlavorRow) -> str:
    """The dashboard's label: ``4 VCPUs, 8 GB RAM, 80 GB DISK[, 1 GPUs NVIDIA A100]``."""
    label = f"{f.vcpus} VCPUs, {f.ram_mib / 1024:g} GB RAM, {f.disk_gib} GB DISK"
    if f.gpus:
        model = " ".join(p for p in (f.gpu_vendor, f.gpu_model) if p)
        label += f", {f.gpus} GPUs" + (f" {model}" if model else "")
    return label


def sla_active(start: date | None, end: date | None, today: date) -> bool | None:
    if start is None or end is None:
        return None
    return start <= today <= end


def parse_site(site: str) -> tuple[str, str]:
    provider_id, sep, region = site.partition(":")
    if not sep or not provider_id or not region:
        raise ApiError(400, f"Site {site!r} must be <provider id>:<region>")
    return provider_id, region


def scope_json(s: ScopeRow) -> ScopeJson:
    return ScopeJson(region=s.region, projectId=s.project_id, failing=s.failing,
                     errorKind=s.error_kind, message=s.message, failingSince=s.failing_since,
                     recoveredAt=s.recovered_at)


def board_json(p: ProviderRow) -> ProviderBoardJson:
    return ProviderBoardJson(
        providerId=p.provider_id, name=p.name, type=p.type, status=p.status,
        reportedStatus=p.reported_status, availability=p.availability, priority=p.priority,
        aliases=p.aliases, regions=p.regions, projects=p.projects, slas=p.slas,
        flavors=p.flavors, images=p.images, failingScopes=p.failing_scopes,
        registeredAt=p.registered_at, updatedAt=p.updated_at)


def _today() -> date:
    return datetime.now(UTC).date()


async def _group_sites(providers: ProvidersApi, principal: Principal, group: str,
                       provider_id: str | None = None,
                       region: str | None = None) -> list[SiteRow]:
    check_group(principal, group)
    rows = await providers.reads.sites(issuer=principal.issuer, group=group.removeprefix("/"),
                                       provider_id=provider_id, region=region)
    return [r for r in rows if r.status != "removed"]


async def _site(providers: ProvidersApi, principal: Principal, group: str, site: str,
                project: str | None) -> SiteRow:
    """The group's site (with the project it uses there); 404 when it is not one."""
    provider_id, region = parse_site(site)
    candidates = [r for r in await _group_sites(providers, principal, group, provider_id,
                                                region)
                  if r.provider_id == provider_id and r.region == region
                  and (project is None or r.project_id == project)]
    if not candidates:
        raise ApiError(404, f"The site {site} is not a site of the user group {group}")
    return min(candidates, key=lambda r: (r.project_id, r.sla_id))


SiteProject = Annotated[str | None, QueryParameter(
    name="project", description="The group's project at the site (default: the first)")]


# ---------------------------------------------------------------- controllers


class GroupSitesController(Controller):
    path = "/v1/groups/{group:str}/sites"
    tags = ["providers"]
    guards = [authenticated]
    dependencies = DEPENDENCIES
    security = [{"bearer": []}]

    @get("/", operation_id="listGroupSites", responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def list_sites(self, providers: Providers, principal: Caller,
                         group: PathStr) -> SitesJson:
        """The sites the user group may use (members of the group and admins)."""
        rows = await _group_sites(providers, principal, group)
        quotas: dict[str, list[QuotaRow]] = {}
        for provider_id in sorted({r.provider_id for r in rows}):
            quotas[provider_id] = await providers.reads.quotas(provider_id=provider_id)
        several = {p: len({r.region for r in rows if r.provider_id == p}) > 1 for p in quotas}
        today = _today()
        sites = []
        for r in rows:
            location = (Location(site=r.site, country=r.country, latitude=r.latitude,
                                 longitude=r.longitude) if r.site or r.country else None)
            sites.append(SiteJson(
                id=f"{r.provider_id}:{r.region}",
                label=f"{r.provider_name} - {r.region}" if several[r.provider_id]
                else r.provider_name,
                providerId=r.provider_id, providerName=r.provider_name,
                providerType=r.provider_type, region=r.region, location=location,
                status=r.status, availability=r.availability, priority=r.priority,
                sla=SlaJson(id=r.sla_id, startDate=r.start_date, endDate=r.end_date,
                            active=sla_active(r.start_date, r.end_date, today)),
                project=ProjectJson(id=r.project_id, name=r.project_name),
                scan=ScanJson(failing=r.failing, errorKind=r.error_kind,
                              failingSince=r.failing_since),
                headroom=headroom(quotas[r.provider_id], r.region, r.project_id)))
        return SitesJson(group=group, sites=sites)

    @get("/{site:str}/flavors", operation_id="listSiteFlavors", responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def list_flavors(self, providers: Providers, principal: Caller, group: PathStr,
                           site: PathStr, project: SiteProject = None) -> FlavorsJson:
        """Flavours the group's project sees at the site, sorted, marked over quota."""
        row = await _site(providers, principal, group, site, project)
        flavors, quotas = await asyncio.gather(
            providers.reads.flavors(provider_id=row.provider_id, region=row.region,
                                    project_id=row.project_id),
            providers.reads.quotas(provider_id=row.provider_id, region=row.region,
                                   project_id=row.project_id))
        room = headroom(quotas, row.region, row.project_id)
        shown = []
        for f in flavors:
            fits, over = flavor_fit(f, room)
            shown.append(FlavorJson(
                uuid=f.uuid, name=f.name, description=f.description, label=flavor_label(f),
                vcpus=f.vcpus, ramMib=f.ram_mib, diskGib=f.disk_gib, swapMib=f.swap_mib,
                ephemeralGib=f.ephemeral_gib, gpus=f.gpus, gpuVendor=f.gpu_vendor,
                gpuModel=f.gpu_model, infiniband=f.infiniband, localStorage=f.local_storage,
                shared=f.is_shared, fitsQuota=fits, overQuota=over))
        return FlavorsJson(site=site, project=row.project_id, headroom=room, flavors=shown)

    @get("/{site:str}/images", operation_id="listSiteImages", responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def list_images(self, providers: Providers, principal: Caller, group: PathStr,
                          site: PathStr, project: SiteProject = None) -> ImagesJson:
        """Images the group's project sees at the site, grouped by operating system."""
        row = await _site(providers, principal, group, site, project)
        images = await providers.reads.images(provider_id=row.provider_id, region=row.region,
                                              project_id=row.project_id)
        systems: dict[tuple[str | None, str | None, str | None], list[ImageRow]] = {}
        for image in images:
            key = (image.os_type, image.os_distro, image.os_version)
            systems.setdefault(key, []).append(image)
        grouped = []
        for (os_type, distro, version), members in systems.items():
            newest = sorted(members, reverse=True,
                            key=lambda m: m.created_at or datetime.min.replace(tzinfo=UTC))
            label = " ".join(p for p in (distro, version) if p) or os_type or "unknown"
            grouped.append(OperatingSystemJson(label=label, osType=os_type, osDistro=distro,
                                               osVersion=version,
                                               images=[m.uuid for m in newest]))
        return ImagesJson(site=site, project=row.project_id, operatingSystems=grouped, images=[
            ImageJson(uuid=m.uuid, name=m.name, description=m.description, osType=m.os_type,
                      osDistro=m.os_distro, osVersion=m.os_version,
                      architecture=m.architecture, cudaSupport=m.cuda_support,
                      gpuDriver=m.gpu_driver, createdAt=m.created_at, tags=m.tags,
                      shared=m.is_shared) for m in images])

    @get("/{site:str}/capacity", operation_id="getSiteCapacity", responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def capacity(self, providers: Providers, principal: Caller, group: PathStr, site: PathStr,
                       project: SiteProject = None) -> CapacityJson:
        """Limits, per-user limits, latest usage and headroom of the group's project."""
        row = await _site(providers, principal, group, site, project)
        quotas = await providers.reads.quotas(provider_id=row.provider_id, region=row.region,
                                              project_id=row.project_id)
        services = []
        for service_type, records in sorted(_by_service(quotas, row.region,
                                                        row.project_id).items()):
            limit, per_user, usage = (records.get("limit"), records.get("per_user"),
                                      records.get("usage"))
            room: dict[str, int] = {}
            if limit is not None:
                for name, value in limit.quota_values.items():
                    free = _headroom_value(value, usage.quota_values.get(name)
                                           if usage else None)
                    if free is not None:
                        room[name] = free
            services.append(ServiceCapacityJson(
                serviceType=service_type,
                limits=limit.quota_values if limit else None,
                perUser=per_user.quota_values if per_user else None,
                usage=usage.quota_values if usage else None,
                usageSampledAt=usage.reported_at if usage else None, headroom=room))
        return CapacityJson(site=site, project=row.project_id, services=services)

    @get("/{site:str}/health", operation_id="getSiteHealth", responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def health(self, providers: Providers, principal: Caller, group: PathStr, site: PathStr,
                     project: SiteProject = None) -> HealthJson:
        """Status, availability and scan outcomes at the site."""
        row = await _site(providers, principal, group, site, project)
        scopes = await providers.reads.scopes(provider_id=row.provider_id, region=row.region)
        mine = next((s for s in scopes if s.project_id == row.project_id), None)
        return HealthJson(site=site, status=row.status, availability=row.availability,
                          scopesFailing=sum(1 for s in scopes if s.failing),
                          scopesKnown=len(scopes),
                          projectScope=scope_json(mine) if mine else None)
