"""Deployments that need data, against the real Rucio peer: the replicator makes the rule,
the deployment waits for it, a STUCK rule fails it, its deletion removes the rule.

No transfer daemons run: the tests end the transfers through Rucio's replica state API
(AVAILABLE makes a rule OK, UNAVAILABLE makes it STUCK). No deployer runs in this system, so
"released" is the ``deployment.data_ready`` event that the IM deployer waits for.
"""

from __future__ import annotations

import uuid

from api.legacy.common import DECIDER as DEPLOYMENT_DECIDER
from domain import deployments as dep
from domain import replications as rep
from handlers.rucio_client import Did, ReplicaState, RucioClient, RuleState
from handlers.rucio_locator import RucioDataLocator
from tests.replications.support import DataHarness, actor_of
from tests.rucio.conftest import Scenario
from tests.rucio.support import wait_for_rule_state


def requirement(scenario: Scenario, *, wait: bool = True,
                expression: str | None = None, did: str | None = None) -> dep.DataRequirement:
    return dep.DataRequirement(dids=(did or str(scenario.dataset),),
                               rse_expression=expression or scenario.target, wait=wait)


async def test_a_deployment_waits_for_its_data_then_is_released(
        data: DataHarness, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    owner = actor_of(data.user())
    deployment_id = await data.create_deployment(owner, requirement(fx_scenario))
    replication_id = rep.requirement_replication_id(deployment_id, 0)

    replicating = await data.wait_replication(
        replication_id, "rule created", lambda s: s.exists and s.current_generation.has_rules)
    [rule_id] = replicating.current_generation.rule_ids
    rule = await fx_rucio.get_replication_rule(rule_id)
    assert (rule.did, rule.rse_expression, rule.account) == (
        fx_scenario.dataset, fx_scenario.target, fx_rucio.account)
    assert rule.state is RuleState.REPLICATING
    assert replicating.owner == owner and replicating.deployment_id == deployment_id
    waiting = await data.deployment(deployment_id)
    assert waiting.awaiting_data and waiting.status is dep.DeploymentStatus.CREATE_IN_PROGRESS

    await fx_rucio.set_replica_states(fx_scenario.target, fx_scenario.files,
                                      ReplicaState.AVAILABLE)
    released = await data.wait_deployment(deployment_id, "data ready",
                                          lambda s: not s.awaiting_data)
    assert released.status is dep.DeploymentStatus.CREATE_IN_PROGRESS
    types = await data.event_types(dep.stream_id(deployment_id))
    assert types.count("deployment.data_ready") == 1
    done = await data.replication(replication_id)
    assert done.status is rep.ReplicationStatus.OK
    assert (done.current_generation.locks_ok, done.current_generation.locks_stuck) == (2, 0)
    # Exactly one rule of ours for this DID and expression, whatever was redelivered.
    ours = [r for r in await fx_rucio.list_did_rules(fx_scenario.dataset)
            if r.account == fx_rucio.account and r.rse_expression == fx_scenario.target]
    assert [r.id for r in ours] == [rule_id]


async def test_a_stuck_rule_fails_the_deployment_with_a_reason(
        data: DataHarness, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    owner = actor_of(data.user())
    deployment_id = await data.create_deployment(owner, requirement(fx_scenario))
    replication_id = rep.requirement_replication_id(deployment_id, 0)
    state = await data.wait_replication(replication_id, "rule created",
                                        lambda s: s.exists and s.current_generation.has_rules)
    [rule_id] = state.current_generation.rule_ids

    await fx_rucio.set_replica_states(fx_scenario.target, fx_scenario.files[:1],
                                      ReplicaState.UNAVAILABLE)
    failed = await data.wait_deployment(
        deployment_id, "failed", lambda s: s.status is dep.DeploymentStatus.CREATE_FAILED)
    assert failed.status_reason is not None
    assert "STUCK" in failed.status_reason and rule_id in failed.status_reason
    assert "data_ready" not in " ".join(await data.event_types(dep.stream_id(deployment_id)))

    # A retry still waits for the same data: with the rule still STUCK it fails again.
    await data.run(dep.stream_id(deployment_id), DEPLOYMENT_DECIDER,
                   dep.RetryDeployment(deployment_id=deployment_id, actor=owner))
    again = await data.wait_deployment(
        deployment_id, "failed again",
        lambda s: s.operation == 2 and s.status is dep.DeploymentStatus.CREATE_FAILED)
    assert again.status_reason is not None and rule_id in again.status_reason


async def test_deleting_the_deployment_removes_its_rule(
        data: DataHarness, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    owner = actor_of(data.user())
    deployment_id = await data.create_deployment(owner, requirement(fx_scenario, wait=False))
    replication_id = rep.requirement_replication_id(deployment_id, 0)
    state = await data.wait_replication(replication_id, "rule created",
                                        lambda s: s.exists and s.current_generation.has_rules)
    [rule_id] = state.current_generation.rule_ids
    assert (await fx_rucio.get_replication_rule(rule_id)).expires_at is None  # no lifetime

    await data.run(dep.stream_id(deployment_id), DEPLOYMENT_DECIDER,
                   dep.DeleteDeployment(deployment_id=deployment_id, actor=owner))
    removed = await data.wait_replication(
        replication_id, "cancelled and its rule removed",
        lambda s: s.status is rep.ReplicationStatus.CANCELLED)
    assert removed.generations[0].removed
    # Rucio's DELETE is soft: the rule now expires (within the hour) instead of never.
    rule = await fx_rucio.get_replication_rule(rule_id)
    assert rule.expires_at is not None


async def test_an_unknown_did_fails_the_waiting_deployment_with_rucios_reason(
        data: DataHarness, fx_scenario: Scenario) -> None:
    unknown = f"{fx_scenario.scope}:missing_{uuid.uuid4().hex[:6]}"
    deployment_id = await data.create_deployment(actor_of(data.user()),
                                                 requirement(fx_scenario, did=unknown))
    failed = await data.wait_deployment(
        deployment_id, "failed", lambda s: s.status is dep.DeploymentStatus.CREATE_FAILED)
    assert failed.status_reason is not None and "DataIdentifierNotFound" in failed.status_reason
    replication = await data.replication(rep.requirement_replication_id(deployment_id, 0))
    assert replication.status is rep.ReplicationStatus.FAILED


async def test_the_data_locator_finds_the_rses_holding_every_file(
        data: DataHarness, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    locator = RucioDataLocator(fx_rucio)
    dataset = str(fx_scenario.dataset)
    assert await locator.rses_holding([dataset]) == {fx_scenario.source}
    [rule_id] = await fx_rucio.add_replication_rule([fx_scenario.dataset], copies=1,
                                                    rse_expression=fx_scenario.target)
    # One file on the target is not enough to hold the dataset there.
    await fx_rucio.set_replica_states(fx_scenario.target, fx_scenario.files[:1],
                                      ReplicaState.AVAILABLE)
    assert await locator.rses_holding([dataset]) == {fx_scenario.source}
    await fx_rucio.set_replica_states(fx_scenario.target, fx_scenario.files[1:],
                                      ReplicaState.AVAILABLE)
    await wait_for_rule_state(fx_rucio, rule_id, RuleState.OK)
    assert await locator.rses_holding([dataset]) == {fx_scenario.source, fx_scenario.target}
    assert await locator.rses_holding([dataset, str(fx_scenario.files[0])]) == {
        fx_scenario.source, fx_scenario.target}
    missing = str(Did(fx_scenario.scope, f"missing_{uuid.uuid4().hex[:6]}"))
    assert await locator.rses_holding([dataset, missing]) == set()
