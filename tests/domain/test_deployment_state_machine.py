"""Property test: any sequence of commands keeps the deployment's invariants.

Hypothesis drives users and handlers with plausible and implausible commands (wrong actors,
stale or future operations, out-of-order attempts, conflicting infrastructures, ...). After each
step the invariants are checked, folding every event from scratch must give the incrementally
evolved state, every event must survive a JSON round trip, and a handler command redelivered
at once (at-least-once delivery) must decide nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from domain.deployments import (
    FAILED_STATUSES,
    HANDLER_COMMAND_TYPES,
    IN_PROGRESS_STATUS,
    AttemptFailureCause,
    AttemptOutcome,
    ChangeResources,
    CompleteDeletion,
    CompleteDeployment,
    DeleteDeployment,
    DeploymentCommand,
    DeploymentError,
    DeploymentEvent,
    DeploymentStatus,
    FailAttempt,
    FailDeletion,
    FailDeployment,
    NodeState,
    PreferredSite,
    RankedSite,
    RecordInfrastructureCreated,
    RecordInfrastructureDestroyed,
    RecordLog,
    RecordScheduling,
    RequestResourceAction,
    ResetDeployment,
    Resource,
    ResourceAction,
    RetryDeployment,
    StartAttempt,
    Task,
    UpdateDeployment,
    decide,
    decode_event,
    encode_event,
    evolve,
    fold,
    initial_state,
)

from .deployment_support import (
    ADMIN,
    DEPLOYER,
    DEPLOYMENT_ID,
    FOREIGN_ADMIN,
    IDENTITY_V2,
    OTHER_USER,
    OWNER,
    RESOURCES_V2,
    SCHEDULER,
    SITE_A,
    SITE_B,
    SITE_C,
    T0,
    TEMPLATE_V2,
    create_command,
)

S = DeploymentStatus
SITES = [SITE_A, SITE_B, SITE_C]
USERS = st.sampled_from(
    [(OWNER, False), (OWNER, False), (ADMIN, True), (OTHER_USER, False), (FOREIGN_ADMIN, True)]
)
USER_REQUESTS = [
    "update",
    "update",
    "update",
    "reset",
    "reset",
    "retry",
    "resource_action",
    "delete",
]
USER_REQUESTS += ["create"]  # always refused: the deployment exists
HANDLER_REPORTS = [
    "schedule",
    "start_attempt",
    "infrastructure_created",
    "infrastructure_destroyed",
    "fail_attempt",
    "complete",
    "fail",
    "complete_deletion",
    "fail_deletion",
    "change_resources",
    "record_log",
]
REQUESTED_STATUS = {
    "deployment.requested",
    "deployment.update_requested",
    "deployment.deletion_requested",
    "deployment.retry_requested",
}


class DeploymentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state()
        self.events: list[DeploymentEvent] = []
        self.clock = T0
        self.deleted_at_version: int | None = None

    # --- running commands ------------------------------------------------------------------

    def run(self, command: DeploymentCommand, data: st.DataObject) -> None:
        self.clock += timedelta(seconds=data.draw(st.integers(0, 600), label="seconds later"))
        try:
            events = decide(command, self.state, now=self.clock)
        except DeploymentError:
            return
        for event in events:
            assert event.deployment_id == DEPLOYMENT_ID
            assert event.occurred_at == self.clock
            assert decode_event(encode_event(event)) == event
            self.state = evolve(self.state, event)
        self.events.extend(events)
        if isinstance(command, HANDLER_COMMAND_TYPES):
            assert decide(command, self.state, now=self.clock) == [], "redelivery must be a no-op"

    def operation(self, data: st.DataObject) -> int:
        current = self.state.operation
        return data.draw(st.sampled_from([current, current, current, current - 1, current + 1]))

    def attempt_number(self, data: st.DataObject) -> int:
        last = self.state.last_attempt_number
        return data.draw(st.sampled_from([last, last, last + 1, max(1, last - 1)]))

    # --- user commands ---------------------------------------------------------------------

    @initialize(data=st.data())
    def create_first(self, data: st.DataObject) -> None:
        # Commands on a stream without a deployment are covered by the given/when/then tests.
        self.create(data)

    def create(self, data: st.DataObject) -> None:
        command = create_command(
            max_providers_retry=data.draw(st.sampled_from([None, 1, 2])),
            keep_last_attempt=data.draw(st.booleans()),
            preferred_site=data.draw(
                st.sampled_from([None, None, PreferredSite(provider_id="prov-b")])
            ),
            provider_timeout_mins=data.draw(st.sampled_from([None, 60, 720])),
        )
        self.run(command, data)

    def update(self, data: st.DataObject) -> None:
        actor, is_admin = data.draw(USERS)
        command = UpdateDeployment(
            deployment_id=DEPLOYMENT_ID,
            actor=actor,
            actor_is_admin=is_admin,
            template=TEMPLATE_V2,
            template_identity=IDENTITY_V2,
            requested_resources=RESOURCES_V2,
            parameters=data.draw(st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3))),
            user_group=data.draw(st.sampled_from([None, "g1", "g2"])),
            timeout_mins=data.draw(st.sampled_from([None, 30, 720])),
        )
        self.run(command, data)

    def delete(self, data: st.DataObject) -> None:
        actor, is_admin = data.draw(USERS)
        force = data.draw(st.booleans())
        self.run(
            DeleteDeployment(
                deployment_id=DEPLOYMENT_ID, actor=actor, actor_is_admin=is_admin, force=force
            ),
            data,
        )

    def reset(self, data: st.DataObject) -> None:
        actor, is_admin = data.draw(USERS)
        matching = {
            S.CREATE_IN_PROGRESS: S.CREATE_FAILED,
            S.UPDATE_IN_PROGRESS: S.UPDATE_FAILED,
        }.get(self.state.status or S.UNKNOWN, S.DELETE_FAILED)
        target = data.draw(st.sampled_from([matching, matching, *DeploymentStatus]))
        self.run(
            ResetDeployment(
                deployment_id=DEPLOYMENT_ID, actor=actor, actor_is_admin=is_admin, status=target
            ),
            data,
        )

    def retry(self, data: st.DataObject) -> None:
        actor, is_admin = data.draw(USERS)
        self.run(
            RetryDeployment(deployment_id=DEPLOYMENT_ID, actor=actor, actor_is_admin=is_admin), data
        )

    def resource_action(self, data: st.DataObject) -> None:
        actor, is_admin = data.draw(USERS)
        resource_id = data.draw(st.sampled_from(["res-1", "res-2"]))
        resource = self.state.resource(resource_id)
        fitting = ResourceAction.START
        if resource is not None and resource.state == NodeState.STARTED:
            fitting = ResourceAction.STOP
        command = RequestResourceAction(
            deployment_id=DEPLOYMENT_ID,
            actor=actor,
            actor_is_admin=is_admin,
            resource_id=resource_id,
            action=data.draw(st.sampled_from([fitting, *ResourceAction])),
        )
        self.run(command, data)

    @rule(data=st.data())
    def user_request(self, data: st.DataObject) -> None:
        """A user (owner, admin, someone else) asks for something."""
        name = data.draw(st.sampled_from(USER_REQUESTS), label="user request")
        getattr(self, name)(data)

    @rule(data=st.data())
    def handler_report(self, data: st.DataObject) -> None:
        """A handler reports something, plausible or not (stale, out of order, conflicting)."""
        name = data.draw(st.sampled_from(HANDLER_REPORTS), label="handler report")
        getattr(self, name)(data)

    # --- handler commands ------------------------------------------------------------------

    @precondition(lambda self: self.state.in_progress)
    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """What well-behaved handlers do next (a few steps), so that runs reach every status."""
        for _ in range(data.draw(st.sampled_from([6, 3, 1]), label="steps")):
            if not self.state.in_progress:
                return
            self.advance_once(data)

    def advance_once(self, data: st.DataObject) -> None:
        state = self.state
        operation = state.operation
        common: dict[str, Any] = dict(deployment_id=DEPLOYMENT_ID, actor=DEPLOYER)
        succeed = data.draw(st.sampled_from([True, True, False]), label="succeed")
        command: DeploymentCommand
        if state.status == S.UPDATE_IN_PROGRESS:
            command = (
                CompleteDeployment(**common, operation=operation, outputs={"ip": "2"})
                if succeed
                else FailDeployment(**common, operation=operation, reason="update failed")
            )
        elif state.status == S.DELETE_IN_PROGRESS:
            command = (
                CompleteDeletion(**common, operation=operation)
                if succeed
                else FailDeletion(**common, operation=operation, reason="IM down")
            )
        elif state.candidates is None:
            sites = data.draw(st.lists(st.sampled_from(SITES), unique=True, min_size=1, max_size=3))
            if state.preferred_site is not None:
                sites = [s for s in sites if state.preferred_site.admits(s)]
            command = RecordScheduling(
                **{**common, "actor": SCHEDULER},
                operation=operation,
                candidates=tuple(RankedSite(site=s) for s in sites),
                ranking_method="fallback",
            )
        elif (running := state.running_attempt) is None:
            if not state.candidates:
                command = FailDeployment(**common, operation=operation, reason="no candidates")
            else:
                command = StartAttempt(
                    **common,
                    operation=operation,
                    attempt=state.last_attempt_number + 1,
                    site=data.draw(st.sampled_from([c.site for c in state.candidates])),
                )
        elif running.infrastructure_id is None and succeed:
            command = RecordInfrastructureCreated(
                **common, attempt=running.number, infrastructure_id=f"inf-{running.number}"
            )
        elif succeed:
            command = CompleteDeployment(**common, operation=operation, outputs={"ip": "1"})
        else:
            command = data.draw(
                st.sampled_from(
                    [
                        FailAttempt(**common, attempt=running.number, reason="quota"),
                        FailDeployment(**common, operation=operation, reason="gave up"),
                    ]
                )
            )
        self.run(command, data)
        if self.state.status == S.CREATE_COMPLETE and not self.state.resources:
            started = Resource(
                resource_id="res-1",
                node_name="vm",
                node_type="tosca.nodes.indigo.Compute",
                state=NodeState.STARTED,
            )
            stopped = Resource(
                resource_id="res-2",
                node_name="vm",
                node_type="tosca.nodes.indigo.Compute",
                state=NodeState.STOPPED,
            )
            self.run(ChangeResources(**common, resources=(started, stopped)), data)

    def schedule(self, data: st.DataObject) -> None:
        sites = data.draw(st.lists(st.sampled_from(SITES), unique=True, max_size=3))
        command = RecordScheduling(
            deployment_id=DEPLOYMENT_ID,
            actor=SCHEDULER,
            operation=self.operation(data),
            candidates=tuple(RankedSite(site=s, score=float(i)) for i, s in enumerate(sites)),
            ranking_method="fallback",
        )
        self.run(command, data)

    def start_attempt(self, data: st.DataObject) -> None:
        candidates = [c.site for c in self.state.candidates or ()]
        site = data.draw(st.sampled_from(candidates + SITES[:1]))
        last = self.state.last_attempt_number
        attempt = data.draw(st.sampled_from([last + 1, last + 1, last, last + 2]))
        command = StartAttempt(
            deployment_id=DEPLOYMENT_ID,
            actor=DEPLOYER,
            operation=self.operation(data),
            attempt=max(attempt, 1),
            site=site,
        )
        self.run(command, data)

    def infrastructure_created(self, data: st.DataObject) -> None:
        attempt = self.attempt_number(data)
        infrastructure_id = data.draw(
            st.sampled_from([f"inf-{attempt}", f"inf-{attempt}", "inf-x"])
        )
        command = RecordInfrastructureCreated(
            deployment_id=DEPLOYMENT_ID,
            actor=DEPLOYER,
            attempt=attempt,
            infrastructure_id=infrastructure_id,
        )
        self.run(command, data)

    def infrastructure_destroyed(self, data: st.DataObject) -> None:
        attempt = self.attempt_number(data)
        infrastructure_id = data.draw(st.sampled_from([f"inf-{attempt}", "inf-x"]))
        command = RecordInfrastructureDestroyed(
            deployment_id=DEPLOYMENT_ID,
            actor=DEPLOYER,
            attempt=attempt,
            infrastructure_id=infrastructure_id,
        )
        self.run(command, data)

    def fail_attempt(self, data: st.DataObject) -> None:
        command = FailAttempt(
            deployment_id=DEPLOYMENT_ID,
            actor=DEPLOYER,
            attempt=self.attempt_number(data),
            reason=data.draw(st.sampled_from(["quota", "timeout"])),
            cause=data.draw(
                st.sampled_from([AttemptFailureCause.ERROR, AttemptFailureCause.TIMEOUT])
            ),
        )
        self.run(command, data)

    def complete(self, data: st.DataObject) -> None:
        outputs = data.draw(st.dictionaries(st.sampled_from(["ip", "url"]), st.text(max_size=3)))
        self.run(
            CompleteDeployment(
                deployment_id=DEPLOYMENT_ID,
                actor=DEPLOYER,
                operation=self.operation(data),
                outputs=outputs,
            ),
            data,
        )

    def fail(self, data: st.DataObject) -> None:
        self.run(
            FailDeployment(
                deployment_id=DEPLOYMENT_ID,
                actor=DEPLOYER,
                operation=self.operation(data),
                reason="broken",
            ),
            data,
        )

    def complete_deletion(self, data: st.DataObject) -> None:
        self.run(
            CompleteDeletion(
                deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, operation=self.operation(data)
            ),
            data,
        )

    def fail_deletion(self, data: st.DataObject) -> None:
        self.run(
            FailDeletion(
                deployment_id=DEPLOYMENT_ID,
                actor=DEPLOYER,
                operation=self.operation(data),
                reason="IM down",
            ),
            data,
        )

    def change_resources(self, data: st.DataObject) -> None:
        resources = data.draw(
            st.lists(
                st.builds(
                    Resource,
                    resource_id=st.sampled_from(["res-1", "res-2"]),
                    node_name=st.just("node"),
                    node_type=st.just("tosca.nodes.indigo.Compute"),
                    state=st.sampled_from([NodeState.STARTED, NodeState.STOPPED, *NodeState]),
                ),
                max_size=3,
            )
        )
        self.run(
            ChangeResources(
                deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, resources=tuple(resources)
            ),
            data,
        )

    def record_log(self, data: st.DataObject) -> None:
        log = data.draw(st.sampled_from(["", "booting", "configured"]))
        self.run(RecordLog(deployment_id=DEPLOYMENT_ID, actor=DEPLOYER, log=log), data)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def folding_from_scratch_equals_the_incremental_state(self) -> None:
        assert fold(self.events) == self.state
        assert self.state.version == len(self.events)

    @invariant()
    def status_and_task_are_legal(self) -> None:
        state = self.state
        if not state.exists:
            assert not self.events
            return
        assert state.status in set(DeploymentStatus)
        assert state.status != S.UNKNOWN
        assert state.task in (Task.NONE, Task.DEPLOYER)
        assert (state.task == Task.DEPLOYER) == (state.running_attempt is not None)
        assert state.operation_kind is not None
        if state.in_progress:
            assert state.status == IN_PROGRESS_STATUS[state.operation_kind]
        if state.status_reason is not None:
            assert state.status in FAILED_STATUSES
        assert state.owner == OWNER
        assert state.created_at is not None and state.updated_at is not None
        assert state.created_at <= state.updated_at

    @invariant()
    def operations_count_the_requests(self) -> None:
        requests = [e for e in self.events if type(e).__struct_config__.tag in REQUESTED_STATUS]
        assert self.state.operation == len(requests)
        assert [getattr(e, "operation", None) for e in requests] == list(
            range(1, len(requests) + 1)
        )

    @invariant()
    def attempts_are_numbered_in_order_and_one_runs_at_most(self) -> None:
        attempts = self.state.attempts
        assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
        assert [a.operation for a in attempts] == sorted(a.operation for a in attempts)
        running = [a for a in attempts if a.outcome == AttemptOutcome.RUNNING]
        assert len(running) <= 1
        if running:
            assert running[0] is attempts[-1]
            assert running[0].operation == self.state.operation
            assert self.state.status == S.CREATE_IN_PROGRESS
        if self.state.max_providers_retry is not None:
            by_operation: dict[int, int] = {}
            for attempt in attempts:
                by_operation[attempt.operation] = by_operation.get(attempt.operation, 0) + 1
            assert max(by_operation.values(), default=0) <= self.state.max_providers_retry

    @invariant()
    def at_most_one_infrastructure_per_attempt_and_none_shared(self) -> None:
        ids = [a.infrastructure_id for a in self.state.attempts if a.infrastructure_id is not None]
        assert len(ids) == len(set(ids))
        for attempt in self.state.attempts:
            assert not attempt.infrastructure_live or attempt.infrastructure_id is not None
        latest = next(
            (i for i in reversed([a.infrastructure_id for a in self.state.attempts]) if i), None
        )
        assert self.state.physical_id == latest

    @invariant()
    def delete_complete_is_terminal(self) -> None:
        if self.state.status == S.DELETE_COMPLETE:
            assert self.state.live_infrastructure_ids == ()
            assert all(r.state == NodeState.DELETED for r in self.state.resources)
            if self.deleted_at_version is None:
                self.deleted_at_version = self.state.version
            assert self.state.version == self.deleted_at_version, "nothing may follow a deletion"
        else:
            assert self.deleted_at_version is None, "DELETE_COMPLETE was left"

    @invariant()
    def events_never_hold_secrets(self) -> None:
        for event in self.events[-3:]:
            assert b"token" not in encode_event(event).lower()


def _settings(**overrides: Any) -> settings:
    return settings(
        max_examples=150,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        **overrides,
    )


DeploymentMachine.TestCase.settings = _settings()
TestDeploymentMachine = DeploymentMachine.TestCase
