"""A deployment's audit trail, read from the log by stream (an audit read, not a view).

``GET /deployments/{id}/history``: every event in stream order with its time, actor, type,
a readable summary and the correlation id. ``GET /deployments/{id}/state?asOf=|version=``:
the deployment folded from its events up to a time or a stream version, rendered like the
legacy deployment JSON. Owner and admins of the owner's issuer only (the authorizer's
``audit`` action); anyone else gets the not-found answer, so ids do not leak.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter

from api.admin.ports import AuditLog, AuditLogDependency
from api.auth import Principal
from api.errors import ApiError
from api.legacy.common import parse_time, strict_int, view_of
from api.legacy.ports import LegacyApi
from api.legacy.security import (
    DEPENDENCIES,
    AnyRequest,
    Caller,
    Legacy,
    PathId,
    authenticated,
    not_found,
)
from api.legacy.shapes import (
    JSON_MEDIA_TYPE,
    READ_ERRORS,
    DeploymentJson,
    base_url,
    deployment_json,
)
from domain.deployments import (
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentDeletionRequested,
    DeploymentFailed,
    DeploymentInfrastructureCreated,
    DeploymentInfrastructureDestroyed,
    DeploymentLogUpdated,
    DeploymentRequested,
    DeploymentResourceActionRequested,
    DeploymentResourcesChanged,
    DeploymentRetryRequested,
    DeploymentScheduled,
    DeploymentStatusReset,
    DeploymentUpdateRequested,
    fold,
)
from eventstore.records import RecordedEvent

AUDIT = "audit"
"""The authorizer action: acts like an action (owner or admin), never a group read."""


class Actor(msgspec.Struct, frozen=True):
    issuer: str | None
    subject: str | None


class HistoryEntry(msgspec.Struct, kw_only=True):
    version: int
    position: int
    time: datetime
    recordedAt: datetime
    type: str
    actor: Actor
    summary: str
    correlationId: str | None = None
    causationId: str | None = None
    requestId: str | None = None
    eventId: str


class History(msgspec.Struct, kw_only=True):
    uuid: str
    events: list[HistoryEntry]


def _resources(event: Any) -> str:
    r = event.requested_resources
    parts = [f"{r.vms} VM(s)", f"{r.vcpus} vCPU", f"{r.ram_mb} MB RAM"]
    if r.gpus:
        parts.append(f"{r.gpus} GPU")
    return ", ".join(parts)


def _site(site: Any) -> str:
    return site.provider_name + (f" ({site.region})" if site.region else "")


def summary(event: Any) -> str:
    """One readable sentence per event (what an auditor wants to see in a list)."""
    match event:
        case DeploymentRequested():
            group = f" for group {event.user_group}" if event.user_group else ""
            return (f"Deployment requested by {event.owner.subject}{group}: template "
                    f"{event.template_identity.name!r} ({event.template_identity.type}), "
                    f"{_resources(event)}")
        case DeploymentUpdateRequested():
            return (f"Update requested from {event.previous_status}: template "
                    f"{event.template_identity.name!r}, {_resources(event)}")
        case DeploymentDeletionRequested():
            return (f"Deletion requested{' (forced)' if event.force else ''} from "
                    f"{event.previous_status}")
        case DeploymentStatusReset():
            return f"Status reset from {event.from_status} to {event.to_status}"
        case DeploymentRetryRequested():
            return f"Retry requested from {event.previous_status}"
        case DeploymentResourceActionRequested():
            return f"{event.action} requested for resource {event.resource_id}"
        case DeploymentScheduled():
            sites = ", ".join(_site(c.site) for c in event.candidates) or "no site"
            return f"Scheduled ({event.ranking_method}): {sites}"
        case DeploymentAttemptStarted():
            return f"Attempt {event.attempt} started on {_site(event.site)}"
        case DeploymentInfrastructureCreated():
            return (f"Infrastructure {event.infrastructure_id} created for attempt "
                    f"{event.attempt}")
        case DeploymentInfrastructureDestroyed():
            return f"Infrastructure {event.infrastructure_id} destroyed"
        case DeploymentAttemptFailed():
            return (f"Attempt {event.attempt} on {_site(event.site)} failed "
                    f"({event.cause}): {event.reason}")
        case DeploymentCompleted():
            where = f" on {_site(event.site)}" if event.site is not None else ""
            return f"{event.status}{where}"
        case DeploymentFailed():
            return f"{event.status}: {event.reason}"
        case DeploymentDeleted():
            return f"DELETE_COMPLETE{' (forced)' if event.force else ''}"
        case DeploymentDeletionFailed():
            return f"DELETE_FAILED: {event.reason}"
        case DeploymentResourcesChanged():
            return "Resources changed: " + ", ".join(
                f"{r.resource_id} {r.state}" for r in event.resources)
        case DeploymentLogUpdated():
            return f"Deployer log updated ({len(event.log)} characters)"
    return type(event).__name__


def entry(recorded: RecordedEvent, decoded: Any) -> HistoryEntry:
    metadata = recorded.metadata
    return HistoryEntry(
        version=recorded.version, position=recorded.position,
        time=getattr(decoded, "occurred_at", recorded.recorded_at),
        recordedAt=recorded.recorded_at, type=recorded.type,
        actor=Actor(metadata.actor_issuer, metadata.actor_subject), summary=summary(decoded),
        correlationId=metadata.correlation_id, causationId=metadata.causation_id,
        requestId=metadata.request_id, eventId=recorded.event_id)


async def _audit_stream(legacy: LegacyApi, audit_log: AuditLog, principal: Principal,
                        deployment_id: str) -> list[tuple[RecordedEvent, Any]]:
    """The stream if the caller may audit it; 404 (the legacy not-found) otherwise."""
    events = await audit_log.stream(deployment_id)
    first = events[0][1] if events else None
    if not isinstance(first, DeploymentRequested) or not await legacy.authorizer.allowed(
            principal, AUDIT, owner_issuer=first.owner.issuer,
            owner_subject=first.owner.subject, group=first.user_group):
        raise not_found(deployment_id)
    return events


class DeploymentAuditController(Controller):
    path = "/deployments"
    tags = ["audit"]
    guards = [authenticated]
    dependencies = DEPENDENCIES
    security = [{"bearer": []}]

    @get(["/{deployment_id:str}/history"], operation_id="getDeploymentHistory",
         responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def history(self, legacy: Legacy, principal: Caller, audit_log: AuditLogDependency,
                      deployment_id: PathId) -> History:
        """Every event of the deployment in order (owner and admins only; 404 otherwise)."""
        events = await _audit_stream(legacy, audit_log, principal, deployment_id)
        return History(uuid=deployment_id, events=[entry(r, d) for r, d in events])

    @get(["/{deployment_id:str}/state"], operation_id="getDeploymentStateAsOf",
         responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def state(
        self, request: AnyRequest, legacy: Legacy, principal: Caller, audit_log: AuditLogDependency,
        deployment_id: PathId,
        as_of: Annotated[str | None, QueryParameter(
            name="asOf", description="RFC 3339: the state as of this time")] = None,
        version: Annotated[str | None, QueryParameter(
            name="version", description="the state after this stream version")] = None,
    ) -> DeploymentJson:
        """The deployment as it was at a time or version, folded from its events."""
        until = parse_time(as_of, "asOf")
        to_version = strict_int(version, "version", 0, low=1) or None
        if until is None and to_version is None:
            raise ApiError(400, "Give asOf (RFC 3339) or version")
        events = await _audit_stream(legacy, audit_log, principal, deployment_id)
        # "As of" a time is the domain's time (occurred_at), the time every read model and
        # the legacy JSON show; a version is the stream's own numbering.
        decoded = [d for r, d in events
                   if (to_version is None or r.version <= to_version)
                   and (until is None or d.occurred_at <= until)]
        state = fold(decoded)
        if not state.exists:
            raise ApiError(404, f"The deployment {deployment_id} did not exist at that "
                                "time or version")
        return deployment_json(view_of(state), base_url(request, legacy.settings))


AUDIT_ROUTE_HANDLERS = [DeploymentAuditController]
