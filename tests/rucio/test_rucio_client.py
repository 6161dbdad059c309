"""handlers.rucio_client against a real Rucio server (started by scripts/services.sh).

No transfer daemons run, so a rule that needs copies stays REPLICATING until the test
ends its transfers through the replica state API: AVAILABLE gives OK, UNAVAILABLE STUCK.
"""

from __future__ import annotations

import logging
import socket
import uuid

import pytest

from handlers.rucio_client import (
    Did,
    ReplicaState,
    RucioClient,
    RucioDuplicateRule,
    RucioInvalidExpression,
    RucioNotFound,
    RucioRejected,
    RucioUnauthorized,
    RucioUnavailable,
    RuleState,
)
from tests.rucio.conftest import RucioPeer, Scenario
from tests.rucio.support import poll, remove_for_good, wait_for_rule_state


async def add_rule(rucio: RucioClient, scenario: Scenario, expression: str | None = None) -> str:
    [rule_id] = await rucio.add_replication_rule(
        [scenario.dataset], copies=1, rse_expression=expression or scenario.target,
        lifetime=3600, comment="tests/rucio")
    return rule_id


async def test_ping_and_whoami(fx_rucio: RucioClient) -> None:
    assert await fx_rucio.ping() == "41.5.1"
    assert await fx_rucio.whoami() == fx_rucio.account


async def test_a_rule_that_needs_copies_is_replicating(fx_rucio: RucioClient,
                                                       fx_scenario: Scenario) -> None:
    rule_id = await add_rule(fx_rucio, fx_scenario)

    rule = await wait_for_rule_state(fx_rucio, rule_id, RuleState.REPLICATING)
    assert rule.id == rule_id
    assert rule.did == fx_scenario.dataset
    assert (rule.rse_expression, rule.copies, rule.account) == (fx_scenario.target, 1, "root")
    assert (rule.locks_ok_cnt, rule.locks_replicating_cnt, rule.locks_stuck_cnt) == (0, 2, 0)
    assert rule.expires_at is not None and rule.created_at is not None
    assert rule.expires_at > rule.created_at
    locks = await fx_rucio.list_rule_locks(rule_id)
    assert sorted(lock.name for lock in locks) == ["file_0", "file_1"]
    assert {(lock.rse, lock.state) for lock in locks} == {(fx_scenario.target, "REPLICATING")}


async def test_replicas_available_turn_the_rule_ok(fx_rucio: RucioClient,
                                                   fx_scenario: Scenario) -> None:
    rule_id = await add_rule(fx_rucio, fx_scenario)
    first, second = fx_scenario.files

    await fx_rucio.set_replica_states(fx_scenario.target, [first], ReplicaState.AVAILABLE)
    half = await poll("one lock OK", lambda: fx_rucio.get_replication_rule(rule_id),
                      lambda rule: rule.locks_ok_cnt == 1)
    assert half.state is RuleState.REPLICATING
    assert half.locks_replicating_cnt == 1

    await fx_rucio.set_replica_states(fx_scenario.target, [second], ReplicaState.AVAILABLE)
    rule = await wait_for_rule_state(fx_rucio, rule_id, RuleState.OK)
    assert (rule.locks_ok_cnt, rule.locks_replicating_cnt, rule.locks_stuck_cnt) == (2, 0, 0)


async def test_a_replica_unavailable_makes_the_rule_stuck(fx_rucio: RucioClient,
                                                          fx_scenario: Scenario) -> None:
    rule_id = await add_rule(fx_rucio, fx_scenario)

    await fx_rucio.set_replica_states(fx_scenario.target, fx_scenario.files[:1],
                                      ReplicaState.UNAVAILABLE)
    rule = await wait_for_rule_state(fx_rucio, rule_id, RuleState.STUCK)
    assert (rule.locks_ok_cnt, rule.locks_replicating_cnt, rule.locks_stuck_cnt) == (0, 1, 1)


async def test_an_rse_attribute_expression_selects_the_target(fx_rucio: RucioClient,
                                                              fx_scenario: Scenario) -> None:
    assert await fx_rucio.list_rses(fx_scenario.target_attribute) == [fx_scenario.target]
    rule_id = await add_rule(fx_rucio, fx_scenario, fx_scenario.target_attribute)
    await fx_rucio.set_replica_states(fx_scenario.target, fx_scenario.files,
                                      ReplicaState.AVAILABLE)
    rule = await wait_for_rule_state(fx_rucio, rule_id, RuleState.OK)
    assert rule.rse_expression == fx_scenario.target_attribute


async def test_delete_is_soft_then_the_judge_cleaner_removes_the_rule(
        fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    rule_id = await add_rule(fx_rucio, fx_scenario)

    await fx_rucio.delete_replication_rule(rule_id)
    # Rucio's DELETE only brings the expiry forward; the rule stays readable...
    still_there = await fx_rucio.get_replication_rule(rule_id)
    assert still_there.id == rule_id
    # ...and deleting it again is accepted.
    await fx_rucio.delete_replication_rule(rule_id)

    await remove_for_good(fx_rucio, rule_id)
    with pytest.raises(RucioNotFound):
        await fx_rucio.get_replication_rule(rule_id)
    assert rule_id not in {rule.id for rule in await fx_rucio.list_did_rules(fx_scenario.dataset)}
    with pytest.raises(RucioNotFound):
        await fx_rucio.delete_replication_rule(rule_id)


async def test_rules_of_a_did_are_listed(fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    assert await fx_rucio.list_did_rules(fx_scenario.dataset) == []
    on_target = await add_rule(fx_rucio, fx_scenario)
    on_source = await add_rule(fx_rucio, fx_scenario, fx_scenario.source)

    rules = {rule.id: rule for rule in await fx_rucio.list_did_rules(fx_scenario.dataset)}
    assert set(rules) == {on_target, on_source}
    # The source already holds both files: nothing to copy, OK at once.
    assert rules[on_source].state is RuleState.OK
    assert rules[on_target].state is RuleState.REPLICATING


async def test_the_same_rule_twice_is_a_duplicate(fx_rucio: RucioClient,
                                                  fx_scenario: Scenario) -> None:
    await add_rule(fx_rucio, fx_scenario)
    with pytest.raises(RucioDuplicateRule) as caught:
        await add_rule(fx_rucio, fx_scenario)
    assert isinstance(caught.value, RucioRejected)
    assert not caught.value.retryable


async def test_unknown_did_and_unknown_rule_are_not_found(fx_rucio: RucioClient,
                                                          fx_scenario: Scenario) -> None:
    unknown = Did(fx_scenario.scope, f"no_such_{uuid.uuid4().hex[:8]}")
    with pytest.raises(RucioNotFound) as caught:
        await fx_rucio.add_replication_rule([unknown], copies=1,
                                            rse_expression=fx_scenario.target)
    assert caught.value.exception_class == "DataIdentifierNotFound"
    with pytest.raises(RucioNotFound):
        await fx_rucio.list_did_rules(unknown)
    with pytest.raises(RucioNotFound) as caught:
        await fx_rucio.get_replication_rule(uuid.uuid4().hex)
    assert caught.value.exception_class == "RuleNotFound"
    with pytest.raises(RucioNotFound):
        await fx_rucio.get_replication_rule("not-a-rule-id")


@pytest.mark.parametrize("expression", ["NO_SUCH_RSE", "orchtest=nothing_has_this", "tier=(("])
async def test_a_bad_rse_expression_is_invalid(fx_rucio: RucioClient, fx_scenario: Scenario,
                                               expression: str) -> None:
    with pytest.raises(RucioInvalidExpression):
        await add_rule(fx_rucio, fx_scenario, expression)
    assert await fx_rucio.list_did_rules(fx_scenario.dataset) == []


async def test_an_rse_without_quota_is_rejected(fx_rucio: RucioClient,
                                                fx_scenario: Scenario) -> None:
    no_quota = f"NOQUOTA_{uuid.uuid4().hex[:8].upper()}"
    await fx_rucio.add_rse(no_quota)
    with pytest.raises(RucioRejected) as caught:
        await add_rule(fx_rucio, fx_scenario, no_quota)
    assert caught.value.exception_class == "InsufficientAccountLimit"


async def test_a_wrong_password_is_unauthorized(fx_rucio_peer: RucioPeer) -> None:
    async with fx_rucio_peer.client(password="not-the-password") as client:
        with pytest.raises(RucioUnauthorized):
            await client.whoami()
        with pytest.raises(RucioUnauthorized):
            await client.authenticate()


async def test_an_invalid_token_is_renewed_once(fx_rucio: RucioClient) -> None:
    await fx_rucio.authenticate()
    assert fx_rucio._token is not None
    fx_rucio._token.value = "root-orchestrator-unknown-00000000000000000000000000000000"

    assert await fx_rucio.whoami() == "root"
    assert fx_rucio._token.value != "root-orchestrator-unknown-00000000000000000000000000000000"


async def test_rucio_down_is_unavailable_and_retryable(fx_rucio_peer: RucioPeer) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RucioClient(f"http://127.0.0.1:{port}", account="root",
                         username=fx_rucio_peer.username, password=fx_rucio_peer.password)
    async with client:
        with pytest.raises(RucioUnavailable) as caught:
            await client.get_replication_rule(uuid.uuid4().hex)
    assert caught.value.retryable


async def test_secrets_stay_out_of_logs_and_reprs(fx_rucio_peer: RucioPeer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with fx_rucio_peer.client() as client:
        await client.whoami()
        assert client._token is not None
        token = client._token.value
        with pytest.raises(RucioNotFound) as caught:
            await client.get_replication_rule(uuid.uuid4().hex)
        shown = " ".join([caplog.text, repr(client), repr(client._token), str(caught.value)])
    assert "[redacted]" in caplog.text  # httpcore's DEBUG record of the login answer
    assert token not in shown
    assert fx_rucio_peer.password not in shown
