"""The provider catalogue: what the scheduling-first dashboard and the admin board read.

Fed by the ``provider`` stream category. Tables (``provider_catalogue_<part>_v<N>``):

- ``providers``: one row per provider: registry name and type, effective and reported
  status, availability, operator priority, aliases, details;
- ``regions``: per (provider, region): location and the region's factors;
- ``projects``: per (provider, project): the IaaS project and its name;
- ``slas``: per (provider, SLA): issuer, user group, validity dates, the projects it covers
  on this provider (indexed by issuer and group: the "sites of my group" query);
- ``flavors`` / ``images``: per (provider, region, uuid): the catalogue, with the access
  list of private items (indexed by provider and region: the "flavours of this site" query);
- ``scopes``: per (provider, region, project): which quota limit records exist there (a
  project *is at* a region where it has limits, as the domain's selection decides) and the
  outcome of its latest scan (failing since when, why).

Events carry whole entity values, so every applier is an upsert or a delete keyed by the
natural key. Cascades follow ``domain.providers.decider.evolve``: a removed region takes its
flavours, images and scopes with it; a removed project its scopes. The runner delivers a
stream's events in order and skips redeliveries, so no per-row version is needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from sqlalchemy import (
    ARRAY,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    column,
    delete,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.providers import (
    AvailabilityChanged,
    Flavor,
    FlavorAdded,
    FlavorChanged,
    FlavorRemoved,
    Image,
    ImageAdded,
    ImageChanged,
    ImageRemoved,
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
    QuotaKind,
    QuotaLimitsChanged,
    QuotaLimitsRemoved,
    RegionAdded,
    RegionChanged,
    RegionRemoved,
    ScopeScanFailed,
    ScopeScanRecovered,
    SlaAdded,
    SlaChanged,
    SlaRemoved,
    event_tag,
)
from domain.providers.values import ChangeSource
from eventstore.projection import query_tables, upsert
from eventstore.records import RecordedEvent

NAME = "provider_catalogue"
VERSION = 1

Applier = Callable[[AsyncConnection, ProviderEvent, "_Tables"], Awaitable[None]]


class _Tables:
    def __init__(self, tables: Sequence[Table]) -> None:
        (self.providers, self.regions, self.projects, self.slas, self.flavors, self.images,
         self.scopes) = tables


class ProviderCatalogueProjection:
    NAME = NAME
    VERSION = VERSION

    @property
    def HANDLES(self) -> frozenset[str]:
        return frozenset(event_tag(t) for t in _APPLIERS)

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()
        providers = Table(
            f"{NAME}_providers_v{version}", metadata,
            Column("provider_id", Text, primary_key=True),
            Column("name", Text, nullable=False),
            Column("type", Text, nullable=False),
            Column("status", Text, nullable=False),
            Column("reported_status", Text),
            Column("availability", Text, nullable=False),
            Column("priority", Integer, nullable=False),
            Column("aliases", JSONB, nullable=False),
            Column("description", Text, nullable=False),
            Column("is_public", Boolean, nullable=False),
            Column("support_emails", JSONB, nullable=False),
            Column("auth_endpoint", Text),
            Column("registered_at", DateTime(timezone=True), nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
        )
        regions = Table(
            f"{NAME}_regions_v{version}", metadata,
            Column("provider_id", Text, primary_key=True),
            Column("region", Text, primary_key=True),
            Column("site", Text),
            Column("country", Text),
            Column("latitude", Float),
            Column("longitude", Float),
            Column("overbooking_cpu", Float, nullable=False),
            Column("overbooking_ram", Float, nullable=False),
            Column("bandwidth_in", Float, nullable=False),
            Column("bandwidth_out", Float, nullable=False),
        )
        projects = Table(
            f"{NAME}_projects_v{version}", metadata,
            Column("provider_id", Text, primary_key=True),
            Column("project_id", Text, primary_key=True),
            Column("name", Text),
        )
        slas = Table(
            f"{NAME}_slas_v{version}", metadata,
            Column("provider_id", Text, primary_key=True),
            Column("sla_id", Text, primary_key=True),
            Column("issuer", Text, nullable=False),
            Column("user_group", Text, nullable=False),
            Column("start_date", Date),
            Column("end_date", Date),
            Column("projects", ARRAY(Text), nullable=False),
        )
        Index(f"{slas.name}_group", slas.c.issuer, slas.c.user_group)
        flavors = Table(
            f"{NAME}_flavors_v{version}", metadata,
            *_item_key_columns(),
            Column("name", Text, nullable=False),
            Column("description", Text, nullable=False),
            Column("vcpus", Integer, nullable=False),
            Column("ram_mib", Integer, nullable=False),
            Column("disk_gib", Integer, nullable=False),
            Column("swap_mib", Integer, nullable=False),
            Column("ephemeral_gib", Integer, nullable=False),
            Column("gpus", Integer, nullable=False),
            Column("gpu_vendor", Text),
            Column("gpu_model", Text),
            Column("infiniband", Boolean, nullable=False),
            Column("local_storage", Text),
            Column("is_shared", Boolean, nullable=False),
            Column("projects", ARRAY(Text), nullable=False),
        )
        images = Table(
            f"{NAME}_images_v{version}", metadata,
            *_item_key_columns(),
            Column("name", Text, nullable=False),
            Column("description", Text, nullable=False),
            Column("os_type", Text),
            Column("os_distro", Text),
            Column("os_version", Text),
            Column("architecture", Text),
            Column("kernel_id", Text),
            Column("cuda_support", Boolean, nullable=False),
            Column("gpu_driver", Boolean, nullable=False),
            Column("created_at", DateTime(timezone=True)),
            Column("tags", ARRAY(Text), nullable=False),
            Column("is_shared", Boolean, nullable=False),
            Column("projects", ARRAY(Text), nullable=False),
        )
        scopes = Table(
            f"{NAME}_scopes_v{version}", metadata,
            Column("provider_id", Text, primary_key=True),
            Column("region", Text, primary_key=True),
            Column("project_id", Text, primary_key=True),
            Column("limit_kinds", ARRAY(Text), nullable=False),
            Column("failing", Boolean, nullable=False),
            Column("error_kind", Text),
            Column("message", Text),
            Column("failing_since", DateTime(timezone=True)),
            Column("recovered_at", DateTime(timezone=True)),
        )
        Index(f"{scopes.name}_project", scopes.c.provider_id, scopes.c.project_id)
        return [providers, regions, projects, slas, flavors, images, scopes]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        applier = _APPLIERS.get(type(decoded))
        if applier is not None:
            await applier(conn, decoded, _Tables(tables))


def _item_key_columns() -> list[Column[Any]]:
    # (provider, region, uuid) is the primary key; its index serves the per-site reads.
    return [Column("provider_id", Text, primary_key=True),
            Column("region", Text, primary_key=True),
            Column("uuid", Text, primary_key=True)]


projection = ProviderCatalogueProjection()


# ---------------------------------------------------------------- appliers


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _item_row(provider_id: str, item: Flavor | Image, table: Table) -> dict[str, Any]:
    row = {name: _listed(getattr(item, name)) for name in item.__struct_fields__
           if name in table.c}
    row["provider_id"] = provider_id
    return row


async def _touch(conn: AsyncConnection, t: _Tables, e: ProviderEvent, **values: Any) -> None:
    await conn.execute(update(t.providers).where(t.providers.c.provider_id == e.provider_id)
                       .values(updated_at=func.greatest(t.providers.c.updated_at, e.occurred_at),
                               **values))


async def _registered(conn: AsyncConnection, e: ProviderRegistered, t: _Tables) -> None:
    d = e.details
    await upsert(conn, t.providers, {
        "provider_id": e.provider_id, "name": d.name, "type": d.type.value,
        "status": e.status.value,
        "reported_status": e.reported_status.value if e.reported_status else None,
        "availability": "unknown", "priority": e.priority,
        "aliases": msgspec.to_builtins(sorted(set(e.aliases))),
        "description": d.description, "is_public": d.is_public,
        "support_emails": list(d.support_emails), "auth_endpoint": d.auth_endpoint,
        "registered_at": e.occurred_at, "updated_at": e.occurred_at})


async def _details_changed(conn: AsyncConnection, e: ProviderDetailsChanged,
                           t: _Tables) -> None:
    d = e.details
    await _touch(conn, t, e, description=d.description, is_public=d.is_public,
                 support_emails=list(d.support_emails), auth_endpoint=d.auth_endpoint)


async def _status_changed(conn: AsyncConnection, e: ProviderStatusChanged, t: _Tables) -> None:
    values: dict[str, Any] = {"status": e.to_status.value}
    if e.source == ChangeSource.OBSERVATION:
        values["reported_status"] = e.to_status.value
    await _touch(conn, t, e, **values)


async def _aliases(conn: AsyncConnection, e: ProviderAliasAdded | ProviderAliasRemoved,
                   t: _Tables) -> None:
    row = (await conn.execute(select(t.providers.c.aliases).where(
        t.providers.c.provider_id == e.provider_id))).first()
    if row is None:
        return
    known = {msgspec.convert(a, type(e.alias)) for a in row.aliases}
    known = known | {e.alias} if isinstance(e, ProviderAliasAdded) else known - {e.alias}
    await _touch(conn, t, e, aliases=msgspec.to_builtins(sorted(known)))


async def _priority(conn: AsyncConnection, e: ProviderPrioritySet, t: _Tables) -> None:
    await _touch(conn, t, e, priority=e.priority)


async def _availability(conn: AsyncConnection, e: AvailabilityChanged, t: _Tables) -> None:
    await _touch(conn, t, e, availability=e.to_availability.value)


async def _region(conn: AsyncConnection, e: RegionAdded | RegionChanged, t: _Tables) -> None:
    r = e.region
    location = r.location
    await upsert(conn, t.regions, {
        "provider_id": e.provider_id, "region": r.name,
        "site": location.site if location else None,
        "country": location.country if location else None,
        "latitude": location.latitude if location else None,
        "longitude": location.longitude if location else None,
        "overbooking_cpu": r.overbooking_cpu, "overbooking_ram": r.overbooking_ram,
        "bandwidth_in": r.bandwidth_in, "bandwidth_out": r.bandwidth_out})


async def _region_removed(conn: AsyncConnection, e: RegionRemoved, t: _Tables) -> None:
    for table in (t.regions, t.flavors, t.images, t.scopes):
        await conn.execute(delete(table).where(table.c.provider_id == e.provider_id,
                                               table.c.region == e.region_name))


async def _project(conn: AsyncConnection, e: ProjectAdded | ProjectChanged, t: _Tables) -> None:
    await upsert(conn, t.projects, {"provider_id": e.provider_id,
                                     "project_id": e.project.project_id,
                                     "name": e.project.name})


async def _project_removed(conn: AsyncConnection, e: ProjectRemoved, t: _Tables) -> None:
    for table in (t.projects, t.scopes):
        await conn.execute(delete(table).where(table.c.provider_id == e.provider_id,
                                               table.c.project_id == e.project_id))


async def _sla(conn: AsyncConnection, e: SlaAdded | SlaChanged, t: _Tables) -> None:
    s = e.sla
    await upsert(conn, t.slas, {
        "provider_id": e.provider_id, "sla_id": s.sla_id, "issuer": s.issuer,
        "user_group": s.user_group, "start_date": s.start_date, "end_date": s.end_date,
        "projects": list(s.projects)})


async def _sla_removed(conn: AsyncConnection, e: SlaRemoved, t: _Tables) -> None:
    await conn.execute(delete(t.slas).where(t.slas.c.provider_id == e.provider_id,
                                            t.slas.c.sla_id == e.sla_id))


async def _flavor(conn: AsyncConnection, e: FlavorAdded | FlavorChanged, t: _Tables) -> None:
    await upsert(conn, t.flavors, _item_row(e.provider_id, e.flavor, t.flavors))


async def _image(conn: AsyncConnection, e: ImageAdded | ImageChanged, t: _Tables) -> None:
    await upsert(conn, t.images, _item_row(e.provider_id, e.image, t.images))


def _removal(table_of: Callable[[_Tables], Table]) -> Applier:
    async def remove(conn: AsyncConnection, e: Any, t: _Tables) -> None:
        table = table_of(t)
        await conn.execute(delete(table).where(table.c.provider_id == e.provider_id,
                                               table.c.region == e.region,
                                               table.c.uuid == e.uuid))
    return remove


def _scope_key(t: _Tables, provider_id: str, region: str, project_id: str) -> Any:
    return and_(t.scopes.c.provider_id == provider_id, t.scopes.c.region == region,
                t.scopes.c.project_id == project_id)


_SCOPE_KEY = ("provider_id", "region", "project_id")


async def _limits_changed(conn: AsyncConnection, e: QuotaLimitsChanged, t: _Tables) -> None:
    q = e.quota
    if q.kind != QuotaKind.LIMIT:
        return
    kind = q.service_type.value
    # One statement: a new scope with this kind, or the kind added to the existing one.
    statement = insert(t.scopes).values(provider_id=e.provider_id, region=q.region,
                                        project_id=q.project_id, limit_kinds=[kind],
                                        failing=False)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=_SCOPE_KEY,
        set_={"limit_kinds": func.array_append(t.scopes.c.limit_kinds, kind)},
        where=~(t.scopes.c.limit_kinds.any_() == kind)))


async def _limits_removed(conn: AsyncConnection, e: QuotaLimitsRemoved, t: _Tables) -> None:
    if e.kind != QuotaKind.LIMIT:
        return
    key = _scope_key(t, e.provider_id, e.region, e.project_id)
    await conn.execute(update(t.scopes).where(key).values(
        limit_kinds=func.array_remove(t.scopes.c.limit_kinds, e.service_type.value)))
    # A scope with neither limits nor a failing scan is no longer a site of the project.
    await conn.execute(delete(t.scopes).where(key, func.cardinality(t.scopes.c.limit_kinds) == 0,
                                              ~t.scopes.c.failing))


async def _scan_failed(conn: AsyncConnection, e: ScopeScanFailed, t: _Tables) -> None:
    f = e.failure
    failing = {"failing": True, "error_kind": f.error_kind, "message": f.message,
               "failing_since": e.occurred_at}
    statement = insert(t.scopes).values(provider_id=e.provider_id, region=f.scope.region,
                                        project_id=f.scope.project_id, limit_kinds=[],
                                        **failing)
    await conn.execute(statement.on_conflict_do_update(index_elements=_SCOPE_KEY,
                                                       set_=failing))


async def _scan_recovered(conn: AsyncConnection, e: ScopeScanRecovered, t: _Tables) -> None:
    key = _scope_key(t, e.provider_id, e.scope.region, e.scope.project_id)
    await conn.execute(update(t.scopes).where(key).values(
        failing=False, error_kind=None, message=None, failing_since=None,
        recovered_at=e.occurred_at))
    await conn.execute(delete(t.scopes).where(key, func.cardinality(t.scopes.c.limit_kinds) == 0))


_APPLIERS: dict[type[ProviderEvent], Applier] = {
    ProviderRegistered: _registered,  # type: ignore[dict-item]
    ProviderDetailsChanged: _details_changed,  # type: ignore[dict-item]
    ProviderStatusChanged: _status_changed,  # type: ignore[dict-item]
    ProviderAliasAdded: _aliases,  # type: ignore[dict-item]
    ProviderAliasRemoved: _aliases,  # type: ignore[dict-item]
    ProviderPrioritySet: _priority,  # type: ignore[dict-item]
    AvailabilityChanged: _availability,  # type: ignore[dict-item]
    RegionAdded: _region,  # type: ignore[dict-item]
    RegionChanged: _region,  # type: ignore[dict-item]
    RegionRemoved: _region_removed,  # type: ignore[dict-item]
    ProjectAdded: _project,  # type: ignore[dict-item]
    ProjectChanged: _project,  # type: ignore[dict-item]
    ProjectRemoved: _project_removed,  # type: ignore[dict-item]
    SlaAdded: _sla,  # type: ignore[dict-item]
    SlaChanged: _sla,  # type: ignore[dict-item]
    SlaRemoved: _sla_removed,  # type: ignore[dict-item]
    FlavorAdded: _flavor,  # type: ignore[dict-item]
    FlavorChanged: _flavor,  # type: ignore[dict-item]
    FlavorRemoved: _removal(lambda t: t.flavors),
    ImageAdded: _image,  # type: ignore[dict-item]
    ImageChanged: _image,  # type: ignore[dict-item]
    ImageRemoved: _removal(lambda t: t.images),
    QuotaLimitsChanged: _limits_changed,  # type: ignore[dict-item]
    QuotaLimitsRemoved: _limits_removed,  # type: ignore[dict-item]
    ScopeScanFailed: _scan_failed,  # type: ignore[dict-item]
    ScopeScanRecovered: _scan_recovered,  # type: ignore[dict-item]
}


# ---------------------------------------------------------------- queries


def _rows(result: Any) -> list[dict[str, Any]]:
    # str(): column names come as sqlalchemy's quoted_name, a str subclass msgspec refuses
    return [{str(k): v for k, v in row._mapping.items()} for row in result]


async def list_providers(conn: AsyncConnection, version: int,
                         provider_id: str | None = None) -> list[dict[str, Any]]:
    """The status board: every provider with its catalogue counts and failing scopes."""
    t = _Tables(query_tables(projection, version))
    p = t.providers

    def count(table: Table, *where: Any) -> Any:
        return (select(func.count()).select_from(table)
                .where(table.c.provider_id == p.c.provider_id, *where).scalar_subquery())

    query = select(
        p,
        count(t.regions).label("regions"),
        count(t.projects).label("projects"),
        count(t.slas).label("slas"),
        count(t.flavors).label("flavors"),
        count(t.images).label("images"),
        count(t.scopes, t.scopes.c.failing).label("failing_scopes"),
    ).order_by(p.c.provider_id)
    if provider_id is not None:
        query = query.where(p.c.provider_id == provider_id)
    return _rows(await conn.execute(query))


async def list_sites(conn: AsyncConnection, version: int, *, issuer: str, group: str,
                     provider_id: str | None = None,
                     region: str | None = None) -> list[dict[str, Any]]:
    """The sites ``group`` of ``issuer`` may use: one row per (SLA, project, region) where
    the project has quota limits or a scanned scope, with the provider and region
    (optionally only those of one provider, or one site)."""
    t = _Tables(query_tables(projection, version))
    s, sc, p, r, pr = t.slas, t.scopes, t.providers, t.regions, t.projects
    project = func.unnest(s.c.projects).table_valued("project_id").render_derived(
        name="sla_project")
    query = (
        select(
            p.c.provider_id, p.c.name.label("provider_name"), p.c.type.label("provider_type"),
            p.c.status, p.c.availability, p.c.priority,
            sc.c.region, sc.c.project_id, sc.c.failing, sc.c.error_kind,
            sc.c.failing_since,
            pr.c.name.label("project_name"),
            r.c.site, r.c.country, r.c.latitude, r.c.longitude,
            s.c.sla_id, s.c.start_date, s.c.end_date,
        )
        .select_from(s)
        .join(project, true())
        .join(p, p.c.provider_id == s.c.provider_id)
        .join(sc, and_(sc.c.provider_id == s.c.provider_id,
                       sc.c.project_id == project.c.project_id))
        .outerjoin(r, and_(r.c.provider_id == sc.c.provider_id, r.c.region == sc.c.region))
        .outerjoin(pr, and_(pr.c.provider_id == sc.c.provider_id,
                            pr.c.project_id == sc.c.project_id))
        .where(s.c.issuer == issuer, s.c.user_group == group)
        .order_by(p.c.provider_id, sc.c.region, sc.c.project_id, s.c.sla_id)
    )
    if provider_id is not None:
        query = query.where(s.c.provider_id == provider_id)
    if region is not None:
        query = query.where(sc.c.region == region)
    return _rows(await conn.execute(query))


async def site_items(conn: AsyncConnection, version: int, kind: str, *, provider_id: str,
                     region: str, project_id: str) -> list[dict[str, Any]]:
    """Flavours (``kind="flavors"``, sorted by gpus, vcpus, ram, disk, name) or images
    (sorted by distribution, version, newest first) of one region that ``project_id`` sees:
    shared ones and private ones listing the project."""
    t = _Tables(query_tables(projection, version))
    table = t.flavors if kind == "flavors" else t.images
    query = select(table).where(
        table.c.provider_id == provider_id, table.c.region == region,
        or_(table.c.is_shared, table.c.projects.any_() == project_id))
    if kind == "flavors":
        query = query.order_by(table.c.gpus, table.c.vcpus, table.c.ram_mib, table.c.disk_gib,
                               table.c.name, table.c.uuid)
    else:
        query = query.order_by(table.c.os_distro.nulls_last(), table.c.os_version.nulls_last(),
                               table.c.created_at.desc().nulls_last(), table.c.name,
                               table.c.uuid)
    return _rows(await conn.execute(query))


async def list_scopes(conn: AsyncConnection, version: int, *, provider_id: str,
                      region: str | None = None) -> list[dict[str, Any]]:
    """Scan outcomes per scope of a provider (optionally one region)."""
    t = _Tables(query_tables(projection, version))
    query = select(t.scopes).where(t.scopes.c.provider_id == provider_id)
    if region is not None:
        query = query.where(t.scopes.c.region == region)
    return _rows(await conn.execute(query.order_by(t.scopes.c.region, t.scopes.c.project_id)))


async def provider_for_registry_name(conn: AsyncConnection, version: int, name: str,
                                     provider_type: str) -> str | None:
    """The provider id whose registry alias is ``name`` (case-insensitive), if any."""
    t = _Tables(query_tables(projection, version))
    p = t.providers
    alias = func.jsonb_array_elements(p.c.aliases).table_valued(column("value", JSONB)).alias(
        "alias")
    query = (select(p.c.provider_id).select_from(p).join(alias, true())
             .where(p.c.type == provider_type,
                    alias.c.value["system"].astext == "registry",
                    func.lower(alias.c.value["name"].astext) == name.lower(),
                    alias.c.value["region"].astext.is_(None))
             .order_by(p.c.provider_id).limit(1))
    return (await conn.execute(query)).scalar_one_or_none()

