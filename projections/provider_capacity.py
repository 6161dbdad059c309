"""Capacity per site and project: quota limits and the latest usage sample.

Fed by the ``provider`` category (limits: ``provider.quota_limits_changed`` / ``_removed``, and
the region and project removals that take their quotas with them) and the ``quotausage``
category (``quotausage.sampled``: usage lives on its own streams so that it never floods the
provider streams). Tables (``provider_capacity_<part>_v<N>``):

- ``limits``: per (provider, region, project, service type, kind ``limit``/``per_user``):
  the values as reported (``None`` not reported, ``-1`` unlimited);
- ``usage``: per (provider, region, project, service type): the latest usage values and
  when they were sampled.

Headroom (limit minus usage) is computed by the reader, not stored: a limit and a usage
sample arrive on different streams, in any relative order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Column, DateTime, MetaData, Table, Text, delete, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.providers import (
    ProjectRemoved,
    QuotaLimitsChanged,
    QuotaLimitsRemoved,
    QuotaUsageSampled,
    RegionRemoved,
    event_tag,
)
from eventstore.projection import query_tables, upsert
from eventstore.records import RecordedEvent

NAME = "provider_capacity"
VERSION = 1

_HANDLED = (QuotaLimitsChanged, QuotaLimitsRemoved, RegionRemoved, ProjectRemoved,
            QuotaUsageSampled)


def _values(values: msgspec.Struct) -> dict[str, Any]:
    """Reported numbers only (``QuotaValues`` omits the unreported ones)."""
    builtins: dict[str, Any] = msgspec.to_builtins(values)
    return builtins


class ProviderCapacityProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = frozenset(event_tag(t) for t in _HANDLED)

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()
        limits = Table(
            f"{NAME}_limits_v{version}", metadata,
            Column("provider_id", Text, primary_key=True),
            Column("region", Text, primary_key=True),
            Column("project_id", Text, primary_key=True),
            Column("service_type", Text, primary_key=True),
            Column("kind", Text, primary_key=True),
            Column("quota_values", JSONB, nullable=False),
            Column("changed_at", DateTime(timezone=True), nullable=False),
        )
        usage = Table(
            f"{NAME}_usage_v{version}", metadata,
            Column("provider_id", Text, primary_key=True),
            Column("region", Text, primary_key=True),
            Column("project_id", Text, primary_key=True),
            Column("service_type", Text, primary_key=True),
            Column("quota_values", JSONB, nullable=False),
            Column("sampled_at", DateTime(timezone=True), nullable=False),
        )
        return [limits, usage]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        limits, usage = tables
        match decoded:
            case QuotaLimitsChanged(quota=q):
                await upsert(conn, limits, {
                    "provider_id": decoded.provider_id, "region": q.region,
                    "project_id": q.project_id, "service_type": q.service_type.value,
                    "kind": q.kind.value, "quota_values": _values(q.values),
                    "changed_at": decoded.occurred_at})
            case QuotaLimitsRemoved():
                await conn.execute(delete(limits).where(
                    limits.c.provider_id == decoded.provider_id,
                    limits.c.region == decoded.region,
                    limits.c.project_id == decoded.project_id,
                    limits.c.service_type == decoded.service_type.value,
                    limits.c.kind == decoded.kind.value))
            case RegionRemoved():
                for table in (limits, usage):
                    await conn.execute(delete(table).where(
                        table.c.provider_id == decoded.provider_id,
                        table.c.region == decoded.region_name))
            case ProjectRemoved():
                for table in (limits, usage):
                    await conn.execute(delete(table).where(
                        table.c.provider_id == decoded.provider_id,
                        table.c.project_id == decoded.project_id))
            case QuotaUsageSampled():
                await upsert(conn, usage, *(
                    {"provider_id": decoded.provider_id, "region": s.region,
                     "project_id": s.project_id, "service_type": s.service_type.value,
                     "quota_values": _values(s.values), "sampled_at": decoded.occurred_at}
                    for s in decoded.samples))


projection = ProviderCapacityProjection()


async def site_capacity(conn: AsyncConnection, version: int, *, provider_id: str,
                        region: str | None = None,
                        project_id: str | None = None) -> list[dict[str, Any]]:
    """Limits and usage rows of a provider (optionally one region and/or project): one row
    per record, ``kind`` ``limit``, ``per_user`` or ``usage``, with when it was reported."""
    limits, usage = query_tables(projection, version)
    found: list[dict[str, Any]] = []
    for table, kind in ((limits, None), (usage, "usage")):
        query = select(table).where(table.c.provider_id == provider_id)
        if region is not None:
            query = query.where(table.c.region == region)
        if project_id is not None:
            query = query.where(table.c.project_id == project_id)
        for row in await conn.execute(query):
            values = {str(k): v for k, v in row._mapping.items()}
            values["reported_at"] = values.pop("changed_at", None) or values.pop("sampled_at")
            values.setdefault("kind", kind)
            found.append(values)
    found.sort(key=lambda r: (r["region"], r["project_id"], r["service_type"], r["kind"]))
    return found
