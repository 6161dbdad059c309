"""What the legacy controllers share: request bodies, lenient paging, sort keys, dates,
TOSCA validation, the command path and the state -> view conversion."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response

from api.auth import Principal
from api.errors import ApiError
from api.legacy.ports import DeploymentView, LegacyApi
from api.legacy.shapes import JSON_MEDIA_TYPE, TEXT_MEDIA_TYPE
from domain.deployments import (
    DataRequirement,  # issue 6
    DeploymentCommand,
    DeploymentState,
    DeploymentStatus,
    OsRequest,
    RequestedResources,
    TemplateIdentity,
    decide,
    evolve,
    initial_state,
    stream_id,
)
from domain.identity import Actor
from eventstore.command_service import Decider
from eventstore.records import Metadata
from tosca import TemplateError, ValidatorUnavailable

DECIDER: Decider[Any, DeploymentState, Any] = Decider(
    initial_state=initial_state, evolve=evolve, decide=decide)

# ---------------------------------------------------------------- request bodies


class DeploymentRequest(msgspec.Struct, kw_only=True):
    """Body of POST and PUT /deployments (legacy ``DeploymentRequest``).

    Lenient like the legacy Jackson setup: unknown fields are ignored, ``null`` means
    absent, and booleans and numbers may come as strings (``"true"``, ``"720"``).
    """

    template: str | None = None
    parameters: dict[str, Any] | None = None
    callback: str | None = None
    timeoutMins: int | None = None
    providerTimeoutMins: int | None = None
    maxProvidersRetry: int | None = None
    keepLastAttempt: bool | None = None
    userGroup: str | None = None
    # Additive (issue 6): input data Rucio must replicate; only read on create.
    dataRequirements: list[DataRequirementRequest] | None = None


# --- data requirements (issue 6) -----------------------------------------------------------


class DataRequirementRequest(msgspec.Struct, kw_only=True):
    """One entry of ``dataRequirements`` on POST /deployments: copies of ``dids``
    (``scope:name``) on ``rseExpression``; with ``wait`` (the default) the deployer starts
    only once Rucio reports the rules OK, and a STUCK rule fails the deployment."""

    dids: list[str]
    rseExpression: str
    copies: int = 1
    lifetimeSeconds: int | None = None
    wait: bool = True


def data_requirements(
        requests: list[DataRequirementRequest] | None) -> tuple[DataRequirement, ...]:
    return tuple(DataRequirement(dids=tuple(r.dids), rse_expression=r.rseExpression.strip(),
                                 copies=r.copies, lifetime_seconds=r.lifetimeSeconds,
                                 wait=r.wait) for r in requests or ())


# --- end data requirements -----------------------------------------------------------------


class ResetRequest(msgspec.Struct, kw_only=True):
    """Body of PATCH /deployments/{id}: the status to reset to."""

    status: str | None = None


class ActionRequest(msgspec.Struct, kw_only=True):
    """Body of POST …/resources/{rid}/actions: ``start`` or ``stop``."""

    type: str | None = None


# ---------------------------------------------------------------- query values


def lenient_int(value: str | None, default: int) -> int:
    """Spring's pageable resolver: an unreadable number is the default, not an error."""
    if value is None:
        return default
    try:
        return int(value.strip())
    except ValueError:
        return default


def strict_int(value: str | None, parameter: str, default: int, *, low: int = 0,
               high: int | None = None) -> int:
    """A number the newer endpoints (audit, data) require: unreadable or out of range is a
    400 naming the parameter; absent or blank is ``default``."""
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"Value {value} for param {parameter} is not an integer") from None
    if number < low or (high is not None and number > high):
        limits = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, f"Value {value} for param {parameter} must be {limits}")
    return number


def paging(page: str | None, size: str | None, legacy: LegacyApi) -> tuple[int, int]:
    settings = legacy.settings
    number = max(0, lenient_int(page, 0))
    per_page = lenient_int(size, settings.default_page_size)
    if per_page < 1:
        per_page = settings.default_page_size
    return number, min(per_page, settings.max_page_size)


def parse_sort(values: Sequence[str] | None, keys: Mapping[str, str],
               default: str = "createdAt,desc") -> tuple[list[tuple[str, bool]], list[str]]:
    """Spring ``sort=a[,b...][,asc|desc]`` (repeatable) over public keys: (column, desc)
    pairs and the values to echo in links. An unknown key is a 400 (the legacy 500)."""
    given = [v for v in (values or []) if v.strip()]
    if not given:
        given = [default]
    order: list[tuple[str, bool]] = []
    for value in given:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        descending = False
        if parts and parts[-1].lower() in ("asc", "desc"):
            descending = parts.pop().lower() == "desc"
        if not parts:
            raise ApiError(400, f"Sort value {value!r} names no property")
        for part in parts:
            column = keys.get(part)
            if column is None:
                raise ApiError(400, f"Unknown sort property {part!r}; use one of "
                                    f"{', '.join(sorted(keys))}")
            order.append((column, descending))
    return order, given


_STATUS_NAMES = {s.value for s in DeploymentStatus}


def parse_statuses(values: Sequence[str] | None, parameter: str) -> tuple[str, ...]:
    """Comma-separated (and/or repeated) status names, any case; unknown names are a 400."""
    found: list[str] = []
    for value in values or []:
        for name in value.split(","):
            name = name.strip().upper()
            if not name:
                continue
            if name not in _STATUS_NAMES:
                raise ApiError(400, f"Value {name} for param {parameter} is not a deployment "
                                    f"status; use one of {', '.join(sorted(_STATUS_NAMES))}")
            if name not in found:
                found.append(name)
    return tuple(found)


_COMPACT = re.compile(r"^\d{12}$")  # orchent's --before/--after: yyyyMMddHHmm


def parse_time(value: str | None, parameter: str) -> datetime | None:
    """RFC 3339 / ISO 8601, the legacy ``yyyy-MM-dd'T'HH:mmZ``, or ``yyyyMMddHHmm`` (UTC)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if _COMPACT.match(text):
            return datetime.strptime(text, "%Y%m%d%H%M").replace(tzinfo=UTC)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"Value {value} for param {parameter} is not a date-time "
                            f"(use RFC 3339, e.g. 2025-02-20T10:15:00Z)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ---------------------------------------------------------------- groups


def checked_group(principal: Principal, group: str) -> None:
    """Legacy messages: the group must be one of the token's groups (either claim)."""
    if not principal.groups:
        raise ApiError(403, "User's token does not contain a group claim or it is empty")
    if group.removeprefix("/") not in principal.groups:
        raise ApiError(403, f"The group {group} is not in the user's authorized groups")


def create_group(principal: Principal, group: str | None, legacy: LegacyApi) -> str | None:
    if group is None or not group.strip():
        if not legacy.settings.require_user_group:
            return None
        known = ", ".join(sorted(principal.groups))
        hint = (f"one of your groups: {known}" if known
                else "your token has no group claim (groups or wlcg.groups)")
        raise ApiError(400, f"userGroup is required: the group (project) the deployment is "
                            f"charged to, {hint}")
    checked_group(principal, group)
    return group


# ---------------------------------------------------------------- TOSCA


async def validated(legacy: LegacyApi, template: str,
                    inputs: Mapping[str, Any]) -> tuple[TemplateIdentity, RequestedResources]:
    """Validate offline; TOSCA problems are a 400 naming them, an overloaded validator a 503."""
    try:
        facts = await legacy.validator.validate(template, dict(inputs))
    except TemplateError as error:
        raise ApiError(400, f"Invalid TOSCA template: {error.message}") from None
    except ValidatorUnavailable as error:
        raise ApiError(503, f"The template validator is busy, retry later ({error})",
                       {"Retry-After": "5"}) from None
    return identity_of(facts, template), resources_of(facts)


def identity_of(facts: Any, template: str) -> TemplateIdentity:
    digest = str(getattr(facts, "template_hash", "") or "")
    return TemplateIdentity(
        name=str(facts.template_name), type=str(facts.template_type),
        hash=digest.removeprefix("sha256:") or uuid.uuid5(uuid.NAMESPACE_OID, template).hex,
        version=getattr(facts, "template_version", None),
        node_types=tuple(getattr(facts, "node_types", ()) or ()))


def resources_of(facts: Any) -> RequestedResources:
    r = facts.resources
    return RequestedResources(
        vms=int(r.vms), vcpus=int(r.vcpus), ram_mb=round(float(r.ram_mb)), gpus=int(r.gpus),
        disk_gb=float(r.disk_gb), volumes=int(r.volumes), volumes_gb=float(r.volumes_gb),
        public_ips=int(r.public_ips),
        os=tuple(OsRequest(image=o.image, distribution=o.distribution, version=o.version,
                           type=o.type, architecture=o.architecture) for o in r.os))


# ---------------------------------------------------------------- commands


def actor_of(principal: Principal) -> Actor:
    return Actor(issuer=principal.issuer, subject=principal.subject)


def request_id(request: Request[Any, Any, Any]) -> str:
    given = request.headers.get("x-request-id")
    return given[:200] if given else str(uuid.uuid4())


def metadata_of(request: Request[Any, Any, Any], principal: Principal,
                reason: str | None = None) -> Metadata:
    """The event metadata of a command an API call causes: who, which request, why."""
    return Metadata(actor_issuer=principal.issuer, actor_subject=principal.subject,
                    request_id=request_id(request),
                    correlation_id=request.headers.get("x-correlation-id"), reason=reason)


async def execute(legacy: LegacyApi, request: Request[Any, Any, Any], principal: Principal,
                  command: DeploymentCommand, *, reason: str | None = None,
                  idempotency_key: str | None = None) -> DeploymentState:
    """Decide and append. No automatic retry on a concurrent change: of two commands racing
    on one deployment exactly one wins, the other is a 409 (legacy optimistic locking)."""
    result = await legacy.commands.execute(stream_id(command.deployment_id), DECIDER, command,
                                           metadata_of(request, principal, reason),
                                           idempotency_key=idempotency_key,
                                           conflict_retries=0)
    return result.state


def view_of(state: DeploymentState) -> DeploymentView:
    """The view a command result gives (read-your-writes before the projection catches up)."""
    assert state.status is not None and state.created_at is not None
    identity = state.template_identity
    site = state.site
    endpoint = state.cloud_provider_endpoint
    return DeploymentView(
        id=state.deployment_id, status=state.status.value, task=state.task.value,
        created_at=state.created_at, updated_at=state.updated_at or state.created_at,
        owner_issuer=state.owner.issuer if state.owner else None,
        owner_subject=state.owner.subject if state.owner else None,
        user_group=state.user_group, status_reason=state.status_reason,
        template_name=identity.name if identity else None,
        template_type=identity.type if identity else None,
        template_hash=identity.hash if identity else None,
        template_version=identity.version if identity else None,
        callback=state.callback, physical_id=state.physical_id,
        provider_id=site.provider_id if site else None,
        provider_name=site.provider_name if site else None,
        region=site.region if site else None,
        cloud_provider_endpoint=msgspec.to_builtins(endpoint) if endpoint else None,
        iaas_type=endpoint.iaas_type.value if endpoint else None,
        deployment_provider=(state.deployment_provider.value
                             if state.deployment_provider else None),
        outputs=dict(state.outputs), stream_version=state.version)


# ---------------------------------------------------------------- raw text answers


def text_response(request: Request[Any, Any, Any], body: str) -> Response[str]:
    """A raw body, never JSON-quoted; labelled JSON when the client asks for JSON (as Spring
    did for orchent's ``Accept: application/json``)."""
    accept = request.headers.get("accept", "")
    media_type = JSON_MEDIA_TYPE if "application/json" in accept else TEXT_MEDIA_TYPE
    return Response(body, media_type=media_type)
