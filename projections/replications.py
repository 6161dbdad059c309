"""The replications view: one row per replication (``/data/replications`` and the Rucio
replicator's restart and rule-sharing queries).

Fed by the ``replication`` category. Each row keeps the folded domain state (``state``,
JSON) next to the columns the API shows and filters on; an event is applied by folding it
into that state with ``domain.replications.evolve``, so the view and the aggregate cannot
drift apart. ``stream_version`` makes a repeated event a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.replications import (
    EVENT_TYPES_BY_TAG,
    ReplicationEvent,
    ReplicationState,
    ReplicationStatus,
    evolve,
    initial_state,
)
from eventstore.projection import query_tables, upsert
from eventstore.records import RecordedEvent

NAME = "replications"
VERSION = 1


def wanted_rule_ids(state: ReplicationState) -> list[str]:
    """Rule ids the replication still wants in Rucio (none once cancelled or failed)."""
    if not state.active:
        return []
    wanted = [state.current_generation]
    if state.pending_migration is not None:
        wanted.append(state.pending_migration)
    return [rule_id for g in wanted if not g.removed for rule_id in g.rule_ids]


def row_of(state: ReplicationState) -> dict[str, Any]:
    current = state.current_generation
    pending = state.pending_migration
    status = state.status
    reason = state.failure_reason or state.cancel_reason
    if reason is None and state.generations and state.generations[-1].failure_reason:
        reason = f"migration failed: {state.generations[-1].failure_reason}"
    return {
        "id": state.replication_id,
        "stream_version": state.version,
        "owner_issuer": state.owner.issuer if state.owner else None,
        "owner_subject": state.owner.subject if state.owner else None,
        "deployment_id": state.deployment_id,
        "requirement_index": state.requirement_index,
        "wait": state.wait,
        "status": status.value if status else ReplicationStatus.REQUESTED.value,
        "dids": list(state.dids),
        "copies": state.copies,
        "lifetime_seconds": state.lifetime_seconds,
        "rse_expression": current.rse_expression,
        "rule_ids": list(current.rule_ids),
        "rule_state": current.state.value if current.state else None,
        "locks_ok": current.locks_ok,
        "locks_replicating": current.locks_replicating,
        "locks_stuck": current.locks_stuck,
        "migration_rse_expression": pending.rse_expression if pending else None,
        "migration_rule_ids": list(pending.rule_ids) if pending else [],
        "migration_rule_state": pending.state.value if pending and pending.state else None,
        "reason": reason,
        "settled": state.settled,
        "wanted_rule_ids": wanted_rule_ids(state),
        "created_at": state.created_at,
        "updated_at": state.updated_at or state.created_at,
        "state": msgspec.to_builtins(state),
    }


class ReplicationsProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = frozenset(EVENT_TYPES_BY_TAG)

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()
        return [Table(
            f"{NAME}_v{version}", metadata,
            Column("id", Text, primary_key=True),
            Column("stream_version", Integer, nullable=False),
            Column("owner_issuer", Text),
            Column("owner_subject", Text),
            Column("deployment_id", Text, index=True),
            Column("requirement_index", Integer),
            Column("wait", Boolean, nullable=False),
            Column("status", Text, nullable=False),
            Column("dids", JSONB, nullable=False),
            Column("copies", Integer, nullable=False),
            Column("lifetime_seconds", Integer),
            Column("rse_expression", Text, nullable=False),
            Column("rule_ids", JSONB, nullable=False),
            Column("rule_state", Text),
            Column("locks_ok", Integer, nullable=False),
            Column("locks_replicating", Integer, nullable=False),
            Column("locks_stuck", Integer, nullable=False),
            Column("migration_rse_expression", Text),
            Column("migration_rule_ids", JSONB, nullable=False),
            Column("migration_rule_state", Text),
            Column("reason", Text),
            Column("settled", Boolean, nullable=False, index=True),
            Column("wanted_rule_ids", JSONB, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
            Column("state", JSONB, nullable=False),
        )]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        if not isinstance(decoded, ReplicationEvent):
            return
        table = tables[0]
        replication_id = decoded.replication_id
        stored = (await conn.execute(select(table.c.state, table.c.stream_version)
                                     .where(table.c.id == replication_id))).first()
        if stored is not None and event.version <= stored.stream_version:
            return  # redelivered
        state = (msgspec.convert(stored.state, ReplicationState) if stored is not None
                 else initial_state())
        state = evolve(state, decoded)
        await upsert(conn, table, row_of(state))


projection = ReplicationsProjection()


# ---------------------------------------------------------------- queries

_PUBLIC = ("id", "owner_issuer", "owner_subject", "deployment_id", "requirement_index", "wait",
           "status", "dids", "copies", "lifetime_seconds", "rse_expression", "rule_ids",
           "rule_state", "locks_ok", "locks_replicating", "locks_stuck",
           "migration_rse_expression", "migration_rule_ids", "migration_rule_state", "reason",
           "created_at", "updated_at", "stream_version")


def _plain(row: Any) -> dict[str, Any]:
    # Plain str keys (SQLAlchemy's are a str subclass that msgspec does not take).
    return {str(key): value for key, value in row.items()}


def _table(version: int) -> Table:
    return query_tables(projection, version)[0]


async def get_replication(conn: AsyncConnection, version: int,
                          replication_id: str) -> dict[str, Any] | None:
    table = _table(version)
    row = (await conn.execute(select(*[table.c[name] for name in _PUBLIC])
                              .where(table.c.id == replication_id))).mappings().first()
    return _plain(row) if row is not None else None


async def list_replications(conn: AsyncConnection, version: int, *,
                            owner_issuer: str | None = None, owner_subject: str | None = None,
                            deployment_id: str | None = None, offset: int = 0,
                            limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    """Newest first. ``owner_issuer`` alone: that whole issuer (an admin's view)."""
    table = _table(version)
    conditions = []
    if owner_issuer is not None:
        conditions.append(table.c.owner_issuer == owner_issuer)
    if owner_subject is not None:
        conditions.append(table.c.owner_subject == owner_subject)
    if deployment_id is not None:
        conditions.append(table.c.deployment_id == deployment_id)
    where = and_(*conditions) if conditions else None
    query = select(*[table.c[name] for name in _PUBLIC])
    count = select(func.count()).select_from(table)
    if where is not None:
        query, count = query.where(where), count.where(where)
    rows = (await conn.execute(query.order_by(table.c.created_at.desc(), table.c.id)
                               .offset(offset).limit(limit))).mappings().all()
    total = int((await conn.execute(count)).scalar_one())
    return [_plain(row) for row in rows], total


async def unsettled_ids(conn: AsyncConnection, version: int) -> list[str]:
    table = _table(version)
    rows = await conn.execute(select(table.c.id).where(table.c.settled.is_(False)))
    return [row.id for row in rows]


async def rule_holders(conn: AsyncConnection, version: int, rule_id: str, *,
                       excluding: str) -> list[str]:
    table = _table(version)
    rows = await conn.execute(select(table.c.id).where(
        table.c.wanted_rule_ids.contains([rule_id]), table.c.id != excluding))
    return [row.id for row in rows]
