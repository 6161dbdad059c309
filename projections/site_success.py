"""Recent outcomes of create attempts per template type and site: the ranking's success rate.

``site_success_deployments_v<N>`` remembers each deployment's template type (from
``deployment.requested``); ``site_success_outcomes_v<N>`` holds one row per finished attempt
(``deployment.attempt_failed`` -> failure, unless cancelled, which is not the site's fault;
``deployment.completed`` of a create -> success), keyed by (deployment, attempt) so that a
replayed event changes nothing. :func:`success_stats` counts them over a recent window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    MetaData,
    Table,
    Text,
    case,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.deployments import (
    DeploymentAttemptFailed,
    DeploymentCompleted,
    DeploymentRequested,
)
from domain.deployments.values import AttemptFailureCause, OperationKind, Site
from domain.providers.selection import SuccessStats
from eventstore.projection import by_type, query_tables
from eventstore.records import RecordedEvent

NAME: Final = "site_success"
VERSION: Final = 1


async def _requested(conn: AsyncConnection, event: RecordedEvent, e: DeploymentRequested,
                     tables: Sequence[Table]) -> None:
    deployments, _ = tables
    await conn.execute(insert(deployments).values(
        deployment_id=e.deployment_id, template_type=e.template_identity.type,
    ).on_conflict_do_nothing())


async def _outcome(conn: AsyncConnection, tables: Sequence[Table], deployment_id: str,
                   attempt: int, site: Site, succeeded: bool, occurred_at: datetime) -> None:
    deployments, outcomes = tables
    # The template type rides along as a subquery (NULL if the request was never seen):
    # one round trip per outcome.
    template_type = select(deployments.c.template_type).where(
        deployments.c.deployment_id == deployment_id).scalar_subquery()
    statement = insert(outcomes).values(
        deployment_id=deployment_id, attempt=attempt, provider_id=site.provider_id,
        region=site.region, template_type=template_type, succeeded=succeeded,
        occurred_at=occurred_at)
    # a success after a recorded failure of the same attempt cannot happen; last word wins
    await conn.execute(statement.on_conflict_do_update(
        index_elements=[outcomes.c.deployment_id, outcomes.c.attempt],
        set_={"succeeded": statement.excluded.succeeded,
              "occurred_at": statement.excluded.occurred_at}))


async def _attempt_failed(conn: AsyncConnection, event: RecordedEvent,
                          e: DeploymentAttemptFailed, tables: Sequence[Table]) -> None:
    if e.cause == AttemptFailureCause.CANCELLED:
        return
    await _outcome(conn, tables, e.deployment_id, e.attempt, e.site, False, e.occurred_at)


async def _completed(conn: AsyncConnection, event: RecordedEvent, e: DeploymentCompleted,
                     tables: Sequence[Table]) -> None:
    if e.kind != OperationKind.CREATE or e.site is None or e.attempt is None:
        return
    await _outcome(conn, tables, e.deployment_id, e.attempt, e.site, True, e.occurred_at)


_APPLIERS: Final[dict[str, Any]] = {
    "deployment.requested": _requested,
    "deployment.attempt_failed": _attempt_failed,
    "deployment.completed": _completed,
}


class SiteSuccessProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = frozenset(_APPLIERS)

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()
        deployments = Table(
            f"{NAME}_deployments_v{version}", metadata,
            Column("deployment_id", Text, primary_key=True),
            Column("template_type", Text, nullable=True),
        )
        outcomes = Table(
            f"{NAME}_outcomes_v{version}", metadata,
            Column("deployment_id", Text, primary_key=True),
            Column("attempt", BigInteger, primary_key=True),
            Column("provider_id", Text, nullable=False),
            Column("region", Text, nullable=True),
            Column("template_type", Text, nullable=True),
            Column("succeeded", Boolean, nullable=False),
            Column("occurred_at", DateTime(timezone=True), nullable=False),
            Index(f"{NAME}_outcomes_v{version}_by_type", "template_type", "occurred_at"),
        )
        return [deployments, outcomes]

    apply = staticmethod(by_type(_APPLIERS))


projection = SiteSuccessProjection()


async def success_stats(conn: AsyncConnection, version: int, template_type: str | None, *,
                        since: datetime) -> list[SuccessStats]:
    """Attempts and successes of ``template_type`` per site since ``since``."""
    _, outcomes = query_tables(projection, version)
    successes = func.sum(case((outcomes.c.succeeded, 1), else_=0))
    query = (
        select(outcomes.c.provider_id, outcomes.c.region, func.count().label("attempts"),
               successes.label("successes"))
        .where(outcomes.c.occurred_at >= since)
        .group_by(outcomes.c.provider_id, outcomes.c.region)
    )
    query = query.where(outcomes.c.template_type.is_(None) if template_type is None
                        else outcomes.c.template_type == template_type)
    rows = await conn.execute(query)
    return [SuccessStats(provider_id=r.provider_id, region=r.region, template_type=template_type,
                         attempts=int(r.attempts), successes=int(r.successes)) for r in rows]
