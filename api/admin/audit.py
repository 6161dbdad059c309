"""Admin audit endpoints: the global event query, the JSON Lines export with the hash
chain, tamper verification, and replays of a projection into a scratch schema.

Issuer scoping: the event query returns events whose actor belongs to the admin's issuer;
the export holds the deployment streams owned by users of that issuer (whole streams, so
every exported chain verifies). Verification covers the whole log: it reveals positions
and stream ids of broken links only, never payloads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import JSONBody, QueryParameter
from litestar.response import Stream

from api.admin.formats import table_response
from api.admin.ports import AuditEventQuery, AuditLog, AuditLogDependency, ReplaySummary
from api.errors import ApiError
from api.legacy.common import parse_time, strict_int
from api.legacy.security import DEPENDENCIES, AnyRequest, Caller, authenticated
from api.legacy.shapes import READ_ERRORS, errors
from eventstore.records import RecordedEvent

MAX_PAGE = 1000
JSON_LINES = "application/x-ndjson"


class AuditEvent(msgspec.Struct, kw_only=True):
    position: int
    streamId: str
    version: int
    eventId: str
    type: str
    recordedAt: datetime
    actorIssuer: str | None = None
    actorSubject: str | None = None
    correlationId: str | None = None
    causationId: str | None = None
    requestId: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class AuditEventPage(msgspec.Struct, kw_only=True):
    content: list[AuditEvent]
    next: int | None
    """Pass as ``after`` for the next page (null: no more events)."""


class BrokenLinkJson(msgspec.Struct, kw_only=True, rename="camel"):
    position: int
    stream_id: str
    version: int
    event_id: str
    problem: str
    """``hash mismatch`` (payload or hash rewritten) or ``version gap`` (event removed)."""


class VerifyAnswer(msgspec.Struct, kw_only=True):
    intact: bool
    events: int
    streams: int
    brokenLinks: int
    firstBroken: BrokenLinkJson | None = None


class ReplayRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    projection: str
    schema: str
    position: int | None = None
    until: str | None = None


def audit_event(event: RecordedEvent) -> AuditEvent:
    metadata = event.metadata
    return AuditEvent(
        position=event.position, streamId=event.stream_id, version=event.version,
        eventId=event.event_id, type=event.type, recordedAt=event.recorded_at,
        actorIssuer=metadata.actor_issuer, actorSubject=metadata.actor_subject,
        correlationId=metadata.correlation_id, causationId=metadata.causation_id,
        requestId=metadata.request_id, data=msgspec.json.decode(event.data))


class AuditController(Controller):
    path = "/v1/admin/audit"
    tags = ["audit"]
    guards = [authenticated]
    opt = {"admin": True}  # admins of the token's issuer only (403 otherwise)
    dependencies = DEPENDENCIES
    security = [{"bearer": []}]

    @get(["/events"], operation_id="auditEvents", responses=READ_ERRORS)
    async def events(
        self, request: AnyRequest, principal: Caller, audit_log: AuditLogDependency,
        actor: Annotated[str | None, QueryParameter(
            name="actor", description="subject of the actor (within the admin's issuer)")] = None,
        type_: Annotated[list[str] | None, QueryParameter(
            name="type", description="event type(s), comma separated")] = None,
        start: Annotated[str | None, QueryParameter(name="from", description="RFC 3339")] = None,
        end: Annotated[str | None, QueryParameter(name="to", description="RFC 3339")] = None,
        stream: Annotated[str | None, QueryParameter(name="stream")] = None,
        after: Annotated[str | None, QueryParameter(
            name="after", description="log position of the previous page's `next`")] = None,
        size: Annotated[str | None, QueryParameter(name="size", description="max 1000")] = None,
        format_: Annotated[str | None, QueryParameter(name="format")] = None,
    ) -> Response[AuditEventPage]:
        """Events caused by actors of the admin's issuer, in log position order, paged by
        position (`after` = the previous page's `next`). JSON, or CSV (`format=csv`)."""
        limit = strict_int(size, "size", 100, low=1, high=MAX_PAGE)
        types = tuple(part.strip() for value in type_ or [] for part in value.split(",")
                      if part.strip())
        query = AuditEventQuery(
            actor_issuer=principal.issuer, actor_subject=actor or None, types=types,
            recorded_from=parse_time(start, "from"), recorded_to=parse_time(end, "to"),
            stream_id=stream or None, after=strict_int(after, "after", 0), limit=limit + 1)
        found = await audit_log.events(query)
        content = [audit_event(e) for e in found[:limit]]
        page = AuditEventPage(content=content,
                              next=content[-1].position if len(found) > limit else None)
        rows = [{k: v for k, v in msgspec.to_builtins(e).items() if k != "data"}
                for e in content]
        return table_response(request, format_, page, rows, filename="audit-events")

    @get(["/export"], operation_id="auditExport", responses=READ_ERRORS,
         media_type=JSON_LINES)
    async def export(
        self, principal: Caller, audit_log: AuditLogDependency,
        after: Annotated[str | None, QueryParameter(
            name="after", description="export events after this log position")] = None,
        to: Annotated[str | None, QueryParameter(
            name="to", description="up to the event at this log position")] = None,
    ) -> Stream:
        """The deployment streams of the admin's issuer as JSON Lines, streamed, each line
        with its hash: a third party recomputes the chains offline (docs/audit.md gives the
        algorithm; eventstore.audit.verify_export implements it)."""
        try:
            lines = await audit_log.export(owner_issuer=principal.issuer,
                                           after=strict_int(after, "after", 0) or None,
                                           to=strict_int(to, "to", 0) or None)
        except LookupError as error:
            raise ApiError(404, str(error)) from None
        return Stream(lines, media_type=JSON_LINES, headers={
            "Content-Disposition": 'attachment; filename="audit-export.jsonl"'})

    @get(["/verify"], operation_id="auditVerify", responses=READ_ERRORS)
    async def verify_get(self, audit_log: AuditLogDependency) -> VerifyAnswer:
        """Recompute every stream's hash chain; report the first broken link."""
        return await _verify(audit_log)

    @post(["/verify"], operation_id="auditVerifyRun", responses=READ_ERRORS, status_code=200)
    async def verify_post(self, audit_log: AuditLogDependency) -> VerifyAnswer:
        """Same as GET (for clients that treat a full scan as an action)."""
        return await _verify(audit_log)

    @post(["/replay"], operation_id="auditReplay", status_code=200,
          responses=errors(400, 401, 403, 404))
    async def replay(self, audit_log: AuditLogDependency,
                     data: JSONBody[ReplayRequest]) -> ReplaySummary:
        """Rebuild a projection into a scratch schema as of a log position and/or a time,
        then query it (statistics: `?replay=<schema>`). The live tables are untouched."""
        until = parse_time(data.until, "until")
        if data.position is None and until is None:
            raise ApiError(400, "Give a position or an until time to replay to")
        try:
            return await audit_log.replay(data.projection, schema=data.schema,
                                          position=data.position, until=until)
        except KeyError as error:
            raise ApiError(404, str(error.args[0])) from None
        except LookupError as error:
            raise ApiError(404, str(error)) from None
        except ValueError as error:
            raise ApiError(400, str(error)) from None


async def _verify(audit_log: AuditLog) -> VerifyAnswer:
    report = await audit_log.verify()
    first = report.first_broken
    return VerifyAnswer(
        intact=report.intact, events=report.events, streams=report.streams,
        brokenLinks=report.broken_links,
        firstBroken=BrokenLinkJson(**msgspec.structs.asdict(first)) if first else None)
