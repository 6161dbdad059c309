"""``/data/replications``: ask Rucio for copies of data, follow them, migrate, cancel.

Authenticated like the legacy routes (bearer token, legacy scopes; mutations need one of the
mutation scopes). A replication is visible to its owner and to admins of the owner's issuer
(the configured Authorizer decides); anything else is a 404, exactly like an unknown id.
Writes go through the command service and answer from the state they produced, reads come
from the replications view (falling back to the stream for a replication created a moment
ago that the view has not caught up with).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypeAlias

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, QueryParameter

from api.auth import READ, Principal
from api.data.ports import DATA, DataApi, ReplicationView
from api.errors import ApiError
from api.legacy import common
from api.legacy.ports import LegacyApi
from api.legacy.security import (
    DEPENDENCIES,
    Caller,
    Legacy,
    PathId,
    authenticated,
    check_access,
)
from api.legacy.shapes import JSON_MEDIA_TYPE, READ_ERRORS, WRITE_ERRORS, legacy_time
from domain import replications as rep
from eventstore.command_service import Decider

DECIDER: Decider[Any, rep.ReplicationState, rep.ReplicationEvent] = Decider(
    rep.initial_state, rep.evolve, rep.decide)
MUTATION = {"mutation": True, "body": True}
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b7e3c52-8d0a-4a57-b7d4-5c2f0e9a1d63")
Data: TypeAlias = NamedDependency[DataApi]


# ---------------------------------------------------------------- bodies


class ReplicationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /data/replications."""

    dids: list[str]
    rseExpression: str
    copies: int = 1
    lifetimeSeconds: int | None = None


class MigrationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /data/replications/{id}/migrate: where the data should go instead."""

    rseExpression: str


class Progress(msgspec.Struct, kw_only=True):
    ok: int
    replicating: int
    stuck: int


class Migration(msgspec.Struct, kw_only=True):
    rseExpression: str
    ruleIds: list[str]
    ruleState: str | None


class CreatedBy(msgspec.Struct, kw_only=True):
    issuer: str | None
    subject: str | None


class ReplicationJson(msgspec.Struct, kw_only=True):
    uuid: str
    status: str
    dids: list[str]
    rseExpression: str
    copies: int
    lifetimeSeconds: int | None
    ruleIds: list[str]
    ruleState: str | None
    progress: Progress
    migration: Migration | None
    deploymentId: str | None
    requirementIndex: int | None
    wait: bool
    statusReason: str | None
    createdBy: CreatedBy
    creationTime: str
    updateTime: str


class PageMeta(msgspec.Struct, kw_only=True):
    size: int
    totalElements: int
    totalPages: int
    number: int


class ReplicationPage(msgspec.Struct, kw_only=True):
    content: list[ReplicationJson]
    page: PageMeta


def replication_json(view: ReplicationView) -> ReplicationJson:
    migration = None
    if view.migration_rse_expression is not None:
        migration = Migration(rseExpression=view.migration_rse_expression,
                              ruleIds=list(view.migration_rule_ids),
                              ruleState=view.migration_rule_state)
    return ReplicationJson(
        uuid=view.id, status=view.status, dids=list(view.dids),
        rseExpression=view.rse_expression, copies=view.copies,
        lifetimeSeconds=view.lifetime_seconds, ruleIds=list(view.rule_ids),
        ruleState=view.rule_state,
        progress=Progress(ok=view.locks_ok, replicating=view.locks_replicating,
                          stuck=view.locks_stuck),
        migration=migration, deploymentId=view.deployment_id,
        requirementIndex=view.requirement_index, wait=view.wait, statusReason=view.reason,
        createdBy=CreatedBy(issuer=view.owner_issuer, subject=view.owner_subject),
        creationTime=legacy_time(view.created_at), updateTime=legacy_time(view.updated_at))


def view_of(state: rep.ReplicationState) -> ReplicationView:
    """The view a command result or a stream read gives (read-your-writes)."""
    current = state.current_generation
    pending = state.pending_migration
    status = state.status
    assert status is not None and state.created_at is not None
    reason = state.failure_reason or state.cancel_reason
    if reason is None and state.generations[-1].failure_reason:
        reason = f"migration failed: {state.generations[-1].failure_reason}"
    return ReplicationView(
        id=state.replication_id, status=status.value, dids=list(state.dids),
        copies=state.copies, rse_expression=current.rse_expression,
        created_at=state.created_at, updated_at=state.updated_at or state.created_at,
        owner_issuer=state.owner.issuer if state.owner else None,
        owner_subject=state.owner.subject if state.owner else None,
        deployment_id=state.deployment_id, requirement_index=state.requirement_index,
        wait=state.wait, lifetime_seconds=state.lifetime_seconds,
        rule_ids=list(current.rule_ids),
        rule_state=current.state.value if current.state else None,
        locks_ok=current.locks_ok, locks_replicating=current.locks_replicating,
        locks_stuck=current.locks_stuck,
        migration_rse_expression=pending.rse_expression if pending else None,
        migration_rule_ids=list(pending.rule_ids) if pending else [],
        migration_rule_state=pending.state.value if pending and pending.state else None,
        reason=reason, stream_version=state.version)


# ---------------------------------------------------------------- helpers


def provide_data(request: Request[Any, Any, Any]) -> DataApi:
    data: DataApi = request.app.state[DATA]
    return data


def _error(error: rep.ReplicationError) -> ApiError:
    if isinstance(error, rep.ReplicationNotFound):
        return ApiError(404, error.message)
    if isinstance(error, rep.NotPermitted):
        return ApiError(403, error.message)
    if isinstance(error, rep.AlreadyExists | rep.InvalidTransition):
        return ApiError(409, error.message)
    return ApiError(400, error.message)


async def _execute(legacy: LegacyApi, request: Request[Any, Any, Any], principal: Principal,
                   command: rep.ReplicationCommand) -> rep.ReplicationState:
    try:
        result = await legacy.commands.execute(rep.replication_stream(command.replication_id),
                                               DECIDER, command,
                                               common.metadata_of(request, principal),
                                               conflict_retries=0)
    except rep.ReplicationError as error:
        raise _error(error) from None
    state: rep.ReplicationState = result.state
    return state


def _not_found(replication_id: str) -> ApiError:
    return ApiError(404, rep.ReplicationNotFound(replication_id).message)


async def _visible(legacy: LegacyApi, data_api: DataApi, principal: Principal, replication_id: str,
                   action: str = READ) -> ReplicationView:
    """The replication if the caller may see it (404 otherwise) and do ``action`` (403)."""
    view = await data_api.replications.get(replication_id)
    if view is None:
        state, _ = await legacy.commands.load(rep.replication_stream(replication_id), DECIDER)
        if not state.exists:
            raise _not_found(replication_id)
        view = view_of(state)
    await check_access(legacy, principal, action, owner_issuer=view.owner_issuer,
                       owner_subject=view.owner_subject, group=None,
                       hidden=_not_found(replication_id), denied=rep.NotPermitted().message)
    return view


# ---------------------------------------------------------------- the controller


class ReplicationsController(Controller):
    path = "/data/replications"
    tags = ["data"]
    guards = [authenticated]
    dependencies = {**DEPENDENCIES, "data_api": Provide(provide_data, sync_to_thread=False)}
    security = [{"bearer": []}]

    @get(["/"], operation_id="listReplications", responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def list_replications(
        self, legacy: Legacy, data_api: Data, principal: Caller,
        deployment_id: Annotated[str | None, QueryParameter(name="deploymentId")] = None,
        page: Annotated[str | None, QueryParameter(name="page", description="0-based")] = None,
        size: Annotated[str | None, QueryParameter(name="size", description="default 10")
                        ] = None,
    ) -> ReplicationPage:
        """The caller's replications, newest first (admins: every one of their issuer)."""
        number = common.strict_int(page, "page", 0)
        per_page = min(common.strict_int(size, "size", 10, low=1), 2000)
        views, total = await data_api.replications.list(
            owner_issuer=principal.issuer,
            owner_subject=None if principal.is_admin else principal.subject,
            deployment_id=deployment_id, offset=number * per_page, limit=per_page)
        return ReplicationPage(
            content=[replication_json(view) for view in views],
            page=PageMeta(size=per_page, totalElements=total,
                          totalPages=(total + per_page - 1) // per_page, number=number))

    @post(["/"], operation_id="createReplication", responses=WRITE_ERRORS, status_code=201,
          opt=MUTATION, media_type=JSON_MEDIA_TYPE)
    async def create_replication(self, request: Request[Any, Any, Any], legacy: Legacy,
                                 data_api: Data, principal: Caller,
                                 data: JSONBody[ReplicationRequest]) -> ReplicationJson:
        """Ask Rucio for ``copies`` copies of ``dids`` (``scope:name``) on ``rseExpression``
        for ``lifetimeSeconds`` (absent: no expiry). Answers at once (``REQUESTED``); the
        rule ids and progress follow. An ``Idempotency-Key`` header makes a repeated
        request return the same replication."""
        if not data_api.rucio_configured:
            raise ApiError(503, "Data management is not configured on this orchestrator "
                                "(no Rucio server)")
        key = request.headers.get("idempotency-key")
        replication_id = (str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE,
                                         f"{principal.issuer}\n{principal.subject}\n{key}"))
                          if key else str(uuid.uuid4()))
        command = rep.RequestReplication(
            replication_id=replication_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin, dids=tuple(data.dids),
            rse_expression=data.rseExpression, copies=data.copies,
            lifetime_seconds=data.lifetimeSeconds)
        state = await _execute(legacy, request, principal, command)
        return replication_json(view_of(state))

    @get(["/{replication_id:str}"], operation_id="getReplication", responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def get_replication(self, legacy: Legacy, data_api: Data, principal: Caller,
                              replication_id: PathId) -> ReplicationJson:
        """One replication: status, rule ids, progress (locks), a migration in progress."""
        return replication_json(await _visible(legacy, data_api, principal, replication_id))

    @post(["/{replication_id:str}/migrate"], operation_id="migrateReplication",
          responses=WRITE_ERRORS, status_code=202, opt=MUTATION, media_type=JSON_MEDIA_TYPE)
    async def migrate_replication(self, request: Request[Any, Any, Any], legacy: Legacy,
                                  data_api: Data, principal: Caller, replication_id: PathId,
                                  data: JSONBody[MigrationRequest]) -> ReplicationJson:
        """Move the data to another RSE expression: new rules there, wait until they are OK,
        then remove the old ones (``migration`` shows the progress)."""
        await _visible(legacy, data_api, principal, replication_id, "update")
        state = await _execute(legacy, request, principal, rep.RequestMigration(
            replication_id=replication_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin, rse_expression=data.rseExpression))
        return replication_json(view_of(state))

    @delete(["/{replication_id:str}"], operation_id="cancelReplication",
            responses=WRITE_ERRORS, status_code=202, opt={"mutation": True},
            media_type=JSON_MEDIA_TYPE)
    async def cancel_replication(self, request: Request[Any, Any, Any], legacy: Legacy,
                                 data_api: Data, principal: Caller,
                                 replication_id: PathId) -> ReplicationJson:
        """Cancel: every rule of the replication is removed from Rucio (``CANCELLING``, then
        ``CANCELLED``). Repeating it is harmless."""
        await _visible(legacy, data_api, principal, replication_id, "delete")
        state = await _execute(legacy, request, principal, rep.CancelReplication(
            replication_id=replication_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin,
            reason=f"cancelled through the API by {principal.subject}"))
        return replication_json(view_of(state))


ROUTE_HANDLERS = [ReplicationsController]


def app_state(data: DataApi) -> dict[str, object]:
    return {DATA: data}


