"""Given/when/then for the replication decider, the deployment's data gate, and a property:
every handler command is idempotent (deciding it again on the new state changes nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import deployments as dep
from domain import replications as rep
from domain.identity import Actor, system_actor
from tests.msgspec_strategies import strategy_for_type

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
OWNER = Actor(issuer="https://iam.example/", subject="owner")
OTHER = Actor(issuer="https://iam.example/", subject="other")
ADMIN = Actor(issuer="https://iam.example/", subject="admin")
HANDLER = system_actor("rucio-replicator")
RID = "r-1"
RULE_A, RULE_B, RULE_C, RULE_D = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


def given_events(*events: rep.ReplicationEvent) -> rep.ReplicationState:
    return rep.fold(events)


def when(state: rep.ReplicationState, command: rep.ReplicationCommand,
         at: datetime = T0) -> list[rep.ReplicationEvent]:
    return rep.decide(command, state, now=at)


def requested(**overrides: object) -> rep.ReplicationRequested:
    values: dict[str, object] = {
        "replication_id": RID, "occurred_at": T0, "actor": OWNER, "owner": OWNER,
        "dids": ("scope:ds1", "scope:ds2"), "rse_expression": "tier=2", "copies": 1,
        "lifetime_seconds": 3600}
    values.update(overrides)
    return rep.ReplicationRequested(**values)  # type: ignore[arg-type]


def created(generation: int = 0, expression: str = "tier=2",
            rules: Sequence[str] = (RULE_A, RULE_B)) -> rep.ReplicationRuleCreated:
    return rep.ReplicationRuleCreated(replication_id=RID, occurred_at=T0, actor=HANDLER,
                                      generation=generation, rse_expression=expression,
                                      rule_ids=tuple(rules))


def observed(state: rep.RuleState, generation: int = 0,
             ok: int = 0) -> rep.ReplicationStateObserved:
    return rep.ReplicationStateObserved(replication_id=RID, occurred_at=T0, actor=HANDLER,
                                        generation=generation, state=state, locks_ok=ok)


def migration(generation: int = 1, expression: str = "DST") -> rep.ReplicationMigrationRequested:
    return rep.ReplicationMigrationRequested(replication_id=RID, occurred_at=T0, actor=OWNER,
                                             generation=generation, rse_expression=expression)


# ---------------------------------------------------------------- request


def test_a_request_opens_generation_zero_without_rules() -> None:
    events = when(rep.initial_state(), rep.RequestReplication(
        replication_id=RID, actor=OWNER, dids=("scope:ds1",), rse_expression=" tier=2 "))
    state = rep.fold(events)
    assert [type(e) for e in events] == [rep.ReplicationRequested]
    assert state.status is rep.ReplicationStatus.REQUESTED
    assert state.owner == OWNER and state.rse_expression == "tier=2"
    assert not state.settled


def test_a_redelivered_request_changes_nothing_and_a_different_one_is_refused() -> None:
    state = given_events(requested())
    same = rep.RequestReplication(replication_id=RID, actor=OWNER, dids=("scope:ds1", "scope:ds2"),
                                  rse_expression="tier=2", lifetime_seconds=3600)
    assert when(state, same) == []
    with pytest.raises(rep.AlreadyExists):
        when(state, rep.RequestReplication(replication_id=RID, actor=OWNER,
                                           dids=("scope:ds1",), rse_expression="tier=2"))


@pytest.mark.parametrize(("dids", "expression", "copies", "lifetime", "message"), [
    ((), "X", 1, None, "at least one DID"),
    (("nocolon",), "X", 1, None, "scope:name"),
    (("s:a", "s:a"), "X", 1, None, "twice"),
    (("s:a",), "  ", 1, None, "RSE expression is required"),
    (("s:a",), "X", 0, None, "copies"),
    (("s:a",), "X", 1, 0, "lifetimeSeconds"),
])
def test_invalid_requests_are_refused_with_the_field_named(
        dids: tuple[str, ...], expression: str, copies: int, lifetime: int | None,
        message: str) -> None:
    with pytest.raises(rep.InvalidRequest) as refused:
        when(rep.initial_state(), rep.RequestReplication(
            replication_id=RID, actor=OWNER, dids=dids, rse_expression=expression,
            copies=copies, lifetime_seconds=lifetime))
    assert message in refused.value.message


def test_only_a_system_actor_may_request_on_someone_elses_behalf() -> None:
    with pytest.raises(rep.NotPermitted):
        when(rep.initial_state(), rep.RequestReplication(
            replication_id=RID, actor=OTHER, owner=OWNER, dids=("s:a",), rse_expression="X"))
    events = when(rep.initial_state(), rep.RequestReplication(
        replication_id=RID, actor=HANDLER, owner=OWNER, dids=("s:a",), rse_expression="X",
        deployment_id="dep-1", requirement_index=0, wait=True))
    assert rep.fold(events).owner == OWNER


# ---------------------------------------------------------------- rules and state


def test_rule_ids_are_recorded_once_per_generation() -> None:
    state = given_events(requested())
    events = when(state, rep.RecordRuleCreated(replication_id=RID, actor=HANDLER, generation=0,
                                               rse_expression="tier=2",
                                               rule_ids=(RULE_A, RULE_B)))
    after = rep.fold(events, state)
    assert after.status is rep.ReplicationStatus.REPLICATING
    assert after.current_generation.rule_ids == (RULE_A, RULE_B)
    # The same record again (a retried step) is a no-op; other ids are a conflict.
    assert when(after, rep.RecordRuleCreated(replication_id=RID, actor=HANDLER, generation=0,
                                             rse_expression="tier=2",
                                             rule_ids=(RULE_A, RULE_B))) == []
    with pytest.raises(rep.InvalidTransition):
        when(after, rep.RecordRuleCreated(replication_id=RID, actor=HANDLER, generation=0,
                                          rse_expression="tier=2", rule_ids=(RULE_C, RULE_D)))


def test_a_rule_per_did_is_required() -> None:
    with pytest.raises(rep.InvalidRequest):
        when(given_events(requested()), rep.RecordRuleCreated(
            replication_id=RID, actor=HANDLER, generation=0, rse_expression="tier=2",
            rule_ids=(RULE_A,)))


def test_rules_created_after_a_cancel_are_still_recorded_and_then_to_remove() -> None:
    cancelled = rep.ReplicationCancelled(replication_id=RID, occurred_at=T0, actor=OWNER)
    state = given_events(requested(), cancelled)
    assert state.status is rep.ReplicationStatus.CANCELLED
    events = when(state, rep.RecordRuleCreated(replication_id=RID, actor=HANDLER, generation=0,
                                               rse_expression="tier=2",
                                               rule_ids=(RULE_A, RULE_B)))
    after = rep.fold(events, state)
    assert after.status is rep.ReplicationStatus.CANCELLING
    assert [g.number for g in after.rules_to_remove] == [0]


def test_observed_state_is_recorded_only_when_it_changes() -> None:
    state = given_events(requested(), created())
    command = rep.ObserveRuleState(replication_id=RID, actor=HANDLER, generation=0,
                                   state=rep.RuleState.OK, locks_ok=4)
    events = when(state, command)
    after = rep.fold(events, state)
    assert after.status is rep.ReplicationStatus.OK and after.settled
    assert when(after, command) == []


def test_a_stuck_rule_is_stuck() -> None:
    state = given_events(requested(), created(), observed(rep.RuleState.STUCK))
    assert state.status is rep.ReplicationStatus.STUCK
    assert not state.settled


def test_failing_is_for_a_request_without_rules() -> None:
    state = given_events(requested())
    events = when(state, rep.FailReplication(replication_id=RID, actor=HANDLER,
                                             reason="unknown DID"))
    failed = rep.fold(events, state)
    assert failed.status is rep.ReplicationStatus.FAILED
    assert failed.failure_reason == "unknown DID" and failed.settled
    with pytest.raises(rep.InvalidTransition):
        when(given_events(requested(), created()),
             rep.FailReplication(replication_id=RID, actor=HANDLER, reason="late"))


# ---------------------------------------------------------------- migration


def test_a_migration_creates_new_rules_waits_for_ok_then_drops_the_old_ones() -> None:
    state = given_events(requested(), created(), observed(rep.RuleState.OK, ok=2))
    [asked] = when(state, rep.RequestMigration(replication_id=RID, actor=OWNER,
                                               rse_expression="DST"))
    assert asked == migration()
    state = rep.fold([asked, created(1, "DST", (RULE_C, RULE_D))], state)
    assert state.status is rep.ReplicationStatus.OK  # the old rules still serve
    with pytest.raises(rep.InvalidTransition):  # not OK yet
        when(state, rep.CompleteMigration(replication_id=RID, actor=HANDLER, generation=1))
    state = rep.fold([observed(rep.RuleState.OK, generation=1, ok=2)], state)
    events = when(state, rep.CompleteMigration(replication_id=RID, actor=HANDLER, generation=1))
    assert [type(e) for e in events] == [rep.ReplicationRuleRemoved,
                                         rep.ReplicationMigrationCompleted]
    done = rep.fold(events, state)
    assert done.rse_expression == "DST" and done.current_generation.rule_ids == (RULE_C, RULE_D)
    assert done.generations[0].removed and done.settled
    assert when(done, rep.CompleteMigration(replication_id=RID, actor=HANDLER,
                                            generation=1)) == []


def test_a_migration_needs_rules_a_new_target_and_none_in_progress() -> None:
    with pytest.raises(rep.InvalidTransition):
        when(given_events(requested()), rep.RequestMigration(
            replication_id=RID, actor=OWNER, rse_expression="DST"))
    with pytest.raises(rep.InvalidRequest):
        when(given_events(requested(), created()), rep.RequestMigration(
            replication_id=RID, actor=OWNER, rse_expression="tier=2"))
    pending = given_events(requested(), created(), migration())
    assert when(pending, rep.RequestMigration(replication_id=RID, actor=OWNER,
                                              rse_expression="DST")) == []
    with pytest.raises(rep.InvalidTransition):
        when(pending, rep.RequestMigration(replication_id=RID, actor=OWNER,
                                           rse_expression="ELSEWHERE"))


def test_a_failed_migration_keeps_the_data_where_it_was() -> None:
    state = given_events(requested(), created(), observed(rep.RuleState.OK), migration())
    events = when(state, rep.FailMigration(replication_id=RID, actor=HANDLER, generation=1,
                                           reason="no RSE"))
    after = rep.fold(events, state)
    assert after.migrating_to is None and after.rse_expression == "tier=2"
    assert after.status is rep.ReplicationStatus.OK
    assert after.generations[1].failure_reason == "no RSE"


# ---------------------------------------------------------------- cancel and authorization


def test_cancel_then_removal_ends_cancelled_and_both_are_idempotent() -> None:
    state = given_events(requested(), created(), migration(), created(1, "DST", (RULE_C, RULE_D)))
    [cancelled] = when(state, rep.CancelReplication(replication_id=RID, actor=OWNER))
    state = rep.fold([cancelled], state)
    assert state.status is rep.ReplicationStatus.CANCELLING
    assert [g.number for g in state.rules_to_remove] == [0, 1]
    assert when(state, rep.CancelReplication(replication_id=RID, actor=OWNER)) == []
    for generation in (0, 1):
        events = when(state, rep.RecordRulesRemoved(replication_id=RID, actor=HANDLER,
                                                    generation=generation))
        state = rep.fold(events, state)
    assert state.status is rep.ReplicationStatus.CANCELLED and state.settled
    assert when(state, rep.RecordRulesRemoved(replication_id=RID, actor=HANDLER,
                                              generation=0)) == []


def test_wanted_rules_cannot_be_recorded_as_removed() -> None:
    with pytest.raises(rep.InvalidTransition):
        when(given_events(requested(), created()),
             rep.RecordRulesRemoved(replication_id=RID, actor=HANDLER, generation=0))


@pytest.mark.parametrize(("actor", "is_admin", "allowed"), [
    (OWNER, False, True), (ADMIN, True, True), (OTHER, False, False),
    (Actor(issuer="https://elsewhere/", subject="admin"), True, False), (HANDLER, False, True)])
def test_owner_admins_of_its_issuer_and_the_system_may_cancel(
        actor: Actor, is_admin: bool, allowed: bool) -> None:
    state = given_events(requested())
    command = rep.CancelReplication(replication_id=RID, actor=actor, actor_is_admin=is_admin)
    if allowed:
        assert [type(e) for e in when(state, command)] == [rep.ReplicationCancelled]
    else:
        with pytest.raises(rep.NotPermitted):
            when(state, command)


def test_commands_on_an_unknown_replication_are_not_found() -> None:
    with pytest.raises(rep.ReplicationNotFound):
        when(rep.initial_state(), rep.CancelReplication(replication_id=RID, actor=OWNER))


@pytest.mark.parametrize("event_type", rep.EVENT_TYPES, ids=rep.event_tag)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_events_round_trip_through_json(
        event_type: type[rep.ReplicationEvent], data: st.DataObject) -> None:
    event = data.draw(strategy_for_type(event_type))
    assert rep.decode_event(rep.encode_event(event)) == event


# ---------------------------------------------------------------- property: idempotency

HANDLER_STEPS = st.lists(st.sampled_from([
    "create0", "ok0", "stuck0", "migrate", "create1", "ok1", "complete", "fail1", "cancel",
    "remove0", "remove1", "fail"]), max_size=12)


def _command(step: str, state: rep.ReplicationState) -> rep.ReplicationCommand:
    h = {"replication_id": RID, "actor": HANDLER}
    match step:
        case "create0":
            return rep.RecordRuleCreated(**h, generation=0, rse_expression="tier=2",
                                         rule_ids=(RULE_A, RULE_B))
        case "ok0" | "stuck0" | "ok1":
            state_of = rep.RuleState.STUCK if step == "stuck0" else rep.RuleState.OK
            return rep.ObserveRuleState(**h, generation=1 if step == "ok1" else 0,
                                        state=state_of, locks_ok=2)
        case "migrate":
            return rep.RequestMigration(**h, rse_expression="DST")
        case "create1":
            return rep.RecordRuleCreated(**h, generation=1, rse_expression="DST",
                                         rule_ids=(RULE_C, RULE_D))
        case "complete":
            return rep.CompleteMigration(**h, generation=1)
        case "fail1":
            return rep.FailMigration(**h, generation=1, reason="x")
        case "cancel":
            return rep.CancelReplication(**h)
        case "remove0" | "remove1":
            return rep.RecordRulesRemoved(**h, generation=int(step[-1]))
        case _:
            return rep.FailReplication(**h, reason="x")


@settings(max_examples=300, deadline=None)
@given(HANDLER_STEPS)
def test_any_sequence_of_steps_keeps_invariants_and_every_step_is_idempotent(
        steps: list[str]) -> None:
    state = given_events(requested())
    now = T0
    for step in steps:
        now += timedelta(seconds=1)
        command = _command(step, state)
        try:
            events = rep.decide(command, state, now=now)
        except rep.ReplicationError:
            continue
        state = rep.fold(events, state)
        # Deciding the same command again on the new state records nothing new.
        try:
            assert rep.decide(command, state, now=now) == []
        except rep.ReplicationError:
            pass
        # Invariants: removed rules are never wanted; a cancelled replication wants none;
        # the current generation always exists.
        assert 0 <= state.current < len(state.generations)
        wanted = [] if not state.active else [state.current_generation, state.pending_migration]
        assert all(g is None or not g.removed for g in wanted)
        assert state.status is not None


# ---------------------------------------------------------------- the deployment's data gate

DEPLOYMENT = "dep-1"
SITE = dep.Site(provider_id="p1", provider_name="P1", region="r1")


def deployment_requested(wait: bool) -> dep.DeploymentRequested:
    return dep.DeploymentRequested(
        deployment_id=DEPLOYMENT, occurred_at=T0, actor=OWNER, operation=1, owner=OWNER,
        user_group="g1", template="t",
        template_identity=dep.TemplateIdentity(name="t", type="vm", hash=dep.template_sha256("t")),
        requested_resources=dep.RequestedResources(),
        data_requirements=(dep.DataRequirement(dids=("s:ds",), rse_expression="X", wait=wait),))


def scheduled() -> dep.DeploymentScheduled:
    return dep.DeploymentScheduled(deployment_id=DEPLOYMENT, occurred_at=T0,
                                   actor=system_actor("scheduler"), operation=1,
                                   candidates=(dep.RankedSite(site=SITE),),
                                   ranking_method="test")


def test_a_waiting_deployment_cannot_start_an_attempt_until_its_data_is_ready() -> None:
    state = dep.fold([deployment_requested(wait=True), scheduled()])
    assert state.awaiting_data
    start = dep.StartAttempt(deployment_id=DEPLOYMENT, actor=system_actor("im"), operation=1,
                             attempt=1, site=SITE)
    with pytest.raises(dep.InvalidTransition):
        dep.decide(start, state, now=T0)
    ready = dep.MarkDataReady(deployment_id=DEPLOYMENT, actor=HANDLER, operation=1,
                              replication_ids=(f"{DEPLOYMENT}-data-0",))
    events = dep.decide(ready, state, now=T0)
    assert [dep.event_tag(e) for e in events] == ["deployment.data_ready"]
    state = dep.fold(events, state)
    assert not state.awaiting_data
    assert dep.decide(ready, state, now=T0) == []  # repeated news
    assert [type(e) for e in dep.decide(start, state, now=T0)] == [dep.DeploymentAttemptStarted]


def test_data_ready_is_ignored_once_the_deployment_moved_on() -> None:
    failed = dep.DeploymentFailed(deployment_id=DEPLOYMENT, occurred_at=T0, actor=HANDLER,
                                  operation=1, kind=dep.OperationKind.CREATE,
                                  status=dep.DeploymentStatus.CREATE_FAILED, reason="STUCK")
    state = dep.fold([deployment_requested(wait=True), failed])
    assert dep.decide(dep.MarkDataReady(deployment_id=DEPLOYMENT, actor=HANDLER, operation=1),
                      state, now=T0) == []


def test_a_deployment_that_does_not_wait_starts_at_once() -> None:
    state = dep.fold([deployment_requested(wait=False), scheduled()])
    assert not state.awaiting_data
    start = dep.StartAttempt(deployment_id=DEPLOYMENT, actor=system_actor("im"), operation=1,
                             attempt=1, site=SITE)
    assert dep.decide(start, state, now=T0)


def test_a_create_with_a_malformed_data_requirement_is_refused() -> None:
    command = dep.CreateDeployment(
        deployment_id=DEPLOYMENT, actor=OWNER, user_group="g1", template="t",
        template_identity=dep.TemplateIdentity(name="t", type="vm", hash=dep.template_sha256("t")),
        requested_resources=dep.RequestedResources(),
        data_requirements=(dep.DataRequirement(dids=("no-scope",), rse_expression="X"),))
    with pytest.raises(dep.InvalidRequest) as refused:
        dep.decide(command, dep.initial_state(), now=T0)
    assert "dataRequirements[0].dids" in refused.value.message
