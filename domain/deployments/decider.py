"""The deployment decider: ``initial_state``, ``evolve``, ``fold`` and ``decide``.

Lifecycle (legacy statuses). Every user request opens an *operation*, numbered 1, 2, ... in
the stream (create, update, delete, retry); handlers report on an operation by number, so a
late report about a superseded operation is recognised (``StaleCommand``) instead of being
applied to a newer one. A create operation is scheduled, then runs *attempts* (numbered over
the whole stream), one site each, until one succeeds or the handler gives up.

Guards, compatible with the legacy API (``reference/legacy-orchestrator-api.md`` 5.6-5.8, 6.3)
and its documented fixes (section 11):

- update (PUT): from CREATE_COMPLETE, UPDATE_COMPLETE, UPDATE_FAILED; never for CHRONOS,
  MARATHON or QCG deployments; a *changed* user group is refused;
- delete (DELETE, ``force`` or not): from anything but DELETE_IN_PROGRESS and DELETE_COMPLETE;
  running work is cancelled; with nothing ever started at a site it completes at once;
- reset (PATCH): ``DELETE_FAILED`` from DELETE_IN_PROGRESS exactly as before (else 409), plus
  ``CREATE_FAILED`` / ``UPDATE_FAILED`` from the matching ``*_IN_PROGRESS`` (else 400, which is
  what the legacy server answered for those values); running work is cancelled;
- retry: from CREATE_FAILED only;
- resource action: from CREATE_COMPLETE, UPDATE_COMPLETE, UPDATE_FAILED; start needs STOPPED,
  stop needs STARTED;
- DELETE_COMPLETE is a tombstone: nothing but no-ops is accepted afterwards.

User commands need the owner, an admin of the owner's issuer, or a system actor.
Handler commands are idempotent: a command whose fact is already recorded decides ``[]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.identity import Actor

from .commands import (
    ChangeResources,
    CompleteDeletion,
    CompleteDeployment,
    CreateDeployment,
    DeleteDeployment,
    DeploymentCommand,
    FailAttempt,
    FailDeletion,
    FailDeployment,
    MarkDataReady,  # issue 6
    RecordInfrastructureCreated,
    RecordInfrastructureDestroyed,
    RecordLog,
    RecordScheduling,
    RequestResourceAction,
    ResetDeployment,
    RetryDeployment,
    StartAttempt,
    UpdateDeployment,
    UserCommand,
)
from .errors import (
    AlreadyExists,
    DeploymentNotFound,
    InfrastructureConflict,
    InvalidRequest,
    InvalidResetTarget,
    InvalidTransition,
    NotPermitted,
    ResourceNotFound,
    StaleCommand,
)
from .events import (
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentDataReady,  # issue 6
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentDeletionRequested,
    DeploymentEvent,
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
)
from .state import (
    COMPLETE_STATUS,
    FAILED_STATUS,
    IN_PROGRESS_STATUS,
    IN_PROGRESS_STATUSES,
    Attempt,
    DeploymentState,
)
from .values import (
    NOT_UPDATABLE_PROVIDERS,
    AttemptFailureCause,
    AttemptOutcome,
    DataRequirement,  # issue 6
    DeploymentStatus,
    NodeState,
    OperationKind,
    Resource,
    ResourceAction,
    Task,
)

S = DeploymentStatus

UPDATABLE_STATUSES = frozenset({S.CREATE_COMPLETE, S.UPDATE_COMPLETE, S.UPDATE_FAILED})
"""Where PUT and resource actions are allowed (legacy guard table)."""

UNDELETABLE_STATUSES = frozenset({S.DELETE_IN_PROGRESS, S.DELETE_COMPLETE})
"""Where DELETE is refused (legacy guard table)."""

RESET_SOURCES: dict[DeploymentStatus, DeploymentStatus] = {
    S.CREATE_FAILED: S.CREATE_IN_PROGRESS,
    S.UPDATE_FAILED: S.UPDATE_IN_PROGRESS,
    S.DELETE_FAILED: S.DELETE_IN_PROGRESS,
}
"""Reset target -> the only status it may be set from."""

_ACTION_SOURCE_AND_TRANSIENT: dict[ResourceAction, tuple[NodeState, NodeState]] = {
    ResourceAction.START: (NodeState.STOPPED, NodeState.STARTING),
    ResourceAction.STOP: (NodeState.STARTED, NodeState.STOPPING),
}


# --- fold ----------------------------------------------------------------------------------


def initial_state() -> DeploymentState:
    """The state of an empty stream: no deployment."""
    return DeploymentState()


def fold(
    events: Iterable[DeploymentEvent], state: DeploymentState | None = None
) -> DeploymentState:
    """Evolve ``state`` (default: the initial state) through ``events`` in order."""
    current = initial_state() if state is None else state
    for event in events:
        current = evolve(current, event)
    return current


# Events about resources, logs or teardown bookkeeping do not change the legacy deployment
# object, so they leave its ``updateTime`` alone.
_NOT_TOUCHING_UPDATE_TIME = (
    DeploymentResourcesChanged,
    DeploymentResourceActionRequested,
    DeploymentLogUpdated,
    DeploymentInfrastructureDestroyed,
)


def evolve(state: DeploymentState, event: DeploymentEvent) -> DeploymentState:
    """The state after ``event``. Total: it never raises for a known event type."""
    new = _apply(state, event)
    updated_at = new.updated_at
    if not isinstance(event, _NOT_TOUCHING_UPDATE_TIME):
        updated_at = event.occurred_at if updated_at is None else max(updated_at, event.occurred_at)
    running = new.running_attempt is not None
    return msgspec.structs.replace(
        new,
        version=state.version + 1,
        updated_at=updated_at,
        task=Task.DEPLOYER if running else Task.NONE,
    )


def _apply(state: DeploymentState, event: DeploymentEvent) -> DeploymentState:
    replace = msgspec.structs.replace
    match event:
        case DeploymentRequested():
            return replace(
                state,
                deployment_id=event.deployment_id,
                status=S.CREATE_IN_PROGRESS,
                status_reason=None,
                owner=event.owner,
                user_group=event.user_group,
                created_at=event.occurred_at,
                template=event.template,
                template_identity=event.template_identity,
                requested_resources=event.requested_resources,
                parameters=event.parameters,
                callback=event.callback,
                timeout_mins=event.timeout_mins,
                provider_timeout_mins=event.provider_timeout_mins,
                max_providers_retry=event.max_providers_retry,
                keep_last_attempt=event.keep_last_attempt,
                preferred_site=event.preferred_site,
                data_requirements=event.data_requirements,
                awaiting_data=any(r.wait for r in event.data_requirements),
                operation=event.operation,
                operation_kind=OperationKind.CREATE,
                candidates=None,
            )
        case DeploymentUpdateRequested():
            return replace(
                state,
                status=S.UPDATE_IN_PROGRESS,
                status_reason=None,
                template=event.template,
                template_identity=event.template_identity,
                requested_resources=event.requested_resources,
                parameters=event.parameters,
                callback=event.callback,
                timeout_mins=event.timeout_mins,
                provider_timeout_mins=event.provider_timeout_mins,
                operation=event.operation,
                operation_kind=OperationKind.UPDATE,
                candidates=None,
            )
        case DeploymentDeletionRequested():
            return replace(
                state,
                status=S.DELETE_IN_PROGRESS,
                status_reason=None,
                operation=event.operation,
                operation_kind=OperationKind.DELETE,
                candidates=None,
                force_delete=event.force,
            )
        case DeploymentStatusReset():
            return replace(state, status=event.to_status, status_reason=None)
        case DeploymentRetryRequested():
            return replace(
                state,
                status=S.CREATE_IN_PROGRESS,
                status_reason=None,
                operation=event.operation,
                operation_kind=OperationKind.CREATE,
                candidates=None,
            )
        case DeploymentResourceActionRequested():
            resource = state.resource(event.resource_id)
            if resource is None:
                return state
            transient = _ACTION_SOURCE_AND_TRANSIENT[event.action][1]
            return replace(
                state, resources=_upsert(state.resources, (replace(resource, state=transient),))
            )
        case DeploymentScheduled():
            return replace(state, candidates=event.candidates)
        case DeploymentAttemptStarted():
            attempt = Attempt(
                number=event.attempt,
                operation=event.operation,
                site=event.site,
                started_at=event.occurred_at,
                cloud_provider_endpoint=event.cloud_provider_endpoint,
                deployment_provider=event.deployment_provider,
            )
            return replace(
                state,
                attempts=(*state.attempts, attempt),
                site=event.site,
                cloud_provider_endpoint=event.cloud_provider_endpoint,
                deployment_provider=event.deployment_provider,
            )
        case DeploymentInfrastructureCreated():
            attempts = _replace_attempt(
                state.attempts,
                event.attempt,
                infrastructure_id=event.infrastructure_id,
                infrastructure_live=True,
            )
            return replace(state, attempts=attempts, physical_id=_physical_id(attempts))
        case DeploymentInfrastructureDestroyed():
            attempts = _replace_attempt(state.attempts, event.attempt, infrastructure_live=False)
            return replace(state, attempts=attempts)
        case DeploymentAttemptFailed():
            attempts = _replace_attempt(
                state.attempts,
                event.attempt,
                outcome=AttemptOutcome.FAILED,
                ended_at=event.occurred_at,
                failure_reason=event.reason,
                failure_cause=event.cause,
            )
            return replace(state, attempts=attempts)
        case DeploymentCompleted():
            attempts = state.attempts
            if event.attempt is not None:
                attempts = _replace_attempt(
                    attempts,
                    event.attempt,
                    outcome=AttemptOutcome.SUCCEEDED,
                    ended_at=event.occurred_at,
                )
            return replace(
                state,
                status=event.status,
                status_reason=None,
                outputs=event.outputs,
                attempts=attempts,
                site=event.site if event.site is not None else state.site,
                cloud_provider_endpoint=(
                    event.cloud_provider_endpoint
                    if event.cloud_provider_endpoint is not None
                    else state.cloud_provider_endpoint
                ),
                deployment_provider=(
                    event.deployment_provider
                    if event.deployment_provider is not None
                    else state.deployment_provider
                ),
            )
        case DeploymentFailed():
            return replace(state, status=event.status, status_reason=event.reason)
        case DeploymentDeleted():
            return replace(
                state,
                status=S.DELETE_COMPLETE,
                status_reason=None,
                attempts=tuple(replace(a, infrastructure_live=False) for a in state.attempts),
                resources=tuple(replace(r, state=NodeState.DELETED) for r in state.resources),
            )
        case DeploymentDeletionFailed():
            return replace(state, status=S.DELETE_FAILED, status_reason=event.reason)
        case DeploymentResourcesChanged():
            return replace(state, resources=_upsert(state.resources, event.resources))
        case DeploymentLogUpdated():
            return replace(state, log=event.log)
        case DeploymentDataReady():  # issue 6
            return replace(state, awaiting_data=False)
    raise TypeError(f"unknown deployment event {type(event).__name__}")


def _replace_attempt(
    attempts: tuple[Attempt, ...], number: int, **changes: object
) -> tuple[Attempt, ...]:
    if not 1 <= number <= len(attempts):
        return attempts
    index = number - 1
    updated = msgspec.structs.replace(attempts[index], **changes)
    return (*attempts[:index], updated, *attempts[index + 1 :])


def _physical_id(attempts: tuple[Attempt, ...]) -> str | None:
    """Legacy ``physicalId``: the infrastructure of the latest attempt that made one."""
    for attempt in reversed(attempts):
        if attempt.infrastructure_id is not None:
            return attempt.infrastructure_id
    return None


def _upsert(resources: tuple[Resource, ...], changes: Iterable[Resource]) -> tuple[Resource, ...]:
    by_id = {r.resource_id: r for r in resources}
    for change in changes:
        by_id[change.resource_id] = change
    return tuple(by_id.values())


# --- authorization helper ------------------------------------------------------------------


def may_manage(state: DeploymentState, actor: Actor, *, is_admin: bool) -> bool:
    """Owner, admin of the owner's issuer, or the orchestrator itself (legacy L3 rule)."""
    if actor.is_system or actor == state.owner:
        return True
    return is_admin and state.owner is not None and actor.issuer == state.owner.issuer


# --- decide --------------------------------------------------------------------------------


def decide(
    command: DeploymentCommand, state: DeploymentState, *, now: datetime
) -> list[DeploymentEvent]:
    """The events that carry out ``command`` on ``state`` (``[]`` when already done).

    ``now`` (timezone-aware) becomes the events' ``occurred_at``. Raises a
    :class:`~domain.deployments.errors.DeploymentError` when the command is refused.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(command, CreateDeployment):
        return _create(command, state, now)
    if not state.exists:
        raise DeploymentNotFound(command.deployment_id)
    if command.deployment_id != state.deployment_id:
        raise ValueError(
            f"command for deployment {command.deployment_id} decided against the state of "
            f"{state.deployment_id}"
        )
    match command:
        case UpdateDeployment():
            return _update(command, state, now)
        case DeleteDeployment():
            return _delete(command, state, now)
        case ResetDeployment():
            return _reset(command, state, now)
        case RetryDeployment():
            return _retry(command, state, now)
        case RequestResourceAction():
            return _resource_action(command, state, now)
        case RecordScheduling():
            return _record_scheduling(command, state, now)
        case StartAttempt():
            return _start_attempt(command, state, now)
        case RecordInfrastructureCreated():
            return _record_infrastructure_created(command, state, now)
        case RecordInfrastructureDestroyed():
            return _record_infrastructure_destroyed(command, state, now)
        case FailAttempt():
            return _fail_attempt(command, state, now)
        case CompleteDeployment():
            return _complete_deployment(command, state, now)
        case FailDeployment():
            return _fail_deployment(command, state, now)
        case CompleteDeletion():
            return _complete_deletion(command, state, now)
        case FailDeletion():
            return _fail_deletion(command, state, now)
        case ChangeResources():
            return _change_resources(command, state, now)
        case RecordLog():
            return _record_log(command, state, now)
        case MarkDataReady():  # issue 6
            return _mark_data_ready(command, state, now)
    raise TypeError(f"unknown deployment command {type(command).__name__}")


def _status(state: DeploymentState) -> DeploymentStatus:
    assert state.status is not None  # callers checked state.exists
    return state.status


def _authorize(command: UserCommand, state: DeploymentState) -> None:
    if not may_manage(state, command.actor, is_admin=command.actor_is_admin):
        raise NotPermitted()


def _validate_options(
    *,
    callback: str | None,
    timeout_mins: int | None,
    provider_timeout_mins: int | None,
    max_providers_retry: int | None = None,
) -> None:
    if callback is not None and not callback.startswith(("http:", "https:")):
        raise InvalidRequest(f"callback must be an http or https URL, not {callback!r}")
    if timeout_mins is not None and timeout_mins < 1:
        raise InvalidRequest("timeoutMins must be at least 1")
    if provider_timeout_mins is not None:
        if provider_timeout_mins < 1:
            raise InvalidRequest("providerTimeoutMins must be at least 1")
        if timeout_mins is not None and provider_timeout_mins > timeout_mins:
            raise InvalidRequest(
                f"providerTimeoutMins ({provider_timeout_mins}) must not exceed "
                f"timeoutMins ({timeout_mins})"
            )
    if max_providers_retry is not None and max_providers_retry < 1:
        raise InvalidRequest("maxProvidersRetry must be at least 1")


def _cancel_running_attempt(
    command: DeploymentCommand, state: DeploymentState, now: datetime, reason: str
) -> list[DeploymentEvent]:
    running = state.running_attempt
    if running is None:
        return []
    return [
        DeploymentAttemptFailed(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=running.operation,
            attempt=running.number,
            site=running.site,
            reason=reason,
            cause=AttemptFailureCause.CANCELLED,
        )
    ]


# --- user commands -------------------------------------------------------------------------


def _create(
    command: CreateDeployment, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    if state.exists:
        raise AlreadyExists(command.deployment_id)
    if not command.deployment_id:
        raise InvalidRequest("a deployment id is required")
    owner = command.owner if command.owner is not None else command.actor
    if owner != command.actor and not command.actor.is_system:
        raise NotPermitted()
    _validate_options(
        callback=command.callback,
        timeout_mins=command.timeout_mins,
        provider_timeout_mins=command.provider_timeout_mins,
        max_providers_retry=command.max_providers_retry,
    )
    validate_data_requirements(command.data_requirements)  # issue 6
    return [
        DeploymentRequested(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=1,
            owner=owner,
            user_group=command.user_group,
            template=command.template,
            template_identity=command.template_identity,
            requested_resources=command.requested_resources,
            parameters=dict(command.parameters),
            callback=command.callback,
            timeout_mins=command.timeout_mins,
            provider_timeout_mins=command.provider_timeout_mins,
            max_providers_retry=command.max_providers_retry,
            keep_last_attempt=command.keep_last_attempt,
            preferred_site=command.preferred_site,
            data_requirements=command.data_requirements,
        )
    ]


def _update(
    command: UpdateDeployment, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    _authorize(command, state)
    status = _status(state)
    if state.deployment_provider in NOT_UPDATABLE_PROVIDERS:
        raise InvalidRequest(f"{state.deployment_provider} deployments cannot be updated.")
    if status not in UPDATABLE_STATUSES:
        raise InvalidTransition(f"Cannot update a deployment in {status} state")
    if command.user_group is not None and command.user_group != state.user_group:
        raise InvalidRequest(
            f"The user group of a deployment cannot be changed "
            f"(it is {state.user_group!r}, the request has {command.user_group!r})"
        )
    callback = command.callback if command.callback is not None else state.callback
    timeout_mins = command.timeout_mins if command.timeout_mins is not None else state.timeout_mins
    provider_timeout_mins = (
        command.provider_timeout_mins
        if command.provider_timeout_mins is not None
        else state.provider_timeout_mins
    )
    _validate_options(
        callback=callback, timeout_mins=timeout_mins, provider_timeout_mins=provider_timeout_mins
    )
    return [
        DeploymentUpdateRequested(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=state.operation + 1,
            previous_status=status,
            template=command.template,
            template_identity=command.template_identity,
            requested_resources=command.requested_resources,
            parameters={**state.parameters, **command.parameters},
            submitted_parameters=dict(command.parameters),
            callback=callback,
            timeout_mins=timeout_mins,
            provider_timeout_mins=provider_timeout_mins,
        )
    ]


def _needs_teardown(state: DeploymentState) -> bool:
    """Whether anything may exist at a deployer: a live infrastructure, or a running or
    succeeded attempt whose infrastructure is not recorded (yet)."""
    return any(
        a.infrastructure_live
        or (a.infrastructure_id is None and a.outcome != AttemptOutcome.FAILED)
        for a in state.attempts
    )


def _delete(
    command: DeleteDeployment, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    _authorize(command, state)
    status = _status(state)
    if status in UNDELETABLE_STATUSES:
        raise InvalidTransition(f"Deployment already in {status} state.")
    operation = state.operation + 1
    events = _cancel_running_attempt(command, state, now, "Cancelled: deletion requested")
    events.append(
        DeploymentDeletionRequested(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=operation,
            previous_status=status,
            force=command.force,
            cancelled_operation=state.operation if status in IN_PROGRESS_STATUSES else None,
        )
    )
    if not _needs_teardown(state):
        # Nothing ever reached a site: like the legacy server, finish at once.
        events.append(
            DeploymentDeleted(
                deployment_id=command.deployment_id,
                occurred_at=now,
                actor=command.actor,
                operation=operation,
                force=command.force,
            )
        )
    return events


def _reset(
    command: ResetDeployment, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    _authorize(command, state)
    status = _status(state)
    target = command.status
    source = RESET_SOURCES.get(target)
    if source is None:
        raise InvalidResetTarget(
            f"Cannot reset a deployment to {target}: the status must be one of "
            f"{', '.join(sorted(RESET_SOURCES))}"
        )
    if status != source:
        if target == S.DELETE_FAILED:
            # The legacy value: the legacy answer (409).
            raise InvalidTransition(f"Cannot reset a deployment in {status} state to {target}")
        # The added values: a legacy server answered 400 to them, so we still do when they
        # do not apply.
        raise InvalidResetTarget(
            f"A deployment in {status} state cannot be reset to {target}: only {source} can"
        )
    events = _cancel_running_attempt(command, state, now, f"Cancelled: status reset to {target}")
    events.append(
        DeploymentStatusReset(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=state.operation,
            from_status=status,
            to_status=target,
        )
    )
    return events


def _retry(
    command: RetryDeployment, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    _authorize(command, state)
    status = _status(state)
    if status != S.CREATE_FAILED:
        raise InvalidTransition(
            f"Cannot retry a deployment in {status} state: only a {S.CREATE_FAILED} one"
        )
    return [
        DeploymentRetryRequested(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=state.operation + 1,
            previous_status=status,
        )
    ]


def _resource_action(
    command: RequestResourceAction, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    _authorize(command, state)
    status = _status(state)
    if state.deployment_provider in NOT_UPDATABLE_PROVIDERS:
        raise InvalidRequest(f"{state.deployment_provider} deployments cannot be updated.")
    if status not in UPDATABLE_STATUSES:
        raise InvalidTransition(f"Cannot act on the resources of a deployment in {status} state")
    resource = state.resource(command.resource_id)
    if resource is None:
        raise ResourceNotFound(command.deployment_id, command.resource_id)
    required = _ACTION_SOURCE_AND_TRANSIENT[command.action][0]
    if resource.state != required:
        raise InvalidTransition(
            f"Cannot {command.action} resource {command.resource_id} in {resource.state} "
            f"state: it must be {required}"
        )
    return [
        DeploymentResourceActionRequested(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            resource_id=command.resource_id,
            action=command.action,
        )
    ]


# --- handler commands ----------------------------------------------------------------------


def _require_current_operation(state: DeploymentState, operation: int) -> OperationKind:
    """The kind of ``operation`` if it is the current one; stale or unknown ones raise."""
    if 1 <= operation < state.operation:
        raise StaleCommand(
            f"Operation {operation} was superseded by operation {state.operation} "
            f"(deployment is {state.status})"
        )
    if operation != state.operation or state.operation_kind is None:
        raise InvalidTransition(
            f"Operation {operation} does not exist (the current one is {state.operation})"
        )
    return state.operation_kind


def _no_longer_in_progress(state: DeploymentState, operation: int) -> StaleCommand:
    return StaleCommand(
        f"Operation {operation} is no longer in progress (deployment is {state.status})"
    )


def _record_scheduling(
    command: RecordScheduling, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    kind = _require_current_operation(state, command.operation)
    if kind != OperationKind.CREATE:
        raise InvalidTransition(f"Operation {command.operation} is a {kind}: nothing to schedule")
    if state.candidates is not None:
        if state.candidates == command.candidates:
            return []
        raise InvalidTransition(f"Operation {command.operation} was already scheduled")
    if state.status != S.CREATE_IN_PROGRESS:
        raise _no_longer_in_progress(state, command.operation)
    preferred = state.preferred_site
    if preferred is not None:
        for candidate in command.candidates:
            if not preferred.admits(candidate.site):
                raise InvalidTransition(
                    f"Site {candidate.site.provider_id}/{candidate.site.region} is not the "
                    f"site the user chose ({preferred.provider_id}/{preferred.region})"
                )
    return [
        DeploymentScheduled(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=command.operation,
            candidates=command.candidates,
            ranking_method=command.ranking_method,
            model_version=command.model_version,
            rejected=command.rejected,
            ranking_note=command.ranking_note,  # issue 4
        )
    ]


def _start_attempt(
    command: StartAttempt, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    existing = state.attempt(command.attempt)
    if (
        existing is not None
        and existing.operation == command.operation
        and existing.site == command.site
    ):
        return []
    kind = _require_current_operation(state, command.operation)
    if existing is not None:
        raise InvalidTransition(
            f"Attempt {command.attempt} was already started, in operation "
            f"{existing.operation} on {existing.site.provider_id}"
        )
    if kind != OperationKind.CREATE:
        raise InvalidTransition(f"Operation {command.operation} is a {kind}: no attempts")
    if state.status != S.CREATE_IN_PROGRESS:
        raise _no_longer_in_progress(state, command.operation)
    if state.candidates is None:
        raise InvalidTransition(f"Operation {command.operation} has not been scheduled yet")
    if state.awaiting_data:  # issue 6: the deployer waits for deployment.data_ready
        raise InvalidTransition("The deployment is waiting for its input data (Rucio rules)")
    expected = state.last_attempt_number + 1
    if command.attempt != expected:
        raise InvalidTransition(f"The next attempt is {expected}, not {command.attempt}")
    running = state.running_attempt
    if running is not None:
        raise InvalidTransition(f"Attempt {running.number} is still running")
    budget = state.max_providers_retry
    if budget is not None and len(state.current_operation_attempts) >= budget:
        raise InvalidTransition(
            f"All {budget} attempts allowed by maxProvidersRetry were used by operation "
            f"{command.operation}"
        )
    if all(candidate.site != command.site for candidate in state.candidates):
        raise InvalidTransition(
            f"Site {command.site.provider_id}/{command.site.region} is not a candidate of "
            f"operation {command.operation}"
        )
    return [
        DeploymentAttemptStarted(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=command.operation,
            attempt=command.attempt,
            site=command.site,
            cloud_provider_endpoint=command.cloud_provider_endpoint,
            deployment_provider=command.deployment_provider,
        )
    ]


def _record_infrastructure_created(
    command: RecordInfrastructureCreated, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    # Recorded even for a failed or cancelled attempt: it exists, so it must be torn down.
    attempt = state.attempt(command.attempt)
    if attempt is None:
        raise InvalidTransition(f"Attempt {command.attempt} was never started")
    if attempt.infrastructure_id == command.infrastructure_id:
        return []
    if attempt.infrastructure_id is not None:
        raise InfrastructureConflict(
            f"Attempt {command.attempt} already has infrastructure {attempt.infrastructure_id}; "
            f"{command.infrastructure_id} must be destroyed"
        )
    if state.status == S.DELETE_COMPLETE:
        raise InvalidTransition(
            f"The deployment is {S.DELETE_COMPLETE}; infrastructure "
            f"{command.infrastructure_id} must be destroyed"
        )
    for other in state.attempts:
        if other.infrastructure_id == command.infrastructure_id:
            raise InfrastructureConflict(
                f"Infrastructure {command.infrastructure_id} belongs to attempt {other.number}"
            )
    return [
        DeploymentInfrastructureCreated(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            attempt=command.attempt,
            infrastructure_id=command.infrastructure_id,
            site=attempt.site,
        )
    ]


def _record_infrastructure_destroyed(
    command: RecordInfrastructureDestroyed, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    attempt = state.attempt(command.attempt)
    if attempt is None or attempt.infrastructure_id != command.infrastructure_id:
        raise InvalidTransition(
            f"Attempt {command.attempt} has no infrastructure {command.infrastructure_id}"
        )
    if not attempt.infrastructure_live:
        return []
    return [
        DeploymentInfrastructureDestroyed(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            attempt=command.attempt,
            infrastructure_id=command.infrastructure_id,
        )
    ]


def _fail_attempt(
    command: FailAttempt, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    attempt = state.attempt(command.attempt)
    if attempt is None:
        raise InvalidTransition(f"Attempt {command.attempt} was never started")
    if attempt.outcome == AttemptOutcome.FAILED:
        return []  # repeated, or the attempt was cancelled meanwhile
    if attempt.outcome == AttemptOutcome.SUCCEEDED:
        raise StaleCommand(f"Attempt {command.attempt} already succeeded")
    return [
        DeploymentAttemptFailed(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=attempt.operation,
            attempt=attempt.number,
            site=attempt.site,
            reason=command.reason,
            cause=command.cause,
        )
    ]


def _complete_deployment(
    command: CompleteDeployment, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    kind = _require_current_operation(state, command.operation)
    if kind == OperationKind.DELETE:
        raise InvalidTransition(
            f"Operation {command.operation} is a deletion; the deployment is {state.status}"
        )
    if state.status == COMPLETE_STATUS[kind]:
        return []
    if state.status != IN_PROGRESS_STATUS[kind]:
        raise _no_longer_in_progress(state, command.operation)
    if kind == OperationKind.UPDATE:
        return [
            DeploymentCompleted(
                deployment_id=command.deployment_id,
                occurred_at=now,
                actor=command.actor,
                operation=command.operation,
                kind=kind,
                status=COMPLETE_STATUS[kind],
                outputs=dict(command.outputs),
                site=state.site,
                cloud_provider_endpoint=state.cloud_provider_endpoint,
                deployment_provider=state.deployment_provider,
                infrastructure_id=state.physical_id,
            )
        ]
    running = state.running_attempt
    if running is None:
        raise InvalidTransition(f"No attempt of operation {command.operation} is running")
    return [
        DeploymentCompleted(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=command.operation,
            kind=kind,
            status=COMPLETE_STATUS[kind],
            outputs=dict(command.outputs),
            attempt=running.number,
            site=running.site,
            cloud_provider_endpoint=running.cloud_provider_endpoint,
            deployment_provider=running.deployment_provider,
            infrastructure_id=running.infrastructure_id,
        )
    ]


def _fail_deployment(
    command: FailDeployment, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    kind = _require_current_operation(state, command.operation)
    if kind == OperationKind.DELETE:
        raise InvalidTransition(
            f"Operation {command.operation} is a deletion; the deployment is {state.status}"
        )
    if state.status == FAILED_STATUS[kind]:
        return []  # repeated, or the operation was reset meanwhile
    if state.status != IN_PROGRESS_STATUS[kind]:
        raise _no_longer_in_progress(state, command.operation)
    events: list[DeploymentEvent] = []
    running = state.running_attempt
    if running is not None:
        events.append(
            DeploymentAttemptFailed(
                deployment_id=command.deployment_id,
                occurred_at=now,
                actor=command.actor,
                operation=running.operation,
                attempt=running.number,
                site=running.site,
                reason=command.reason,
                cause=command.cause,
            )
        )
    events.append(
        DeploymentFailed(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=command.operation,
            kind=kind,
            status=FAILED_STATUS[kind],
            reason=command.reason,
        )
    )
    return events


def _require_current_deletion(state: DeploymentState, operation: int) -> None:
    kind = _require_current_operation(state, operation)
    if kind != OperationKind.DELETE:
        raise InvalidTransition(
            f"Operation {operation} is a {kind}, not a deletion; the deployment is {state.status}"
        )


def _complete_deletion(
    command: CompleteDeletion, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    _require_current_deletion(state, command.operation)
    if state.status == S.DELETE_COMPLETE:
        return []
    if state.status != S.DELETE_IN_PROGRESS:
        raise _no_longer_in_progress(state, command.operation)
    return [
        DeploymentDeleted(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=command.operation,
            force=state.force_delete,
            infrastructure_ids=state.live_infrastructure_ids,
        )
    ]


def _fail_deletion(
    command: FailDeletion, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    _require_current_deletion(state, command.operation)
    if state.status == S.DELETE_FAILED:
        return []  # repeated, or the deletion was reset meanwhile
    if state.status != S.DELETE_IN_PROGRESS:
        raise _no_longer_in_progress(state, command.operation)
    return [
        DeploymentDeletionFailed(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=command.operation,
            reason=command.reason,
        )
    ]


def _change_resources(
    command: ChangeResources, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    latest = {r.resource_id: r for r in command.resources}
    changed = tuple(r for r in latest.values() if state.resource(r.resource_id) != r)
    if not changed:
        return []
    if state.status == S.DELETE_COMPLETE:
        raise InvalidTransition(f"The deployment is {S.DELETE_COMPLETE}: its resources are gone")
    return [
        DeploymentResourcesChanged(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            resources=changed,
        )
    ]


def _record_log(command: RecordLog, state: DeploymentState, now: datetime) -> list[DeploymentEvent]:
    if command.log == state.log:
        return []
    if state.status == S.DELETE_COMPLETE:
        raise InvalidTransition(f"The deployment is {S.DELETE_COMPLETE}")
    return [
        DeploymentLogUpdated(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            log=command.log,
            attempt=command.attempt,
        )
    ]


# --- data staging (issue 6) ----------------------------------------------------------------


def validate_data_requirements(requirements: Iterable[DataRequirement]) -> None:
    """Refuse what can never be a Rucio rule (Rucio itself judges DIDs and expressions)."""
    for index, requirement in enumerate(requirements):
        where = f"dataRequirements[{index}]"
        if not requirement.dids:
            raise InvalidRequest(f"{where}.dids: at least one DID (scope:name) is required")
        for did in requirement.dids:
            scope, sep, name = did.partition(":")
            if not sep or not scope.strip() or not name.strip() or did != did.strip():
                raise InvalidRequest(f"{where}.dids: {did!r} is not a DID of the form scope:name")
        if len(set(requirement.dids)) != len(requirement.dids):
            raise InvalidRequest(f"{where}.dids: a DID is listed twice")
        if not requirement.rse_expression.strip():
            raise InvalidRequest(f"{where}.rseExpression: an RSE expression is required")
        if requirement.copies < 1:
            raise InvalidRequest(f"{where}.copies: must be at least 1")
        if requirement.lifetime_seconds is not None and requirement.lifetime_seconds < 1:
            raise InvalidRequest(f"{where}.lifetimeSeconds: must be at least 1")


def _mark_data_ready(
    command: MarkDataReady, state: DeploymentState, now: datetime
) -> list[DeploymentEvent]:
    # Late or repeated news (the deployment moved on, failed, was deleted): nothing to do.
    if not state.awaiting_data or state.status != S.CREATE_IN_PROGRESS:
        return []
    if command.operation != state.operation:
        return []
    return [
        DeploymentDataReady(
            deployment_id=command.deployment_id,
            occurred_at=now,
            actor=command.actor,
            operation=command.operation,
            replication_ids=command.replication_ids,
        )
    ]


# --- end data staging ----------------------------------------------------------------------
