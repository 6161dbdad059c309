"""Given/when/then tests of the deployment decider: every command and every guard."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from domain.deployments import (
    AlreadyExists,
    AttemptFailureCause,
    ChangeResources,
    CompleteDeletion,
    CompleteDeployment,
    DeleteDeployment,
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCommand,
    DeploymentCompleted,
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentFailed,
    DeploymentInfrastructureDestroyed,
    DeploymentLogUpdated,
    DeploymentNotFound,
    DeploymentProvider,
    DeploymentResourceActionRequested,
    DeploymentResourcesChanged,
    DeploymentRetryRequested,
    DeploymentStatus,
    DeploymentStatusReset,
    FailAttempt,
    FailDeletion,
    FailDeployment,
    InfrastructureConflict,
    InvalidRequest,
    InvalidResetTarget,
    InvalidTransition,
    NodeState,
    NotPermitted,
    OperationKind,
    PreferredSite,
    RankedSite,
    RecordInfrastructureCreated,
    RecordInfrastructureDestroyed,
    RecordLog,
    RecordScheduling,
    RequestResourceAction,
    ResetDeployment,
    ResourceAction,
    ResourceNotFound,
    RetryDeployment,
    StaleCommand,
    StartAttempt,
    Task,
    UpdateDeployment,
    decide,
    fold,
    initial_state,
    may_manage,
)
from domain.identity import Actor, system_actor

from .deployment_support import (
    ADMIN,
    DEPLOYER,
    DEPLOYMENT_ID,
    ENDPOINT_A,
    FOREIGN_ADMIN,
    IDENTITY_V2,
    NOW,
    OTHER_USER,
    OWNER,
    REACHABLE_STATUSES,
    RESOURCES_V2,
    SCHEDULER,
    SITE_A,
    SITE_B,
    SITE_C,
    T0,
    TEMPLATE_V2,
    attempt_failed,
    attempt_started,
    create_command,
    create_failed_history,
    created_history,
    deletion_requested,
    given,
    history_in,
    infrastructure_created,
    requested,
    resources_changed,
    scheduled,
    update_requested,
    vm,
)

S = DeploymentStatus


def update_command(**overrides: Any) -> UpdateDeployment:
    fields: dict[str, Any] = dict(
        deployment_id=DEPLOYMENT_ID,
        actor=OWNER,
        template=TEMPLATE_V2,
        template_identity=IDENTITY_V2,
        requested_resources=RESOURCES_V2,
        parameters={"num_cpus": 4},
    )
    fields.update(overrides)
    return UpdateDeployment(**fields)


def delete(actor: Actor = OWNER, *, force: bool = False, admin: bool = False) -> DeleteDeployment:
    return DeleteDeployment(
        deployment_id=DEPLOYMENT_ID, actor=actor, actor_is_admin=admin, force=force
    )


def reset(
    target: DeploymentStatus, actor: Actor = OWNER, *, admin: bool = False
) -> ResetDeployment:
    return ResetDeployment(
        deployment_id=DEPLOYMENT_ID, actor=actor, actor_is_admin=admin, status=target
    )


def retry(actor: Actor = OWNER, *, admin: bool = False) -> RetryDeployment:
    return RetryDeployment(deployment_id=DEPLOYMENT_ID, actor=actor, actor_is_admin=admin)


def action(
    kind: ResourceAction, resource_id: str = "res-1", actor: Actor = OWNER
) -> RequestResourceAction:
    return RequestResourceAction(
        deployment_id=DEPLOYMENT_ID, actor=actor, resource_id=resource_id, action=kind
    )


def schedule(*sites: Any, operation: int = 1) -> RecordScheduling:
    return RecordScheduling(
        deployment_id=DEPLOYMENT_ID,
        actor=SCHEDULER,
        operation=operation,
        candidates=tuple(RankedSite(site=s, score=1.0 / (i + 1)) for i, s in enumerate(sites)),
        ranking_method="fallback",
    )


def start(attempt: int, site: Any = SITE_A, *, operation: int = 1) -> StartAttempt:
    return StartAttempt(
        deployment_id=DEPLOYMENT_ID,
        actor=DEPLOYER,
        operation=operation,
        attempt=attempt,
        site=site,
        cloud_provider_endpoint=ENDPOINT_A if site == SITE_A else None,
    )


def infra_created(attempt: int, infrastructure_id: str) -> RecordInfrastructureCreated:
    return RecordInfrastructureCreated(
        deployment_id=DEPLOYMENT_ID,
        actor=DEPLOYER,
        attempt=attempt,
        infrastructure_id=infrastructure_id,
    )


def infra_destroyed(attempt: int, infrastructure_id: str) -> RecordInfrastructureDestroyed:
    return RecordInfrastructureDestroyed(
        deployment_id=DEPLOYMENT_ID,
        actor=DEPLOYER,
        attempt=attempt,
        infrastructure_id=infrastructure_id,
    )


def fail_attempt(attempt: int, reason: str = "quota exceeded") -> FailAttempt:
    return FailAttempt(deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, attempt=attempt, reason=reason)


def complete(operation: int = 1, outputs: dict[str, Any] | None = None) -> CompleteDeployment:
    return CompleteDeployment(
        deployment_id=DEPLOYMENT_ID,
        actor=DEPLOYER,
        operation=operation,
        outputs={"node_ip": "192.0.2.10"} if outputs is None else outputs,
    )


def fail(operation: int = 1, reason: str = "no site could deploy it") -> FailDeployment:
    return FailDeployment(
        deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, operation=operation, reason=reason
    )


def complete_deletion(operation: int = 2) -> CompleteDeletion:
    return CompleteDeletion(deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, operation=operation)


def fail_deletion(operation: int = 2, reason: str = "IM unreachable") -> FailDeletion:
    return FailDeletion(
        deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, operation=operation, reason=reason
    )


def change(*resources: Any) -> ChangeResources:
    return ChangeResources(deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, resources=resources)


def record_log(text: str) -> RecordLog:
    return RecordLog(deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, log=text, attempt=1)


def at_now(event: Any, **changes: Any) -> Any:
    """The event as ``decide`` stamps it: ``occurred_at=NOW``."""
    return msgspec.structs.replace(event, occurred_at=NOW, **changes)


EVERY_COMMAND_BUT_CREATE: list[DeploymentCommand] = [
    update_command(),
    delete(),
    reset(S.DELETE_FAILED),
    retry(),
    action(ResourceAction.STOP),
    schedule(SITE_A),
    start(1),
    infra_created(1, "inf-1"),
    infra_destroyed(1, "inf-1"),
    fail_attempt(1),
    complete(),
    fail(),
    complete_deletion(),
    fail_deletion(),
    change(vm()),
    record_log("log"),
]


# --- create --------------------------------------------------------------------------------


def test_create_requests_the_deployment() -> None:
    state = given().when(create_command()).then(requested(occurred_at=NOW))
    assert state.status == S.CREATE_IN_PROGRESS
    assert state.task == Task.NONE
    assert state.owner == OWNER
    assert state.user_group == "g1"
    assert state.outputs == {}
    assert state.created_at == state.updated_at == NOW
    assert state.operation == 1 and state.operation_kind == OperationKind.CREATE


def test_create_records_every_option() -> None:
    preferred = PreferredSite(provider_id="prov-b", region="pd")
    command = create_command(
        max_providers_retry=2, keep_last_attempt=True, preferred_site=preferred, timeout_mins=None
    )
    given().when(command).then(
        requested(
            occurred_at=NOW,
            max_providers_retry=2,
            keep_last_attempt=True,
            preferred_site=preferred,
            timeout_mins=None,
        )
    )


def test_create_twice_is_refused() -> None:
    given(requested()).when(create_command()).raises(AlreadyExists)


@pytest.mark.parametrize(
    "overrides",
    [
        {"timeout_mins": 0},
        {"provider_timeout_mins": 0},
        {"timeout_mins": 60, "provider_timeout_mins": 61},
        {"max_providers_retry": 0},
        {"callback": "ftp://example/cb"},
        {"deployment_id": ""},
    ],
)
def test_create_refuses_invalid_options(overrides: dict[str, Any]) -> None:
    given().when(create_command(**overrides)).raises(InvalidRequest)


def test_create_accepts_a_provider_timeout_without_an_overall_timeout() -> None:
    given().when(create_command(timeout_mins=None, provider_timeout_mins=14400)).then_state()


def test_a_user_cannot_create_for_someone_else() -> None:
    given().when(create_command(owner=OTHER_USER)).raises(NotPermitted)


def test_the_orchestrator_may_create_on_behalf_of_an_owner() -> None:
    schedule_runner = system_actor("rucio-schedules")
    state = given().when(create_command(actor=schedule_runner, owner=OWNER)).then_state()
    assert state.owner == OWNER


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError):
        decide(create_command(), initial_state(), now=datetime(2025, 1, 1))


@pytest.mark.parametrize("command", EVERY_COMMAND_BUT_CREATE, ids=lambda c: type(c).__name__)
def test_every_other_command_needs_an_existing_deployment(command: DeploymentCommand) -> None:
    error = given().when(command).raises(DeploymentNotFound)
    assert str(error) == f"The deployment {DEPLOYMENT_ID} doesn't exist"


def test_a_command_for_another_stream_is_a_programming_error() -> None:
    command = fail_attempt(1)
    other = type(command)(deployment_id="other", actor=DEPLOYER, attempt=1, reason="x")
    with pytest.raises(ValueError):
        decide(other, fold(created_history()), now=NOW)


# --- update --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.CREATE_COMPLETE, S.UPDATE_COMPLETE, S.UPDATE_FAILED])
def test_update_is_allowed_after_a_completed_create_or_update(status: DeploymentStatus) -> None:
    history = history_in(status)
    operation = fold(history).operation + 1
    state = (
        given(*history)
        .when(update_command())
        .then(at_now(update_requested(operation), previous_status=status))
    )
    assert state.status == S.UPDATE_IN_PROGRESS
    assert state.task == Task.NONE
    assert state.status_reason is None
    assert state.template == TEMPLATE_V2


@pytest.mark.parametrize(
    "status",
    [
        s
        for s in REACHABLE_STATUSES
        if s not in (S.CREATE_COMPLETE, S.UPDATE_COMPLETE, S.UPDATE_FAILED)
    ],
)
def test_update_is_refused_elsewhere(status: DeploymentStatus) -> None:
    given(*history_in(status)).when(update_command()).raises(
        InvalidTransition, match=f"^Cannot update a deployment in {status} state$"
    )


def test_update_merges_parameters_and_keeps_unset_options() -> None:
    history = [requested(parameters={"num_cpus": 2, "flavor": "small"}), *created_history()[1:]]
    state = (
        given(*history)
        .when(update_command(parameters={"num_cpus": 4, "extra": [1, 2]}))
        .then(
            at_now(
                update_requested(),
                parameters={"num_cpus": 4, "flavor": "small", "extra": [1, 2]},
                submitted_parameters={"num_cpus": 4, "extra": [1, 2]},
            )
        )
    )
    assert state.parameters == {"num_cpus": 4, "flavor": "small", "extra": [1, 2]}
    assert state.callback == "https://dashboard.example/callback"


def test_update_replaces_options_that_are_given() -> None:
    command = update_command(
        callback="http://new.example/cb", timeout_mins=60, provider_timeout_mins=30
    )
    state = given(*created_history()).when(command).then_state()
    assert (state.callback, state.timeout_mins, state.provider_timeout_mins) == (
        "http://new.example/cb",
        60,
        30,
    )


def test_update_checks_the_provider_timeout_against_the_stored_timeout() -> None:
    given(*created_history()).when(update_command(provider_timeout_mins=721)).raises(InvalidRequest)


def test_update_may_repeat_the_user_group_but_not_change_it() -> None:
    given(*created_history()).when(update_command(user_group="g1")).then_state()
    given(*created_history()).when(update_command(user_group="g2")).raises(
        InvalidRequest, match="g2"
    )


@pytest.mark.parametrize(
    "provider", [DeploymentProvider.CHRONOS, DeploymentProvider.MARATHON, DeploymentProvider.QCG]
)
def test_update_is_refused_for_legacy_deployers(provider: DeploymentProvider) -> None:
    history = created_history()
    started = history[2]
    assert isinstance(started, DeploymentAttemptStarted)
    history[2] = DeploymentAttemptStarted(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=T0,
        actor=DEPLOYER,
        operation=1,
        attempt=1,
        site=SITE_A,
        deployment_provider=provider,
    )
    given(*history).when(update_command()).raises(
        InvalidRequest, match=f"{provider} deployments cannot be updated"
    )


def test_only_the_owner_or_an_admin_of_its_issuer_may_update() -> None:
    given(*created_history()).when(update_command(actor=OTHER_USER)).raises(
        NotPermitted, match="^Only the owner of the deployment can perform this operation$"
    )
    given(*created_history()).when(update_command(actor=FOREIGN_ADMIN, actor_is_admin=True)).raises(
        NotPermitted
    )
    given(*created_history()).when(update_command(actor=ADMIN, actor_is_admin=True)).then_state()


# --- delete --------------------------------------------------------------------------------


def test_delete_a_running_deployment() -> None:
    state = (
        given(*created_history())
        .when(delete())
        .then(at_now(deletion_requested(2, S.CREATE_COMPLETE)))
    )
    assert state.status == S.DELETE_IN_PROGRESS
    assert state.task == Task.NONE
    assert state.operation_kind == OperationKind.DELETE


def test_delete_records_force() -> None:
    state = (
        given(*created_history())
        .when(delete(force=True))
        .then(at_now(deletion_requested(2, S.CREATE_COMPLETE, force=True)))
    )
    assert state.force_delete


@pytest.mark.parametrize("status", [S.DELETE_IN_PROGRESS, S.DELETE_COMPLETE])
def test_delete_is_refused_while_deleting_or_deleted(status: DeploymentStatus) -> None:
    given(*history_in(status)).when(delete(force=True)).raises(
        InvalidTransition, match=f"^Deployment already in {status} state.$"
    )


@pytest.mark.parametrize(
    "status", [s for s in REACHABLE_STATUSES if s not in (S.DELETE_IN_PROGRESS, S.DELETE_COMPLETE)]
)
def test_delete_is_allowed_from_every_other_status(status: DeploymentStatus) -> None:
    state = given(*history_in(status)).when(delete()).then_state()
    assert state.status in (S.DELETE_IN_PROGRESS, S.DELETE_COMPLETE)


def test_delete_cancels_the_running_attempt_of_a_create() -> None:
    history = [requested(), scheduled(SITE_A), attempt_started(1)]
    state = (
        given(*history)
        .when(delete())
        .then(
            DeploymentAttemptFailed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=OWNER,
                operation=1,
                attempt=1,
                site=SITE_A,
                reason="Cancelled: deletion requested",
                cause=AttemptFailureCause.CANCELLED,
            ),
            at_now(deletion_requested(2, S.CREATE_IN_PROGRESS, cancelled_operation=1)),
        )
    )
    # The deployer may already have built something: the teardown must run.
    assert state.status == S.DELETE_IN_PROGRESS
    assert state.running_attempt is None


def test_delete_cancels_a_running_update() -> None:
    given(*history_in(S.UPDATE_IN_PROGRESS)).when(delete()).then(
        at_now(deletion_requested(3, S.UPDATE_IN_PROGRESS, cancelled_operation=2))
    )


@pytest.mark.parametrize(
    "history",
    [
        [requested()],
        [requested(), scheduled(SITE_A)],
        [requested(), scheduled()],
        create_failed_history(),
    ],
    ids=["requested", "scheduled", "no-candidates", "failed-without-infrastructure"],
)
def test_delete_completes_at_once_when_nothing_reached_a_site(history: list[Any]) -> None:
    previous = fold(history).status
    assert previous is not None
    state = (
        given(*history)
        .when(delete())
        .then(
            at_now(
                deletion_requested(
                    2, previous, cancelled_operation=1 if previous == S.CREATE_IN_PROGRESS else None
                )
            ),
            DeploymentDeleted(
                deployment_id=DEPLOYMENT_ID, occurred_at=NOW, actor=OWNER, operation=2
            ),
        )
    )
    assert state.status == S.DELETE_COMPLETE


def test_delete_waits_for_the_teardown_of_a_kept_failed_attempt() -> None:
    history = [
        requested(keep_last_attempt=True),
        scheduled(SITE_A),
        attempt_started(1),
        infrastructure_created(1, "inf-1"),
        *create_failed_history()[3:],
    ]
    assert fold(history).live_infrastructure_ids == ("inf-1",)
    given(*history).when(delete()).then(at_now(deletion_requested(2, S.CREATE_FAILED)))


def test_delete_completes_at_once_when_every_infrastructure_was_destroyed() -> None:
    history = [
        *create_failed_history()[:3],
        infrastructure_created(1, "inf-1"),
        DeploymentInfrastructureDestroyed(
            deployment_id=DEPLOYMENT_ID,
            occurred_at=T0,
            actor=DEPLOYER,
            attempt=1,
            infrastructure_id="inf-1",
        ),
        *create_failed_history()[3:],
    ]
    events = given(*history).when(delete()).then_state()
    assert events.status == S.DELETE_COMPLETE


def test_only_the_owner_or_an_admin_may_delete() -> None:
    given(*created_history()).when(delete(OTHER_USER)).raises(NotPermitted)
    given(*created_history()).when(delete(ADMIN, admin=True)).then_state()


# --- reset ---------------------------------------------------------------------------------


def test_reset_unsticks_a_deletion_like_the_legacy_patch() -> None:
    state = (
        given(*history_in(S.DELETE_IN_PROGRESS))
        .when(reset(S.DELETE_FAILED))
        .then(
            DeploymentStatusReset(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=OWNER,
                operation=2,
                from_status=S.DELETE_IN_PROGRESS,
                to_status=S.DELETE_FAILED,
            )
        )
    )
    assert state.status == S.DELETE_FAILED
    assert state.status_reason is None
    assert state.task == Task.NONE


@pytest.mark.parametrize("status", [s for s in REACHABLE_STATUSES if s != S.DELETE_IN_PROGRESS])
def test_reset_to_delete_failed_elsewhere_is_a_conflict(status: DeploymentStatus) -> None:
    given(*history_in(status)).when(reset(S.DELETE_FAILED)).raises(
        InvalidTransition, match=f"in {status} state"
    )


def test_reset_of_a_stuck_create_cancels_its_running_attempt() -> None:
    history = [requested(), scheduled(SITE_A), attempt_started(1)]
    state = (
        given(*history)
        .when(reset(S.CREATE_FAILED, ADMIN, admin=True))
        .then(
            DeploymentAttemptFailed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=ADMIN,
                operation=1,
                attempt=1,
                site=SITE_A,
                reason="Cancelled: status reset to CREATE_FAILED",
                cause=AttemptFailureCause.CANCELLED,
            ),
            DeploymentStatusReset(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=ADMIN,
                operation=1,
                from_status=S.CREATE_IN_PROGRESS,
                to_status=S.CREATE_FAILED,
            ),
        )
    )
    assert state.status == S.CREATE_FAILED
    assert state.task == Task.NONE


def test_reset_of_a_stuck_update() -> None:
    state = given(*history_in(S.UPDATE_IN_PROGRESS)).when(reset(S.UPDATE_FAILED)).then_state()
    assert state.status == S.UPDATE_FAILED


@pytest.mark.parametrize(
    ("status", "target"),
    [
        (S.DELETE_IN_PROGRESS, S.CREATE_FAILED),
        (S.CREATE_COMPLETE, S.CREATE_FAILED),
        (S.UPDATE_IN_PROGRESS, S.CREATE_FAILED),
        (S.CREATE_IN_PROGRESS, S.UPDATE_FAILED),
        (S.UPDATE_FAILED, S.UPDATE_FAILED),
    ],
)
def test_reset_to_an_added_target_that_does_not_match_is_a_bad_request(
    status: DeploymentStatus, target: DeploymentStatus
) -> None:
    given(*history_in(status)).when(reset(target)).raises(InvalidResetTarget, match=f"{status}")


@pytest.mark.parametrize("target", [s for s in DeploymentStatus if not s.endswith("_FAILED")])
def test_reset_to_a_status_that_is_not_a_failure_is_a_bad_request(target: DeploymentStatus) -> None:
    given(*history_in(S.DELETE_IN_PROGRESS)).when(reset(target)).raises(InvalidResetTarget)


def test_only_the_owner_or_an_admin_may_reset() -> None:
    given(*history_in(S.DELETE_IN_PROGRESS)).when(reset(S.DELETE_FAILED, OTHER_USER)).raises(
        NotPermitted
    )
    given(*history_in(S.DELETE_IN_PROGRESS)).when(
        reset(S.DELETE_FAILED, OTHER_USER, admin=True)
    ).then_state()


def test_after_a_reset_the_reset_operation_reports_are_stale() -> None:
    history = history_in(S.DELETE_IN_PROGRESS)
    history += decide(reset(S.DELETE_FAILED), fold(history), now=NOW)
    given(*history).when(complete_deletion(2)).raises(StaleCommand)
    given(*history).when(fail_deletion(2)).then_nothing()
    state = given(*history).when(delete(force=True)).then_state()
    assert state.status == S.DELETE_IN_PROGRESS and state.operation == 3 and state.force_delete


# --- retry ---------------------------------------------------------------------------------


def test_retry_runs_a_failed_create_again_under_the_same_id() -> None:
    state = (
        given(*create_failed_history())
        .when(retry())
        .then(
            DeploymentRetryRequested(
                deployment_id=DEPLOYMENT_ID, occurred_at=NOW, actor=OWNER, operation=2
            )
        )
    )
    assert state.status == S.CREATE_IN_PROGRESS
    assert state.status_reason is None
    assert state.candidates is None
    assert state.template == fold(create_failed_history()).template


def test_a_retry_schedules_again_and_numbers_attempts_on() -> None:
    history = [
        *create_failed_history(),
        DeploymentRetryRequested(
            deployment_id=DEPLOYMENT_ID, occurred_at=T0, actor=OWNER, operation=2
        ),
    ]
    given(*history).when(start(2, SITE_B, operation=2)).raises(
        InvalidTransition, match="not been scheduled"
    )
    history.append(scheduled(SITE_B, operation=2))
    given(*history).when(start(1, SITE_B, operation=2)).raises(InvalidTransition)
    given(*history).when(start(2, SITE_B, operation=1)).raises(StaleCommand)
    given(*history).when(schedule(SITE_A, operation=1)).raises(StaleCommand)
    given(*history).when(start(2, SITE_B, operation=2)).then(
        at_now(attempt_started(2, SITE_B, operation=2)),
    )


def test_max_providers_retry_counts_the_attempts_of_one_operation() -> None:
    history = [
        requested(max_providers_retry=1),
        scheduled(SITE_A),
        attempt_started(1),
        *create_failed_history()[3:],
        DeploymentRetryRequested(
            deployment_id=DEPLOYMENT_ID, occurred_at=T0, actor=OWNER, operation=2
        ),
        scheduled(SITE_A, operation=2),
    ]
    given(*history).when(start(2, operation=2)).then_state()


@pytest.mark.parametrize("status", [s for s in REACHABLE_STATUSES if s != S.CREATE_FAILED])
def test_retry_is_refused_unless_the_create_failed(status: DeploymentStatus) -> None:
    given(*history_in(status)).when(retry()).raises(InvalidTransition, match=f"in {status} state")


def test_only_the_owner_or_an_admin_may_retry() -> None:
    given(*create_failed_history()).when(retry(OTHER_USER)).raises(NotPermitted)
    given(*create_failed_history()).when(retry(ADMIN, admin=True)).then_state()


# --- resource actions ----------------------------------------------------------------------


def test_stop_a_started_vm() -> None:
    history = [*created_history(), resources_changed(vm(NodeState.STARTED))]
    state = (
        given(*history)
        .when(action(ResourceAction.STOP))
        .then(
            DeploymentResourceActionRequested(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=OWNER,
                resource_id="res-1",
                action=ResourceAction.STOP,
            )
        )
    )
    assert state.resources == (vm(NodeState.STOPPING),)


def test_start_a_stopped_vm() -> None:
    history = [*created_history(), resources_changed(vm(NodeState.STOPPED))]
    state = given(*history).when(action(ResourceAction.START)).then_state()
    assert state.resources == (vm(NodeState.STARTING),)


@pytest.mark.parametrize(
    ("kind", "node_state"),
    [(ResourceAction.START, NodeState.STARTED), (ResourceAction.STOP, NodeState.STOPPED)],
)
def test_actions_need_the_opposite_state(kind: ResourceAction, node_state: NodeState) -> None:
    history = [*created_history(), resources_changed(vm(node_state))]
    given(*history).when(action(kind)).raises(InvalidTransition, match=f"in {node_state} state")


def test_an_action_on_an_unknown_resource() -> None:
    given(*created_history()).when(action(ResourceAction.STOP, "nope")).raises(
        ResourceNotFound, match=f"^Resource nope not found in deployment {DEPLOYMENT_ID}$"
    )


@pytest.mark.parametrize(
    "status",
    [
        s
        for s in REACHABLE_STATUSES
        if s not in (S.CREATE_COMPLETE, S.UPDATE_COMPLETE, S.UPDATE_FAILED)
    ],
)
def test_actions_need_a_running_deployment(status: DeploymentStatus) -> None:
    history = [*history_in(status)]
    history.insert(1, resources_changed(vm()))
    assert fold(history).status == status  # the resources event leaves the status as it was
    given(*history).when(action(ResourceAction.STOP)).raises(InvalidTransition)


def test_only_the_owner_may_act_on_resources() -> None:
    history = [*created_history(), resources_changed(vm())]
    given(*history).when(action(ResourceAction.STOP, actor=OTHER_USER)).raises(NotPermitted)


# --- scheduling ----------------------------------------------------------------------------


def test_scheduling_records_the_ranked_candidates() -> None:
    state = (
        given(requested()).when(schedule(SITE_A, SITE_B)).then(scheduled(SITE_A, SITE_B, at=NOW))
    )
    assert state.candidates is not None and [c.site for c in state.candidates] == [SITE_A, SITE_B]
    assert state.task == Task.NONE


def test_scheduling_may_find_no_candidate() -> None:
    state = given(requested()).when(schedule()).then(scheduled(at=NOW))
    assert state.candidates == ()


def test_scheduling_twice_is_a_no_op_but_rescheduling_is_refused() -> None:
    history = [requested(), scheduled(SITE_A, SITE_B)]
    given(*history).when(schedule(SITE_A, SITE_B)).then_nothing()
    given(*history).when(schedule(SITE_B)).raises(InvalidTransition, match="already scheduled")


def test_scheduling_must_respect_the_site_the_user_chose() -> None:
    history = [requested(preferred_site=PreferredSite(provider_id="prov-b"))]
    given(*history).when(schedule(SITE_A)).raises(InvalidTransition, match="the user chose")
    given(*history).when(schedule(SITE_B)).then_state()


@pytest.mark.parametrize("status", [S.UPDATE_IN_PROGRESS, S.DELETE_IN_PROGRESS])
def test_only_creates_are_scheduled(status: DeploymentStatus) -> None:
    history = history_in(status)
    given(*history).when(schedule(SITE_A, operation=2)).raises(InvalidTransition)


def test_scheduling_an_operation_that_does_not_exist() -> None:
    given(requested()).when(schedule(SITE_A, operation=2)).raises(
        InvalidTransition, match="does not exist"
    )
    error = given(requested()).when(schedule(SITE_A, operation=2)).raises(InvalidTransition)
    assert not isinstance(error, StaleCommand)


def test_scheduling_after_the_create_was_reset_is_stale() -> None:
    history = [
        requested(),
        DeploymentStatusReset(
            deployment_id=DEPLOYMENT_ID,
            occurred_at=T0,
            actor=OWNER,
            operation=1,
            from_status=S.CREATE_IN_PROGRESS,
            to_status=S.CREATE_FAILED,
        ),
    ]
    given(*history).when(schedule(SITE_A)).raises(StaleCommand)


# --- attempts ------------------------------------------------------------------------------


def test_start_the_first_attempt_on_a_candidate() -> None:
    state = (
        given(requested(), scheduled(SITE_A, SITE_B))
        .when(start(1))
        .then(at_now(attempt_started(1)))
    )
    assert state.task == Task.DEPLOYER
    assert state.cloud_provider_name == "BACKBONE"
    assert state.cloud_provider_endpoint == ENDPOINT_A
    assert state.deployment_provider == DeploymentProvider.IM


def test_starting_the_same_attempt_twice_is_a_no_op() -> None:
    given(requested(), scheduled(SITE_A), attempt_started(1)).when(start(1)).then_nothing()


def test_an_attempt_needs_scheduling() -> None:
    given(requested()).when(start(1)).raises(InvalidTransition, match="not been scheduled")


def test_attempts_are_numbered_in_sequence() -> None:
    given(requested(), scheduled(SITE_A)).when(start(2)).raises(
        InvalidTransition, match="next attempt is 1"
    )


def test_one_attempt_at_a_time() -> None:
    history = [requested(), scheduled(SITE_A, SITE_B), attempt_started(1)]
    given(*history).when(start(2, SITE_B)).raises(InvalidTransition, match="still running")
    given(*history, attempt_failed(1)).when(start(2, SITE_B)).then(
        at_now(attempt_started(2, SITE_B))
    )


def test_attempts_run_on_candidates_only() -> None:
    given(requested(), scheduled(SITE_A, SITE_B)).when(start(1, SITE_C)).raises(
        InvalidTransition, match="not a candidate"
    )


def test_attempts_stop_at_max_providers_retry() -> None:
    history = [
        requested(max_providers_retry=1),
        scheduled(SITE_A, SITE_B),
        attempt_started(1),
        attempt_failed(1),
    ]
    given(*history).when(start(2, SITE_B)).raises(InvalidTransition, match="maxProvidersRetry")


def test_an_attempt_reused_with_another_site_is_refused() -> None:
    history = [requested(), scheduled(SITE_A, SITE_B), attempt_started(1)]
    given(*history).when(start(1, SITE_B)).raises(InvalidTransition, match="already started")


def test_attempts_are_for_creates_only() -> None:
    given(*history_in(S.UPDATE_IN_PROGRESS)).when(start(2, operation=2)).raises(InvalidTransition)


def test_starting_an_attempt_after_the_deletion_is_stale() -> None:
    history = [requested(), scheduled(SITE_A), deletion_requested(2, S.CREATE_IN_PROGRESS)]
    given(*history).when(start(1)).raises(StaleCommand)


def test_fail_the_running_attempt() -> None:
    history = [requested(), scheduled(SITE_A, SITE_B), attempt_started(1)]
    state = (
        given(*history)
        .when(fail_attempt(1))
        .then(
            DeploymentAttemptFailed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=1,
                attempt=1,
                site=SITE_A,
                reason="quota exceeded",
            )
        )
    )
    assert state.task == Task.NONE
    assert state.status == S.CREATE_IN_PROGRESS


def test_failing_an_attempt_twice_is_a_no_op() -> None:
    history = [requested(), scheduled(SITE_A), attempt_started(1), attempt_failed(1)]
    given(*history).when(fail_attempt(1)).then_nothing()
    given(*history).when(fail_attempt(1, "another reason, after a cancellation")).then_nothing()


def test_failing_a_succeeded_attempt_is_stale() -> None:
    given(*created_history()).when(fail_attempt(1)).raises(StaleCommand)


def test_failing_an_unknown_attempt() -> None:
    given(requested()).when(fail_attempt(1)).raises(InvalidTransition, match="never started")


# --- infrastructures -----------------------------------------------------------------------


def test_record_the_infrastructure_of_an_attempt() -> None:
    history = [requested(), scheduled(SITE_A), attempt_started(1)]
    state = (
        given(*history)
        .when(infra_created(1, "inf-1"))
        .then(infrastructure_created(1, "inf-1", at=NOW))
    )
    assert state.physical_id == "inf-1"
    assert state.live_infrastructure_ids == ("inf-1",)


def test_recording_the_same_infrastructure_twice_is_a_no_op() -> None:
    history = [
        requested(),
        scheduled(SITE_A),
        attempt_started(1),
        infrastructure_created(1, "inf-1"),
    ]
    given(*history).when(infra_created(1, "inf-1")).then_nothing()


def test_an_attempt_has_at_most_one_infrastructure() -> None:
    history = [
        requested(),
        scheduled(SITE_A),
        attempt_started(1),
        infrastructure_created(1, "inf-1"),
    ]
    given(*history).when(infra_created(1, "inf-2")).raises(
        InfrastructureConflict, match="inf-2 must be destroyed"
    )


def test_an_infrastructure_belongs_to_one_attempt() -> None:
    history = [
        requested(),
        scheduled(SITE_A, SITE_B),
        attempt_started(1),
        infrastructure_created(1, "inf-1"),
        attempt_failed(1),
        attempt_started(2, SITE_B),
    ]
    given(*history).when(infra_created(2, "inf-1")).raises(InfrastructureConflict)


def test_infrastructure_of_an_unknown_attempt() -> None:
    given(requested(), scheduled(SITE_A)).when(infra_created(1, "inf-1")).raises(InvalidTransition)


def test_a_late_infrastructure_of_a_failed_attempt_is_still_recorded_for_teardown() -> None:
    history = [
        requested(),
        scheduled(SITE_A, SITE_B),
        attempt_started(1),
        attempt_failed(1),
        attempt_started(2, SITE_B),
        infrastructure_created(2, "inf-2", SITE_B),
    ]
    state = given(*history).when(infra_created(1, "inf-1")).then_state()
    assert state.live_infrastructure_ids == ("inf-1", "inf-2")
    assert state.physical_id == "inf-2"  # the latest attempt's


def test_an_infrastructure_reported_after_the_deletion_completed_must_be_destroyed() -> None:
    history = [
        requested(),
        scheduled(SITE_A),
        attempt_started(1),
        DeploymentAttemptFailed(
            deployment_id=DEPLOYMENT_ID,
            occurred_at=T0,
            actor=OWNER,
            operation=1,
            attempt=1,
            site=SITE_A,
            reason="Cancelled: deletion requested",
            cause=AttemptFailureCause.CANCELLED,
        ),
        deletion_requested(2, S.CREATE_IN_PROGRESS, cancelled_operation=1),
        DeploymentDeleted(deployment_id=DEPLOYMENT_ID, occurred_at=T0, actor=DEPLOYER, operation=2),
    ]
    given(*history).when(infra_created(1, "inf-1")).raises(
        InvalidTransition, match="must be destroyed"
    )


def test_record_a_destroyed_infrastructure() -> None:
    history = [*created_history()]
    state = (
        given(*history)
        .when(infra_destroyed(1, "inf-1"))
        .then(
            DeploymentInfrastructureDestroyed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                attempt=1,
                infrastructure_id="inf-1",
            )
        )
    )
    assert state.live_infrastructure_ids == ()
    assert state.physical_id == "inf-1"
    # Bookkeeping does not touch the legacy updateTime.
    assert state.updated_at == fold(history).updated_at


def test_destroying_twice_is_a_no_op_and_unknown_ones_are_refused() -> None:
    history = [
        *created_history(),
        DeploymentInfrastructureDestroyed(
            deployment_id=DEPLOYMENT_ID,
            occurred_at=T0,
            actor=DEPLOYER,
            attempt=1,
            infrastructure_id="inf-1",
        ),
    ]
    given(*history).when(infra_destroyed(1, "inf-1")).then_nothing()
    given(*history).when(infra_destroyed(1, "inf-9")).raises(InvalidTransition)
    given(*history).when(infra_destroyed(7, "inf-1")).raises(InvalidTransition)


# --- completion and failure ----------------------------------------------------------------


def test_complete_a_create_on_the_running_attempt() -> None:
    history = created_history()[:4]
    state = (
        given(*history)
        .when(complete(outputs={"node_ip": "192.0.2.10", "ports": [22]}))
        .then(
            DeploymentCompleted(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=1,
                kind=OperationKind.CREATE,
                status=S.CREATE_COMPLETE,
                outputs={"node_ip": "192.0.2.10", "ports": [22]},
                attempt=1,
                site=SITE_A,
                cloud_provider_endpoint=ENDPOINT_A,
                deployment_provider=DeploymentProvider.IM,
                infrastructure_id="inf-1",
            )
        )
    )
    assert state.status == S.CREATE_COMPLETE
    assert state.task == Task.NONE
    assert state.outputs == {"node_ip": "192.0.2.10", "ports": [22]}
    assert state.attempts[0].outcome == "succeeded"


def test_completing_twice_is_a_no_op() -> None:
    given(*created_history()).when(complete()).then_nothing()


def test_a_create_completes_on_a_running_attempt_only() -> None:
    given(requested(), scheduled(SITE_A)).when(complete()).raises(
        InvalidTransition, match="No attempt"
    )
    history = [requested(), scheduled(SITE_A, SITE_B), attempt_started(1), attempt_failed(1)]
    given(*history).when(complete()).raises(InvalidTransition, match="No attempt")


def test_complete_an_update() -> None:
    state = (
        given(*history_in(S.UPDATE_IN_PROGRESS))
        .when(complete(2, {"node_ip": "192.0.2.11"}))
        .then(
            DeploymentCompleted(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=2,
                kind=OperationKind.UPDATE,
                status=S.UPDATE_COMPLETE,
                outputs={"node_ip": "192.0.2.11"},
                site=SITE_A,
                cloud_provider_endpoint=ENDPOINT_A,
                deployment_provider=DeploymentProvider.IM,
                infrastructure_id="inf-1",
            )
        )
    )
    assert state.status == S.UPDATE_COMPLETE


def test_completing_a_deleted_deployment_is_invalid() -> None:
    history = history_in(S.DELETE_COMPLETE)
    given(*history).when(complete(1)).raises(StaleCommand)
    given(*history).when(complete(2)).raises(InvalidTransition, match="deletion")
    given(*history).when(fail(2)).raises(InvalidTransition, match="deletion")


def test_completing_a_reset_create_is_stale() -> None:
    history = [
        *created_history()[:4],
        DeploymentStatusReset(
            deployment_id=DEPLOYMENT_ID,
            occurred_at=T0,
            actor=OWNER,
            operation=1,
            from_status=S.CREATE_IN_PROGRESS,
            to_status=S.CREATE_FAILED,
        ),
    ]
    given(*history).when(complete()).raises(StaleCommand)


def test_completing_a_superseded_operation_is_stale() -> None:
    given(*history_in(S.UPDATE_IN_PROGRESS)).when(complete(1)).raises(
        StaleCommand, match="superseded"
    )


def test_fail_a_create_fails_its_running_attempt_too() -> None:
    history = [requested(), scheduled(SITE_A), attempt_started(1)]
    command = FailDeployment(
        deployment_id=DEPLOYMENT_ID,
        actor=DEPLOYER,
        operation=1,
        reason="timed out after 720 minutes",
        cause=AttemptFailureCause.TIMEOUT,
    )
    state = (
        given(*history)
        .when(command)
        .then(
            DeploymentAttemptFailed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=1,
                attempt=1,
                site=SITE_A,
                reason="timed out after 720 minutes",
                cause=AttemptFailureCause.TIMEOUT,
            ),
            DeploymentFailed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=1,
                kind=OperationKind.CREATE,
                status=S.CREATE_FAILED,
                reason="timed out after 720 minutes",
            ),
        )
    )
    assert state.status == S.CREATE_FAILED
    assert state.status_reason == "timed out after 720 minutes"
    assert state.task == Task.NONE


def test_fail_a_create_without_candidates() -> None:
    state = (
        given(requested(), scheduled())
        .when(fail(reason="No provider matches"))
        .then(
            DeploymentFailed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=1,
                kind=OperationKind.CREATE,
                status=S.CREATE_FAILED,
                reason="No provider matches",
            )
        )
    )
    assert state.status_reason == "No provider matches"


def test_failing_twice_or_after_a_reset_is_a_no_op() -> None:
    given(*create_failed_history()).when(fail()).then_nothing()


def test_fail_an_update() -> None:
    state = given(*history_in(S.UPDATE_IN_PROGRESS)).when(fail(2, "IM said no")).then_state()
    assert state.status == S.UPDATE_FAILED and state.status_reason == "IM said no"


def test_failing_a_completed_operation_is_stale() -> None:
    given(*created_history()).when(fail(1)).raises(StaleCommand)


# --- deletion outcome ----------------------------------------------------------------------


def test_complete_the_deletion() -> None:
    history = [*history_in(S.DELETE_IN_PROGRESS)]
    history.insert(1, resources_changed(vm()))
    state = (
        given(*history)
        .when(complete_deletion())
        .then(
            DeploymentDeleted(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=2,
                infrastructure_ids=("inf-1",),
            )
        )
    )
    assert state.status == S.DELETE_COMPLETE
    assert state.live_infrastructure_ids == ()
    assert state.resources == (vm(NodeState.DELETED),)
    assert state.physical_id == "inf-1"


def test_complete_a_forced_deletion() -> None:
    history = [*created_history(), deletion_requested(2, S.CREATE_COMPLETE, force=True)]
    given(*history).when(complete_deletion()).then(
        DeploymentDeleted(
            deployment_id=DEPLOYMENT_ID,
            occurred_at=NOW,
            actor=DEPLOYER,
            operation=2,
            force=True,
            infrastructure_ids=("inf-1",),
        )
    )


def test_completing_a_deletion_twice_is_a_no_op() -> None:
    given(*history_in(S.DELETE_COMPLETE)).when(complete_deletion()).then_nothing()


def test_deletion_outcomes_need_a_deletion() -> None:
    given(*history_in(S.UPDATE_IN_PROGRESS)).when(complete_deletion()).raises(
        InvalidTransition, match="not a deletion"
    )
    given(*history_in(S.UPDATE_IN_PROGRESS)).when(fail_deletion()).raises(
        InvalidTransition, match="not a deletion"
    )


def test_fail_the_deletion_then_force_it() -> None:
    history = history_in(S.DELETE_IN_PROGRESS)
    state = (
        given(*history)
        .when(fail_deletion())
        .then(
            DeploymentDeletionFailed(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                operation=2,
                reason="IM unreachable",
            )
        )
    )
    assert state.status == S.DELETE_FAILED and state.status_reason == "IM unreachable"
    failed = history_in(S.DELETE_FAILED)
    given(*failed).when(fail_deletion()).then_nothing()
    state = (
        given(*failed)
        .when(delete(force=True))
        .then(at_now(deletion_requested(3, S.DELETE_FAILED, force=True)))
    )
    assert state.status_reason is None


# --- resources and log ---------------------------------------------------------------------


def test_record_resources_and_only_their_changes() -> None:
    history = created_history()
    state = (
        given(*history)
        .when(change(vm(NodeState.CREATING), vm(NodeState.CREATING, "res-2")))
        .then(
            DeploymentResourcesChanged(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                resources=(vm(NodeState.CREATING), vm(NodeState.CREATING, "res-2")),
            )
        )
    )
    assert state.updated_at == fold(history).updated_at
    history = [*history, resources_changed(vm(NodeState.CREATING), vm(NodeState.CREATING, "res-2"))]
    given(*history).when(
        change(vm(NodeState.CREATING), vm(NodeState.CREATING, "res-2"))
    ).then_nothing()
    state = (
        given(*history)
        .when(change(vm(NodeState.CREATING), vm(NodeState.STARTED, "res-2")))
        .then(
            DeploymentResourcesChanged(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                resources=(vm(NodeState.STARTED, "res-2"),),
            )
        )
    )
    assert state.resources == (vm(NodeState.CREATING), vm(NodeState.STARTED, "res-2"))


def test_resources_of_a_deleted_deployment_do_not_change() -> None:
    history = [*history_in(S.DELETE_IN_PROGRESS), resources_changed(vm())]
    history.append(
        DeploymentDeleted(deployment_id=DEPLOYMENT_ID, occurred_at=T0, actor=DEPLOYER, operation=2)
    )
    given(*history).when(change(vm(NodeState.DELETED))).then_nothing()
    given(*history).when(change(vm(NodeState.STARTED))).raises(InvalidTransition)


def test_record_the_log() -> None:
    state = (
        given(*created_history())
        .when(record_log("contextualisation done"))
        .then(
            DeploymentLogUpdated(
                deployment_id=DEPLOYMENT_ID,
                occurred_at=NOW,
                actor=DEPLOYER,
                log="contextualisation done",
                attempt=1,
            )
        )
    )
    assert state.log == "contextualisation done"
    history = [
        *created_history(),
        *[at_now(e) for e in decide(record_log("x"), fold(created_history()), now=NOW)],
    ]
    given(*history).when(record_log("x")).then_nothing()
    given(*history_in(S.DELETE_COMPLETE)).when(record_log("late")).raises(InvalidTransition)


# --- the tombstone -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        update_command(),
        delete(),
        reset(S.DELETE_FAILED),
        reset(S.CREATE_FAILED),
        retry(),
        action(ResourceAction.STOP),
        schedule(SITE_A, operation=2),
        start(2, operation=2),
        fail_attempt(1),
        complete(1),
        fail(1),
        fail_deletion(2),
    ],
    ids=lambda c: type(c).__name__,
)
def test_delete_complete_is_a_tombstone(command: DeploymentCommand) -> None:
    """Every command on a deleted deployment is refused (or, for handler reports, a no-op)."""
    history = history_in(S.DELETE_COMPLETE)
    try:
        events = decide(command, fold(history), now=NOW)
    except (InvalidTransition, InvalidResetTarget):
        return
    assert events == []


def test_a_deleted_id_cannot_be_created_again() -> None:
    given(*history_in(S.DELETE_COMPLETE)).when(create_command()).raises(AlreadyExists)


# --- the legacy deployment object, from events alone ---------------------------------------


def test_the_legacy_deployment_fields_derive_from_events() -> None:
    history = [
        requested(occurred_at=T0),
        scheduled(SITE_A, at=T0 + timedelta(minutes=1)),
        attempt_started(1, at=T0 + timedelta(minutes=2)),
        infrastructure_created(1, "inf-1", at=T0 + timedelta(minutes=3)),
    ]
    state = fold(history)
    assert state.deployment_id == DEPLOYMENT_ID
    assert state.created_at == T0
    assert state.updated_at == T0 + timedelta(minutes=3)
    assert state.physical_id == "inf-1"
    assert state.status == S.CREATE_IN_PROGRESS and state.task == Task.DEPLOYER
    assert state.owner == OWNER and state.user_group == "g1"
    assert state.callback == "https://dashboard.example/callback"
    assert state.cloud_provider_name == "BACKBONE"
    assert state.cloud_provider_endpoint is not None
    assert state.cloud_provider_endpoint.iaas_type == "OPENSTACK"
    assert state.cloud_provider_endpoint.region == "cnaf"
    assert state.deployment_provider == "IM"
    assert state.version == 4


def test_update_time_never_goes_back() -> None:
    late, early = T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)
    state = fold([requested(occurred_at=late), scheduled(SITE_A, at=early)])
    assert state.updated_at == late


# --- authorization helper ------------------------------------------------------------------


def test_may_manage() -> None:
    state = fold(created_history())
    assert may_manage(state, OWNER, is_admin=False)
    assert not may_manage(state, OTHER_USER, is_admin=False)
    assert may_manage(state, ADMIN, is_admin=True)
    assert not may_manage(state, FOREIGN_ADMIN, is_admin=True)
    assert may_manage(state, system_actor("janitor"), is_admin=False)
