"""What the statistics and audit controllers need, as plain types and protocols the
bootstrap implements (over the statistics projection, the event store and the rebuild
machinery). The API never imports projections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import msgspec
from litestar.di import NamedDependency

from eventstore.audit import VerifyReport
from eventstore.records import RecordedEvent

StatisticsView = Literal["deployments", "active", "outcomes", "failures", "resources"]
Interval = Literal["day", "week", "month", "total"]
GROUP_BY_KEYS = ("owner", "group", "templateType", "provider", "region", "status")


class StatisticsQuery(msgspec.Struct, frozen=True, kw_only=True):
    """One statistics view, scoped and filtered.

    Scope: ``owner_subject`` None -> every deployment of ``owner_issuer`` (an admin);
    else that owner's, plus ``groups``' deployments of the same issuer (group visibility).
    ``start``/``end`` are inclusive UTC days. ``schema`` reads an audit replay's tables.
    """

    view: StatisticsView
    owner_issuer: str
    owner_subject: str | None = None
    groups: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None
    user_group: str | None = None
    provider: str | None = None
    template_type: str | None = None
    statuses: tuple[str, ...] = ()
    owner: str | None = None
    group_by: tuple[str, ...] = ()
    interval: Interval = "total"
    schema: str | None = None


# runtime_checkable: Litestar validates injected dependencies with isinstance.
@runtime_checkable
class StatisticsReader(Protocol):
    async def query(self, query: StatisticsQuery) -> list[dict[str, Any]]:
        """Rows of the view: ``period`` (when an interval is asked), the group-by columns,
        the view's measures. Raises LookupError when the (replay) tables do not exist."""
        ...


class AuditEventQuery(msgspec.Struct, frozen=True, kw_only=True):
    actor_issuer: str
    actor_subject: str | None = None
    types: tuple[str, ...] = ()
    recorded_from: datetime | None = None
    recorded_to: datetime | None = None
    stream_id: str | None = None
    after: int = 0
    """Global log position to continue after (keyset paging)."""
    limit: int = 100


class ReplaySummary(msgspec.Struct, frozen=True, kw_only=True):
    projection: str
    schema: str
    events: int
    applied: int
    position: int
    seconds: float


@runtime_checkable
class AuditLog(Protocol):
    """Audit reads straight from the log (by stream, by actor/type/time) and its proofs."""

    async def stream(self, deployment_id: str, *, to_version: int | None = None,
                     until: datetime | None = None) -> list[tuple[RecordedEvent, Any]]:
        """The deployment's events in stream order with their decoded domain events."""
        ...

    async def events(self, query: AuditEventQuery) -> list[RecordedEvent]: ...

    async def export(self, *, owner_issuer: str | None, after: int | None,
                     to: int | None) -> AsyncIterator[bytes]:
        """JSON Lines with hashes (eventstore.audit.export_log), optionally only the
        streams of deployments owned by ``owner_issuer``. Raises LookupError for a
        position that holds no event (before anything is streamed)."""
        ...

    async def verify(self) -> VerifyReport: ...

    async def replay(self, projection: str, *, schema: str, position: int | None,
                     until: datetime | None) -> ReplaySummary:
        """Rebuild ``projection`` into ``schema`` as of a log position and/or a time.
        Raises KeyError (unknown projection), ValueError (bad schema), LookupError."""
        ...


# Handler parameters (explicit Litestar dependencies, provided by name by the bootstrap).
AuditLogDependency: TypeAlias = NamedDependency[AuditLog]
StatisticsDependency: TypeAlias = NamedDependency[StatisticsReader]
