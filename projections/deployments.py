"""The deployments view: one row per deployment, everything the legacy deployment JSON shows.

Fed by the ``deployment`` stream category. A row holds the legacy fields (status, task,
statusReason, outputs, physicalId, callback, userGroup, cloudProviderName and endpoint,
createdBy) plus what the list filters and the statistics need (owner issuer and subject,
template type and name, provider id and region, iaas type, precise timestamps). A second
table holds the bulky per-deployment texts (template, parameters, deployer log) so that the
list scans stay narrow. ``DELETE_COMPLETE`` rows stay: they are tombstones, listed unless a
query excludes them.

Events of one stream arrive in stream order (Kafka partitions by stream id), so every
applier is a targeted UPDATE; ``stream_version`` makes a repeated event a no-op. Each
column follows ``domain.deployments.decider.evolve`` exactly (the tests fold the same
events with the domain and compare).

Queries (``list_deployments``, ``get_deployment``, ``get_deployment_details``) filter,
sort and page on the server; the API reaches them through readers the bootstrap builds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    case,
    func,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.deployments import (
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentDeletionRequested,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentInfrastructureCreated,
    DeploymentLogUpdated,
    DeploymentRequested,
    DeploymentRetryRequested,
    DeploymentScheduled,
    DeploymentStatus,
    DeploymentStatusReset,
    DeploymentUpdateRequested,
    Task,
    event_tag,
)
from eventstore.projection import query_tables
from eventstore.records import RecordedEvent

NAME = "deployments"
VERSION = 1

# Events that change the legacy ``updateTime`` (see decider._NOT_TOUCHING_UPDATE_TIME):
# resource changes, resource actions, log snapshots and teardown bookkeeping do not.
_HANDLED: tuple[type[DeploymentEvent], ...] = (
    DeploymentRequested,
    DeploymentUpdateRequested,
    DeploymentDeletionRequested,
    DeploymentStatusReset,
    DeploymentRetryRequested,
    DeploymentScheduled,
    DeploymentAttemptStarted,
    DeploymentInfrastructureCreated,
    DeploymentAttemptFailed,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentLogUpdated,
)

SORT_COLUMNS: dict[str, str] = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "status": "status",
    "task": "task",
    "user_group": "user_group",
    "provider_name": "provider_name",
    "template_type": "template_type",
    "id": "id",
}
"""Sortable columns (the API maps its public sort keys onto these)."""


def _to_json(value: Any) -> Any:
    return msgspec.to_builtins(value) if value is not None else None


class DeploymentsProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = frozenset(event_tag(t) for t in _HANDLED)

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()
        main = Table(
            f"{NAME}_v{version}", metadata,
            Column("id", Text, primary_key=True),
            Column("stream_version", Integer, nullable=False),
            Column("owner_issuer", Text),
            Column("owner_subject", Text),
            Column("user_group", Text),
            Column("status", Text, nullable=False),
            Column("task", Text, nullable=False),
            Column("status_reason", Text),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
            Column("template_name", Text),
            Column("template_type", Text),
            Column("template_hash", Text),
            Column("template_version", Text),
            Column("requested_resources", JSONB),
            Column("callback", Text),
            Column("timeout_mins", Integer),
            Column("provider_timeout_mins", Integer),
            Column("max_providers_retry", Integer),
            Column("keep_last_attempt", Boolean, nullable=False),
            Column("operation", Integer, nullable=False),
            Column("running_attempt", Integer),
            Column("physical_id", Text),
            Column("physical_id_attempt", Integer),
            Column("provider_id", Text),
            Column("provider_name", Text),
            Column("region", Text),
            Column("project", Text),
            Column("cloud_provider_endpoint", JSONB),
            Column("iaas_type", Text),
            Column("deployment_provider", Text),
            Column("outputs", JSONB, nullable=False),
        )
        # The list queries: a user's own (createdBy=me), an admin's whole issuer, a group,
        # and status filters; every one ordered by creation time with the id as tie-break.
        Index(f"{main.name}_owner", main.c.owner_issuer, main.c.owner_subject,
              main.c.created_at, main.c.id)
        Index(f"{main.name}_issuer", main.c.owner_issuer, main.c.created_at, main.c.id)
        Index(f"{main.name}_group", main.c.user_group, main.c.created_at, main.c.id)
        Index(f"{main.name}_status", main.c.status, main.c.created_at)
        Index(f"{main.name}_created", main.c.created_at, main.c.id)
        details = Table(
            f"{NAME}_details_v{version}", metadata,
            Column("id", Text, primary_key=True),
            Column("template", Text, nullable=False),
            Column("parameters", JSONB, nullable=False),
            Column("log", Text),
        )
        return [main, details]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        applier = _APPLIERS.get(type(decoded))
        if applier is not None:
            await applier(conn, event, decoded, tables[0], tables[1])


projection = DeploymentsProjection()


# ---------------------------------------------------------------- appliers

Applier = Callable[[AsyncConnection, RecordedEvent, Any, Table, Table], Awaitable[None]]


async def _touch(conn: AsyncConnection, main: Table, event: RecordedEvent,
                 decoded: DeploymentEvent, *, touches_update_time: bool = True,
                 **values: Any) -> bool:
    """Apply column changes to one row once; False when the event was already applied."""
    if touches_update_time:
        values["updated_at"] = func.greatest(main.c.updated_at, decoded.occurred_at)
    result = await conn.execute(
        update(main)
        .where(main.c.id == decoded.deployment_id, main.c.stream_version < event.version)
        .values(stream_version=event.version, **values)
        .returning(main.c.id))
    return result.first() is not None


async def _requested(conn: AsyncConnection, event: RecordedEvent, e: DeploymentRequested,
                     main: Table, details: Table) -> None:
    identity = e.template_identity
    inserted = await conn.execute(insert(main).values(
        id=e.deployment_id, stream_version=event.version,
        owner_issuer=e.owner.issuer, owner_subject=e.owner.subject, user_group=e.user_group,
        status=DeploymentStatus.CREATE_IN_PROGRESS.value, task=Task.NONE.value,
        status_reason=None, created_at=e.occurred_at, updated_at=e.occurred_at,
        template_name=identity.name, template_type=identity.type, template_hash=identity.hash,
        template_version=identity.version,
        requested_resources=_to_json(e.requested_resources), callback=e.callback,
        timeout_mins=e.timeout_mins, provider_timeout_mins=e.provider_timeout_mins,
        max_providers_retry=e.max_providers_retry, keep_last_attempt=e.keep_last_attempt,
        operation=e.operation, outputs={},
    ).on_conflict_do_nothing().returning(main.c.id))
    if inserted.first() is None:
        return
    await conn.execute(insert(details).values(
        id=e.deployment_id, template=e.template, parameters=e.parameters, log=None,
    ).on_conflict_do_nothing())


async def _update_requested(conn: AsyncConnection, event: RecordedEvent,
                            e: DeploymentUpdateRequested, main: Table, details: Table) -> None:
    identity = e.template_identity
    if await _touch(conn, main, event, e, status=DeploymentStatus.UPDATE_IN_PROGRESS.value,
                    status_reason=None, template_name=identity.name,
                    template_type=identity.type, template_hash=identity.hash,
                    template_version=identity.version,
                    requested_resources=_to_json(e.requested_resources), callback=e.callback,
                    timeout_mins=e.timeout_mins, provider_timeout_mins=e.provider_timeout_mins,
                    operation=e.operation):
        await conn.execute(update(details).where(details.c.id == e.deployment_id).values(
            template=e.template, parameters=e.parameters))


async def _deletion_requested(conn: AsyncConnection, event: RecordedEvent,
                              e: DeploymentDeletionRequested, main: Table, _: Table) -> None:
    await _touch(conn, main, event, e, status=DeploymentStatus.DELETE_IN_PROGRESS.value,
                 status_reason=None, operation=e.operation)


async def _status_reset(conn: AsyncConnection, event: RecordedEvent, e: DeploymentStatusReset,
                        main: Table, _: Table) -> None:
    await _touch(conn, main, event, e, status=e.to_status.value, status_reason=None)


async def _retry_requested(conn: AsyncConnection, event: RecordedEvent,
                           e: DeploymentRetryRequested, main: Table, _: Table) -> None:
    await _touch(conn, main, event, e, status=DeploymentStatus.CREATE_IN_PROGRESS.value,
                 status_reason=None, operation=e.operation)


async def _scheduled(conn: AsyncConnection, event: RecordedEvent, e: DeploymentScheduled,
                     main: Table, _: Table) -> None:
    await _touch(conn, main, event, e)


async def _attempt_started(conn: AsyncConnection, event: RecordedEvent,
                           e: DeploymentAttemptStarted, main: Table, _: Table) -> None:
    endpoint = e.cloud_provider_endpoint
    await _touch(conn, main, event, e, running_attempt=e.attempt, task=Task.DEPLOYER.value,
                 provider_id=e.site.provider_id, provider_name=e.site.provider_name,
                 region=e.site.region, project=e.site.project,
                 cloud_provider_endpoint=_to_json(endpoint),
                 iaas_type=endpoint.iaas_type.value if endpoint is not None else None,
                 deployment_provider=e.deployment_provider.value)


def _attempt_ended(main: Table, attempt: int) -> dict[str, Any]:
    """Columns after ``attempt`` ended: the task falls back to NONE if it was the running one."""
    ended = main.c.running_attempt == attempt
    return {
        "running_attempt": case((ended, null()), else_=main.c.running_attempt),
        "task": case((ended, literal(Task.NONE.value)), else_=main.c.task),
    }


async def _infrastructure_created(conn: AsyncConnection, event: RecordedEvent,
                                  e: DeploymentInfrastructureCreated, main: Table,
                                  _: Table) -> None:
    # physicalId is the infrastructure of the latest attempt that made one: a late report
    # about an older attempt does not replace it.
    newer = or_(main.c.physical_id_attempt.is_(None), main.c.physical_id_attempt <= e.attempt)
    await _touch(conn, main, event, e,
                 physical_id=case((newer, e.infrastructure_id), else_=main.c.physical_id),
                 physical_id_attempt=case((newer, e.attempt),
                                          else_=main.c.physical_id_attempt))


async def _attempt_failed(conn: AsyncConnection, event: RecordedEvent,
                          e: DeploymentAttemptFailed, main: Table, _: Table) -> None:
    await _touch(conn, main, event, e, **_attempt_ended(main, e.attempt))


async def _completed(conn: AsyncConnection, event: RecordedEvent, e: DeploymentCompleted,
                     main: Table, _: Table) -> None:
    values: dict[str, Any] = {"status": e.status.value, "status_reason": None,
                              "outputs": e.outputs}
    if e.attempt is not None:
        values.update(_attempt_ended(main, e.attempt))
    if e.site is not None:
        values.update(provider_id=e.site.provider_id, provider_name=e.site.provider_name,
                      region=e.site.region, project=e.site.project)
    if e.cloud_provider_endpoint is not None:
        values.update(cloud_provider_endpoint=_to_json(e.cloud_provider_endpoint),
                      iaas_type=e.cloud_provider_endpoint.iaas_type.value)
    if e.deployment_provider is not None:
        values["deployment_provider"] = e.deployment_provider.value
    await _touch(conn, main, event, e, **values)


async def _failed(conn: AsyncConnection, event: RecordedEvent, e: DeploymentFailed,
                  main: Table, _: Table) -> None:
    await _touch(conn, main, event, e, status=e.status.value, status_reason=e.reason)


async def _deleted(conn: AsyncConnection, event: RecordedEvent, e: DeploymentDeleted,
                   main: Table, _: Table) -> None:
    await _touch(conn, main, event, e, status=DeploymentStatus.DELETE_COMPLETE.value,
                 status_reason=None)


async def _deletion_failed(conn: AsyncConnection, event: RecordedEvent,
                           e: DeploymentDeletionFailed, main: Table, _: Table) -> None:
    await _touch(conn, main, event, e, status=DeploymentStatus.DELETE_FAILED.value,
                 status_reason=e.reason)


async def _log_updated(conn: AsyncConnection, event: RecordedEvent, e: DeploymentLogUpdated,
                       main: Table, details: Table) -> None:
    if await _touch(conn, main, event, e, touches_update_time=False):
        await conn.execute(update(details).where(details.c.id == e.deployment_id)
                           .values(log=e.log))


_APPLIERS: dict[type[DeploymentEvent], Applier] = {
    DeploymentRequested: _requested,
    DeploymentUpdateRequested: _update_requested,
    DeploymentDeletionRequested: _deletion_requested,
    DeploymentStatusReset: _status_reset,
    DeploymentRetryRequested: _retry_requested,
    DeploymentScheduled: _scheduled,
    DeploymentAttemptStarted: _attempt_started,
    DeploymentInfrastructureCreated: _infrastructure_created,
    DeploymentAttemptFailed: _attempt_failed,
    DeploymentCompleted: _completed,
    DeploymentFailed: _failed,
    DeploymentDeleted: _deleted,
    DeploymentDeletionFailed: _deletion_failed,
    DeploymentLogUpdated: _log_updated,
}


# ---------------------------------------------------------------- queries


def _plain(row: Any) -> dict[str, Any]:
    # Column keys are SQLAlchemy quoted_name (a str subclass): plain str for msgspec.
    return {str(key): value for key, value in row.items()}


PUBLIC_COLUMNS = (
    "id", "owner_issuer", "owner_subject", "user_group", "status", "task", "status_reason",
    "created_at", "updated_at", "template_name", "template_type", "template_hash",
    "template_version", "requested_resources", "callback", "timeout_mins",
    "provider_timeout_mins", "max_providers_retry", "keep_last_attempt", "operation",
    "physical_id", "provider_id", "provider_name", "region", "project",
    "cloud_provider_endpoint", "iaas_type", "deployment_provider", "outputs",
    "stream_version",
)
"""The columns queries return (internal bookkeeping columns are left out)."""


def _columns(main: Table) -> list[Any]:
    return [main.c[name] for name in PUBLIC_COLUMNS]


def _filters(main: Table, *, owner_issuer: str | None = None,
             owner_subject: str | None = None, include_unowned: bool = False,
             user_group: str | None = None, groups_of_issuer: Sequence[str] = (),
             statuses: Sequence[str] = (), excluded_statuses: Sequence[str] = (),
             created_after: datetime | None = None, created_before: datetime | None = None,
             provider: str | None = None, template_type: str | None = None,
             iaas_type: str | None = None) -> list[ColumnElement[bool]]:
    """WHERE terms. Scope: ``owner_subject`` set -> that owner's; else ``owner_issuer`` set
    -> every owner of that issuer (plus unowned rows with ``include_unowned``); with
    ``groups_of_issuer`` the scope widens to those groups' deployments of that issuer."""
    terms: list[ColumnElement[bool]] = []
    scope: ColumnElement[bool] | None = None
    if owner_issuer is not None and owner_subject is not None:
        scope = and_(main.c.owner_issuer == owner_issuer, main.c.owner_subject == owner_subject)
    elif owner_issuer is not None:
        scope = main.c.owner_issuer == owner_issuer
        if include_unowned:
            scope = or_(scope, main.c.owner_issuer.is_(None))
    if groups_of_issuer and owner_issuer is not None:
        in_groups = and_(main.c.owner_issuer == owner_issuer,
                         main.c.user_group.in_(list(groups_of_issuer)))
        scope = in_groups if scope is None else or_(scope, in_groups)
    if scope is not None:
        terms.append(scope)
    if user_group is not None:
        terms.append(main.c.user_group == user_group)
    if statuses:
        terms.append(main.c.status.in_(list(statuses)))
    if excluded_statuses:
        terms.append(main.c.status.not_in(list(excluded_statuses)))
    if created_after is not None:
        terms.append(main.c.created_at >= created_after)
    if created_before is not None:
        terms.append(main.c.created_at <= created_before)
    if provider is not None:
        terms.append(or_(main.c.provider_name == provider, main.c.provider_id == provider))
    if template_type is not None:
        terms.append(main.c.template_type == template_type)
    if iaas_type is not None:
        terms.append(main.c.iaas_type == iaas_type)
    return terms


async def list_deployments(conn: AsyncConnection, version: int, *,
                           sort: Sequence[tuple[str, bool]] = (("created_at", True),),
                           offset: int = 0, limit: int = 10,
                           **filters: Any) -> tuple[list[dict[str, Any]], int]:
    """One page of deployments and the total matching ``filters`` (see ``_filters``).

    ``sort`` is (column of SORT_COLUMNS, descending) pairs; the id breaks ties, so pages
    never overlap. Rows are mappings of PUBLIC_COLUMNS.
    """
    main, _ = query_tables(projection, version)
    terms = _filters(main, **filters)
    order: list[Any] = []
    for key, descending in sort:
        column = main.c[SORT_COLUMNS[key]]
        if not column.nullable:
            # Plain ASC/DESC on NOT NULL columns: the (owner, created_at, id) indexes can
            # then be walked (backwards for DESC) and stop after one page.
            order.append(column.desc() if descending else column.asc())
        else:
            order.append(column.desc().nulls_last() if descending
                         else column.asc().nulls_first())
    if not any(key == "id" for key, _ in sort):
        descending = sort[0][1] if sort else True
        order.append(main.c.id.desc() if descending else main.c.id.asc())
    # The total rides along as an uncorrelated subquery (computed once, from the index):
    # one round trip, and only the page's rows are read from the table. A window count
    # would read every matching row (1,000 heap pages for a user with 1,000 deployments).
    total_matching = select(func.count()).select_from(main).where(*terms).scalar_subquery()
    query = (select(*_columns(main), total_matching.label("_total"))
             .where(*terms).order_by(*order).offset(offset).limit(limit))
    rows = [_plain(row) for row in (await conn.execute(query)).mappings()]
    if rows:
        total = int(rows[0]["_total"])
        for row in rows:
            del row["_total"]
        return rows, total
    count = await conn.execute(select(func.count()).select_from(main).where(*terms))
    return [], int(count.scalar_one())


async def get_deployment(conn: AsyncConnection, version: int,
                         deployment_id: str) -> dict[str, Any] | None:
    main, _ = query_tables(projection, version)
    row = (await conn.execute(select(*_columns(main)).where(main.c.id == deployment_id))
           ).mappings().first()
    return _plain(row) if row is not None else None


async def get_deployment_details(conn: AsyncConnection, version: int,
                                 deployment_id: str) -> dict[str, Any] | None:
    """Template, parameters and deployer log of one deployment."""
    _, details = query_tables(projection, version)
    row = (await conn.execute(select(details).where(details.c.id == deployment_id))
           ).mappings().first()
    return _plain(row) if row is not None else None
