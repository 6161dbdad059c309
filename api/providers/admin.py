"""Admin ingestion: observed provider state and operator decisions, as provider commands.

- ``POST /v1/admin/providers/observations/tree``: a Federation Registry provider tree, as
  the Feeder PUTs it to the registry;
- ``POST /v1/admin/providers/observations/feeder``: one Feeder Kafka message (or a JSON
  array of messages of one provider), the same shape the Feeder consumer reads;
- ``POST /v1/admin/providers``: register a provider; ``PUT …/{id}/status``,
  ``PUT …/{id}/priority``, ``POST``/``DELETE …/{id}/aliases``: operator decisions.

Observations are diffed against the provider's stream and only real changes are appended
(re-sending an identical observation appends nothing and answers an empty ``events`` list).
A malformed or partial tree or message is a 400 that names every problem with its path, and
nothing is appended. Every append records the caller (issuer and subject) in the event
metadata and as the events' ``actor``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from api.auth import Principal
from api.errors import ApiError
from api.legacy.common import actor_of
from api.legacy.shapes import JSON_MEDIA_TYPE, errors
from api.providers.ingestion import IngestionResult, request_metadata
from api.providers.reads import (
    READ_ERRORS,
    ProviderBoardJson,
    ProviderDetailJson,
    board_json,
    scope_json,
)
from api.providers.security import DEPENDENCIES, Caller, Providers, authenticated
from domain.providers import (
    AddProviderAlias,
    AlreadyRegistered,
    ObserveProvider,
    ProviderAlias,
    ProviderCommand,
    ProviderDetails,
    ProviderError,
    ProviderNotFound,
    ProviderStatus,
    ProviderType,
    RegisterProvider,
    RemoveProviderAlias,
    ScanScope,
    ScopeFailure,
    SetProviderPriority,
    SetProviderStatus,
    canonical_provider_id,
)
from domain.providers.sources import (
    FeederMessage,
    ProviderTree,
    observe_feeder_messages,
    observe_tree,
)

PathId = FromPath[str]
BODY = {"body": True}
ADMIN_ERRORS = errors(400, 401, 403, 404, 409, 415)


def error_status(error: ProviderError) -> int:
    """HTTP status of a provider domain refusal (mapping suggested by domain/providers/errors)."""
    if isinstance(error, ProviderNotFound):
        return 404
    if isinstance(error, AlreadyRegistered):
        return 409
    return 400


class IngestionJson(msgspec.Struct, kw_only=True):
    """What a command appended: event types in order (empty: nothing changed)."""

    providerId: str
    events: list[str]
    usageEvents: list[str]
    status: str | None
    availability: str
    streamVersion: int


class RegisterRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Register a provider ahead of (or instead of) its first scan."""

    name: str
    type: ProviderType
    providerId: str | None = None
    description: str = ""
    isPublic: bool = False
    supportEmails: list[str] = []
    authEndpoint: str | None = None
    status: ProviderStatus = ProviderStatus.ACTIVE
    aliases: list[ProviderAlias] = []
    priority: int = 50
    reason: str = ""


class StatusRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: ProviderStatus
    reason: str = ""


class PriorityRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Operator priority for the built-in ranking: 0 (avoid) to 100 (prefer)."""

    priority: int
    reason: str = ""


def _failed_scopes(values: list[str] | None) -> tuple[ScopeFailure, ...]:
    failures = []
    for value in values or []:
        region, sep, project = value.partition("/")
        if not sep or not region or not project:
            raise ApiError(400, f"failedScope {value!r} must be <region>/<project id>")
        failures.append(ScopeFailure(scope=ScanScope(region=region, project_id=project),
                                     error_kind="scan_error",
                                     message="reported failed by the caller"))
    return tuple(failures)


def _answer(result: IngestionResult) -> IngestionJson:
    state = result.state
    return IngestionJson(
        providerId=result.provider_id, events=result.event_types,
        usageEvents=result.usage_event_types,
        status=state.status.value if state.registered else None,
        availability=state.availability.value, streamVersion=state.version)


async def _run(providers: Any, request_id: str | None, principal: Principal,
               command: ProviderCommand, reason: str | None = None) -> IngestionJson:
    metadata = request_metadata(principal.issuer, principal.subject,
                                request_id=request_id or str(uuid.uuid4()), reason=reason)
    try:
        if isinstance(command, ObserveProvider):
            result = await providers.ingestion.observe(command, metadata)
        else:
            result = await providers.ingestion.command(command, metadata)
    except ProviderError as error:
        raise ApiError(error_status(error), error.message) from None
    return _answer(result)


async def _provider_id(providers: Any, explicit: str | None, name: str,
                       provider_type: ProviderType) -> str:
    if explicit:
        return explicit
    known = await providers.reads.provider_for_registry_name(name, provider_type.value)
    if known is not None:
        return str(known)
    try:
        return canonical_provider_id(name, provider_type)
    except ProviderError as error:
        raise ApiError(400, error.message) from None


ProviderIdQuery = Annotated[str | None, QueryParameter(
    name="providerId", description="The canonical provider id to observe into; default: the "
                                   "provider registered with this registry name, else "
                                   "`<name slug>.<type>`")]
ScanIdQuery = Annotated[str | None, QueryParameter(
    name="scanId", description="An id of the scan, stamped on the events")]
FailedScopeQuery = Annotated[list[str] | None, QueryParameter(
    name="failedScope", description="`<region>/<project id>` of a connection that failed "
                                    "(repeatable): it removes nothing and is recorded as a "
                                    "scan failure")]


class ProviderAdminController(Controller):
    path = "/v1/admin/providers"
    tags = ["providers (admin)"]
    guards = [authenticated]
    opt = {"admin": True}  # every provider admin endpoint
    dependencies = DEPENDENCIES
    security = [{"bearer": []}]

    @post("/observations/tree", operation_id="observeProviderTree", opt=BODY,
          status_code=200, responses=ADMIN_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def observe_tree(self, providers: Providers, principal: Caller,
                           data: JSONBody[ProviderTree],
                           provider_id: ProviderIdQuery = None, scan_id: ScanIdQuery = None,
                           failed_scope: FailedScopeQuery = None) -> IngestionJson:
        """Observe a Federation Registry provider tree; append only what changed."""
        try:
            command = observe_tree(
                data, actor=actor_of(principal),
                provider_id=await _provider_id(providers, provider_id, data.name, data.type),
                scan_id=scan_id, scopes_failed=_failed_scopes(failed_scope))
        except ProviderError as error:
            raise ApiError(error_status(error), error.message) from None
        return await _run(providers, scan_id, principal, command)

    @post("/observations/feeder", operation_id="observeFeederMessages", opt=BODY,
          status_code=200, responses=ADMIN_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def observe_feeder(self, providers: Providers, principal: Caller,
                             data: JSONBody[FeederMessage | list[FeederMessage]],
                             provider_id: ProviderIdQuery = None, scan_id: ScanIdQuery = None,
                             failed_scope: FailedScopeQuery = None) -> IngestionJson:
        """Observe Feeder messages (v1.2.0-1.4.0) of one provider: each is a region x project
        scope scanned fine."""
        messages = data if isinstance(data, list) else [data]
        if not messages:
            raise ApiError(400, "Invalid Feeder messages: no message")
        first = messages[0]
        try:
            command = observe_feeder_messages(
                messages, actor=actor_of(principal),
                provider_id=await _provider_id(providers, provider_id, first.provider_name,
                                               first.provider_type),
                scan_id=scan_id, scopes_failed=_failed_scopes(failed_scope))
        except ProviderError as error:
            raise ApiError(error_status(error), error.message) from None
        return await _run(providers, scan_id, principal, command)

    @post("/", operation_id="registerProvider", opt=BODY, status_code=201,
          responses=ADMIN_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def register(self, providers: Providers, principal: Caller,
                       data: JSONBody[RegisterRequest]) -> IngestionJson:
        """Register a provider (idempotent: the same registration again appends nothing)."""
        try:
            provider_id = data.providerId or canonical_provider_id(data.name, data.type)
        except ProviderError as error:
            raise ApiError(400, error.message) from None
        command = RegisterProvider(
            provider_id=provider_id, actor=actor_of(principal),
            details=ProviderDetails(name=data.name, type=data.type,
                                    description=data.description, is_public=data.isPublic,
                                    support_emails=tuple(data.supportEmails),
                                    auth_endpoint=data.authEndpoint),
            status=data.status, aliases=tuple(data.aliases), priority=data.priority,
            reason=data.reason)
        return await _run(providers, None, principal, command, data.reason)

    @put("/{provider_id:str}/status", operation_id="setProviderStatus", opt=BODY,
         responses=ADMIN_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def set_status(self, providers: Providers, principal: Caller, provider_id: PathId,
                         data: JSONBody[StatusRequest]) -> IngestionJson:
        """Set the operational status: active, maintenance (keeps the catalogue), removed."""
        return await _run(providers, None, principal, SetProviderStatus(
            provider_id=provider_id, actor=actor_of(principal), status=data.status,
            reason=data.reason), data.reason)

    @put("/{provider_id:str}/priority", operation_id="setProviderPriority", opt=BODY,
         responses=ADMIN_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def set_priority(self, providers: Providers, principal: Caller, provider_id: PathId,
                           data: JSONBody[PriorityRequest]) -> IngestionJson:
        """Set the operator priority used by the built-in ranking (0-100, default 50)."""
        return await _run(providers, None, principal, SetProviderPriority(
            provider_id=provider_id, actor=actor_of(principal), priority=data.priority,
            reason=data.reason), data.reason)

    @post("/{provider_id:str}/aliases", operation_id="addProviderAlias", opt=BODY,
          status_code=200, responses=ADMIN_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def add_alias(self, providers: Providers, principal: Caller, provider_id: PathId,
                        data: JSONBody[ProviderAlias]) -> IngestionJson:
        """Add a name another system (registry, monitoring, ranker, fed-mgr) uses."""
        return await _run(providers, None, principal, AddProviderAlias(
            provider_id=provider_id, actor=actor_of(principal), alias=data))

    @delete("/{provider_id:str}/aliases", operation_id="removeProviderAlias",
            status_code=200, responses=ADMIN_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def remove_alias(
        self, providers: Providers, principal: Caller, provider_id: PathId,
        system: Annotated[str, QueryParameter(name="system")],
        name: Annotated[str, QueryParameter(name="name")],
        region: Annotated[str | None, QueryParameter(name="region")] = None,
    ) -> IngestionJson:
        """Remove an alias (``system``, ``name`` and optionally ``region`` as query)."""
        try:
            alias = msgspec.convert({"system": system, "name": name, "region": region},
                                    ProviderAlias)
        except msgspec.ValidationError as error:
            raise ApiError(400, f"Invalid alias: {error}") from None
        return await _run(providers, None, principal, RemoveProviderAlias(
            provider_id=provider_id, actor=actor_of(principal), alias=alias))

    @get("/", operation_id="listProviders", responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def board(self, providers: Providers) -> list[ProviderBoardJson]:
        """The provider status board: every provider, lifecycle, availability, counts."""
        return [board_json(p) for p in await providers.reads.providers()]

    @get("/{provider_id:str}", operation_id="getProvider",
         responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def provider(self, providers: Providers, provider_id: PathId) -> ProviderDetailJson:
        """One provider: its board row, every scope's scan outcome, every quota record."""
        row = await providers.reads.provider(provider_id)
        if row is None:
            raise ApiError(404, f"The provider {provider_id} doesn't exist")
        scopes = await providers.reads.scopes(provider_id=provider_id)
        quotas = await providers.reads.quotas(provider_id=provider_id)
        return ProviderDetailJson(provider=board_json(row),
                                  scopes=[scope_json(s) for s in scopes], quotas=quotas)
