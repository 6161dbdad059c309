"""The resources view: one row per TOSCA node instance of a deployment (legacy Resource).

Rows come from ``deployment.resources_changed`` (upserts reported by the deployer
handler), a start/stop request moves the node to its transient state (``STARTING`` /
``STOPPING``, as the decider does), and ``deployment.deleted`` marks every resource of the
deployment ``DELETED`` (kept, like the deployment's tombstone). No secret is ever stored:
the events carry none (VM credentials stay at the deployer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, Table, Text, func, select
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.deployments import (
    DeploymentDeleted,
    DeploymentResourceActionRequested,
    DeploymentResourcesChanged,
    NodeState,
    ResourceAction,
    event_tag,
)
from eventstore.projection import query_tables
from eventstore.records import RecordedEvent

NAME = "resources"
VERSION = 1

_TRANSIENT = {ResourceAction.START: NodeState.STARTING, ResourceAction.STOP: NodeState.STOPPING}

SORT_COLUMNS = {"created_at": "created_at", "updated_at": "updated_at", "state": "state",
                "node_name": "node_name", "node_type": "node_type", "id": "resource_id"}


class ResourcesProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = frozenset(event_tag(t) for t in (
        DeploymentResourcesChanged, DeploymentResourceActionRequested, DeploymentDeleted))

    def tables(self, version: int) -> list[Table]:
        table = Table(
            f"{NAME}_v{version}", MetaData(),
            Column("deployment_id", Text, primary_key=True),
            Column("resource_id", Text, primary_key=True),
            Column("node_name", Text, nullable=False),
            Column("node_type", Text, nullable=False),
            Column("state", Text, nullable=False),
            Column("physical_id", Text),
            Column("im_vm_id", Text),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
            # Creation order within one event (several nodes reported at once).
            Column("ordinal", BigInteger, nullable=False),
        )
        Index(f"{table.name}_created", table.c.deployment_id, table.c.created_at,
              table.c.ordinal)
        return [table]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        (table,) = tables
        if isinstance(decoded, DeploymentResourcesChanged):
            await _changed(conn, event, decoded, table)
        elif isinstance(decoded, DeploymentResourceActionRequested):
            await conn.execute(
                sql_update(table)
                .where(table.c.deployment_id == decoded.deployment_id,
                       table.c.resource_id == decoded.resource_id)
                .values(state=_TRANSIENT[decoded.action].value))
        elif isinstance(decoded, DeploymentDeleted):
            await conn.execute(
                sql_update(table).where(table.c.deployment_id == decoded.deployment_id)
                .values(state=NodeState.DELETED.value))


async def _changed(conn: AsyncConnection, event: RecordedEvent,
                   e: DeploymentResourcesChanged, table: Table) -> None:
    if not e.resources:
        return
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.deployment_id, table.c.resource_id],
        set_={"node_name": statement.excluded.node_name,
              "node_type": statement.excluded.node_type,
              "state": statement.excluded.state,
              "physical_id": statement.excluded.physical_id,
              "im_vm_id": statement.excluded.im_vm_id,
              "updated_at": func.greatest(table.c.updated_at, statement.excluded.updated_at)})
    await conn.execute(statement, [
        {"deployment_id": e.deployment_id, "resource_id": r.resource_id,
         "node_name": r.node_name, "node_type": r.node_type, "state": r.state.value,
         "physical_id": r.physical_id, "im_vm_id": r.im_vm_id,
         "created_at": e.occurred_at, "updated_at": e.occurred_at,
         "ordinal": event.position * 10_000 + index}
        for index, r in enumerate(e.resources)])


projection = ResourcesProjection()


# ---------------------------------------------------------------- queries


def _plain(row: Any) -> dict[str, Any]:
    # Column keys are SQLAlchemy quoted_name (a str subclass): plain str for msgspec.
    return {str(key): value for key, value in row.items()}


_PUBLIC = ("deployment_id", "resource_id", "node_name", "node_type", "state", "physical_id",
           "im_vm_id", "created_at", "updated_at")


async def list_resources(conn: AsyncConnection, version: int, deployment_id: str, *,
                         node_types: Sequence[str] | None = None,
                         sort: Sequence[tuple[str, bool]] = (("created_at", True),),
                         offset: int = 0, limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    """One page of a deployment's resources (optionally only of ``node_types``) and the total."""
    (table,) = query_tables(projection, version)
    terms = [table.c.deployment_id == deployment_id]
    if node_types is not None:
        terms.append(table.c.node_type.in_(list(node_types)))
    order: list[Any] = []
    for key, descending in sort:
        column = table.c[SORT_COLUMNS[key]]
        order.append(column.desc() if descending else column.asc())
    descending = sort[0][1] if sort else True
    order.append(table.c.ordinal.desc() if descending else table.c.ordinal.asc())
    query = (select(*[table.c[n] for n in _PUBLIC], func.count().over().label("_total"))
             .where(*terms).order_by(*order).offset(offset).limit(limit))
    rows = [_plain(row) for row in (await conn.execute(query)).mappings()]
    if rows:
        total = int(rows[0]["_total"])
        for row in rows:
            del row["_total"]
        return rows, total
    count = await conn.execute(select(func.count()).select_from(table).where(*terms))
    return [], int(count.scalar_one())


async def get_resource(conn: AsyncConnection, version: int, deployment_id: str,
                       resource_id: str) -> dict[str, Any] | None:
    (table,) = query_tables(projection, version)
    row = (await conn.execute(select(*[table.c[n] for n in _PUBLIC]).where(
        table.c.deployment_id == deployment_id, table.c.resource_id == resource_id))
    ).mappings().first()
    return _plain(row) if row is not None else None
