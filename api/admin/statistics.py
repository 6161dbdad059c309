"""Usage statistics (legacy dashboard section 8.2, served from the statistics projection).

``/v1/admin/statistics/{view}``: admins, every deployment of their own issuer.
``/v1/statistics/{view}``: anyone, their own deployments (and, with the group-visibility
option, their groups' deployments of the same issuer). Both answer JSON, or CSV with
``?format=csv`` / ``Accept: text/csv``. Views: ``deployments`` (created per period, by
status, with requested resources), ``active`` (active at the end of each period),
``outcomes`` (create success rate and time to CREATE_COMPLETE), ``failures`` (by reason),
``resources`` (vCPU-, RAM-GB- and GPU-hours held within the range).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, TypeAlias

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from api.admin.formats import table_response
from api.admin.ports import (
    GROUP_BY_KEYS,
    Interval,
    StatisticsDependency,
    StatisticsQuery,
    StatisticsReader,
    StatisticsView,
)
from api.auth import Principal
from api.errors import ApiError
from api.legacy.common import parse_statuses
from api.legacy.security import DEPENDENCIES, AnyRequest, Caller, Legacy, PathId, authenticated
from api.legacy.shapes import READ_ERRORS

VIEWS: tuple[str, ...] = ("deployments", "active", "outcomes", "failures", "resources")
INTERVALS: tuple[str, ...] = ("day", "week", "month", "total")
SCRATCH_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class StatisticsAnswer(msgspec.Struct, kw_only=True):
    """One view: the scope it was computed over, the filters, and its rows (camelCase
    keys: ``period`` when an interval is asked, group-by keys, then the measures)."""

    view: str
    scope: str
    interval: str
    groupBy: list[str]
    rows: list[dict[str, Any]]
    start: str | None = msgspec.field(default=None, name="from")
    end: str | None = msgspec.field(default=None, name="to")
    replay: str | None = None


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_RENAMES = {"owner_subject": "owner", "user_group": "group", "provider_id": "providerId"}


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    return {_RENAMES.get(key, camel(key)): value for key, value in row.items()}


def _day(value: str | None, parameter: str) -> date | None:
    if value is None or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ApiError(400, f"Value {value} for param {parameter} is not a date "
                            f"(use YYYY-MM-DD)") from None


def _listed(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class StatisticsFilters:
    """The query parameters both statistics endpoints take, as given."""

    start: str | None
    end: str | None
    interval: str | None
    group_by: list[str] | None
    group: str | None
    provider: str | None
    template_type: str | None
    status: list[str] | None
    format_: str | None


def provide_filters(
    start: Annotated[str | None, QueryParameter(name="from")] = None,
    end: Annotated[str | None, QueryParameter(name="to")] = None,
    interval: Annotated[str | None, QueryParameter(name="interval")] = None,
    group_by: Annotated[list[str] | None, QueryParameter(name="groupBy")] = None,
    group: Annotated[str | None, QueryParameter(name="group")] = None,
    provider: Annotated[str | None, QueryParameter(name="provider")] = None,
    template_type: Annotated[str | None, QueryParameter(name="templateType")] = None,
    status: Annotated[list[str] | None, QueryParameter(name="status")] = None,
    format_: Annotated[str | None, QueryParameter(name="format")] = None,
) -> StatisticsFilters:
    return StatisticsFilters(start=start, end=end, interval=interval, group_by=group_by,
                             group=group, provider=provider, template_type=template_type,
                             status=status, format_=format_)


Filters: TypeAlias = NamedDependency[StatisticsFilters]
"""Handler parameter ``filters``."""
CONTROLLER_DEPENDENCIES = {**DEPENDENCIES,
                           "filters": Provide(provide_filters, sync_to_thread=False)}


def build_query(principal: Principal, view: str, filters: StatisticsFilters, *, admin: bool,
                group_visibility: bool = False, owner: str | None = None,
                replay: str | None = None) -> StatisticsQuery:
    """``owner`` and ``replay`` are admin parameters (the user endpoint has neither)."""
    if view not in VIEWS:
        raise ApiError(404, f"No statistics view {view} (views: {', '.join(VIEWS)})")
    interval = filters.interval or "total"
    if interval not in INTERVALS:
        raise ApiError(400, f"Value {interval} for param interval is not one of "
                            f"{', '.join(INTERVALS)}")
    keys = _listed(filters.group_by)
    unknown = [k for k in keys if k not in GROUP_BY_KEYS]
    if unknown:
        raise ApiError(400, f"Value {','.join(unknown)} for param groupBy is not one of "
                            f"{', '.join(GROUP_BY_KEYS)}")
    first, last = _day(filters.start, "from"), _day(filters.end, "to")
    if first is not None and last is not None and first > last:
        raise ApiError(400, "Param from must not be after param to")
    if replay is not None and (not SCRATCH_SCHEMA.match(replay)
                               or replay in ("public", "pg_catalog")):
        raise ApiError(400, "Param replay must name an audit replay schema")
    view_name: StatisticsView = view  # type: ignore[assignment]
    interval_name: Interval = interval  # type: ignore[assignment]
    return StatisticsQuery(
        view=view_name, owner_issuer=principal.issuer,
        owner_subject=None if admin else principal.subject,
        groups=tuple(sorted(principal.groups)) if group_visibility and not admin else (),
        start=first, end=last, user_group=filters.group or None,
        provider=filters.provider or None, template_type=filters.template_type or None,
        statuses=parse_statuses(filters.status, "status"), owner=owner or None,
        group_by=tuple(keys), interval=interval_name, schema=replay)


async def answer(request: AnyRequest, reader: StatisticsReader, query: StatisticsQuery,
                 format_: str | None, scope: str) -> Response[Any]:
    try:
        rows = [public_row(row) for row in await reader.query(query)]
    except LookupError as error:
        raise ApiError(404, str(error.args[0]) if error.args else "Not found") from None
    body = StatisticsAnswer(
        view=query.view, scope=scope, interval=query.interval, groupBy=list(query.group_by),
        rows=rows, start=query.start.isoformat() if query.start else None,
        end=query.end.isoformat() if query.end else None, replay=query.schema)
    return table_response(request, format_, body, rows, filename=f"statistics-{query.view}")


_FILTERS = """Filters: `from`/`to` (inclusive UTC days, YYYY-MM-DD), `interval`
(day|week|month|total), `groupBy` (comma list of owner, group, templateType, provider,
region, status), `group`, `provider` (id or name), `templateType`, `status`; `format=csv`
or `Accept: text/csv` for CSV."""

class AdminStatisticsController(Controller):
    path = "/v1/admin/statistics"
    tags = ["statistics"]
    guards = [authenticated]
    opt = {"admin": True}  # admins of the token's issuer only (403 otherwise)
    dependencies = CONTROLLER_DEPENDENCIES
    security = [{"bearer": []}]

    @get(["/{view:str}"], operation_id="adminStatistics", responses=READ_ERRORS,
         description="An admin's view over every deployment of their issuer. " + _FILTERS
         + " `owner` restricts to one owner subject; `replay` reads an audit replay "
           "schema (see /v1/admin/audit/replay).")
    async def statistics(
        self, request: AnyRequest, principal: Caller,
        statistics_reader: StatisticsDependency, filters: Filters, view: PathId,
        owner: Annotated[str | None, QueryParameter(name="owner")] = None,
        replay: Annotated[str | None, QueryParameter(name="replay")] = None,
    ) -> Response[StatisticsAnswer]:
        query = build_query(principal, view, filters, admin=True, owner=owner, replay=replay)
        return await answer(request, statistics_reader, query, filters.format_,
                            f"issuer {principal.issuer}")


class UserStatisticsController(Controller):
    path = "/v1/statistics"
    tags = ["statistics"]
    guards = [authenticated]
    dependencies = CONTROLLER_DEPENDENCIES
    security = [{"bearer": []}]

    @get(["/{view:str}"], operation_id="userStatistics", responses=READ_ERRORS,
         description="The caller's own deployments (and their groups' with the "
                     "group-visibility option). " + _FILTERS)
    async def statistics(
        self, request: AnyRequest, legacy: Legacy, principal: Caller,
        statistics_reader: StatisticsDependency, filters: Filters, view: PathId,
    ) -> Response[StatisticsAnswer]:
        query = build_query(principal, view, filters, admin=False,
                            group_visibility=legacy.auth_settings.group_visibility)
        return await answer(request, statistics_reader, query, filters.format_,
                            f"owner {principal.subject} of {principal.issuer}")
