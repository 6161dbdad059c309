"""/data/replications over the whole system and the real Rucio peer: create, list, get,
migrate, cancel; visibility (owner, admin, 404 for others); bad input; and the legacy
POST /deployments carrying ``dataRequirements``."""

from __future__ import annotations

import uuid
from typing import Any

from domain import deployments as dep
from domain import replications as rep
from handlers.rucio_client import ReplicaState, RucioClient, RuleState
from tests.api.support import ADMIN_GROUP, TEMPLATE
from tests.replications.support import DataHarness
from tests.rucio.conftest import Scenario
from tests.rucio.support import poll, remove_for_good


async def wait_json(data: DataHarness, user: Any, replication_id: str, what: str,
                    done: Any) -> dict[str, Any]:
    """Poll GET until ``done(body)``; a 404 counts as not yet (a deployment's replication is
    requested by the replicator shortly after the deployment)."""
    response = await poll(
        f"GET replication {replication_id}: {what}",
        lambda: data.request("GET", f"/data/replications/{replication_id}", user),
        lambda r: r.status_code == 200 and done(r.json()), within_s=120)
    body: dict[str, Any] = response.json()
    return body


async def test_a_migration_ends_with_only_the_new_rule(
        data: DataHarness, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    alice = data.user()
    created = await data.request("POST", "/data/replications", alice, json={
        "dids": [str(fx_scenario.dataset)], "rseExpression": fx_scenario.source})
    assert created.status_code == 201, created.text
    body = created.json()
    replication_id = body["uuid"]
    assert body["status"] == "REQUESTED" and body["createdBy"]["subject"] == alice.subject
    # The source already holds the files: the first rule is OK at once.
    first = await wait_json(data, alice, replication_id, "OK", lambda b: b["status"] == "OK")
    [old_rule] = first["ruleIds"]

    moved = await data.request("POST", f"/data/replications/{replication_id}/migrate", alice,
                               json={"rseExpression": fx_scenario.target_attribute})
    assert moved.status_code == 202, moved.text
    assert moved.json()["migration"]["rseExpression"] == fx_scenario.target_attribute
    migrating = await wait_json(data, alice, replication_id, "new rule made",
                                lambda b: b["migration"] and b["migration"]["ruleIds"])
    [new_rule] = migrating["migration"]["ruleIds"]
    assert migrating["ruleIds"] == [old_rule] and migrating["status"] == "OK"

    await fx_rucio.set_replica_states(fx_scenario.target, fx_scenario.files,
                                      ReplicaState.AVAILABLE)
    done = await wait_json(data, alice, replication_id, "migrated",
                           lambda b: b["migration"] is None
                           and b["rseExpression"] == fx_scenario.target_attribute)
    assert done["ruleIds"] == [new_rule] and done["status"] == "OK"
    assert done["progress"] == {"ok": 2, "replicating": 0, "stuck": 0}
    # The old rule was removed (Rucio's soft delete gave it an expiry); once Rucio's cleaner
    # has run, the DID has only the new rule.
    assert (await fx_rucio.get_replication_rule(old_rule)).expires_at is not None
    await remove_for_good(fx_rucio, old_rule)
    remaining = await fx_rucio.list_did_rules(fx_scenario.dataset)
    assert [(r.id, r.state) for r in remaining] == [(new_rule, RuleState.OK)]


async def test_list_cancel_and_visibility(data: DataHarness, fx_rucio: RucioClient,
                                          fx_scenario: Scenario) -> None:
    alice, bob = data.user("alice"), data.user("bob")
    admin = data.user("admin", groups=(ADMIN_GROUP,))
    created = await data.request("POST", "/data/replications", alice, json={
        "dids": [str(fx_scenario.dataset)], "rseExpression": fx_scenario.target,
        "lifetimeSeconds": 7200})
    replication_id = created.json()["uuid"]
    state = await wait_json(data, alice, replication_id, "rule",
                            lambda b: b["ruleIds"] and b["status"] == "REPLICATING")
    [rule_id] = state["ruleIds"]
    assert state["lifetimeSeconds"] == 7200

    for path in (f"/data/replications/{replication_id}",):
        hidden = await data.request("GET", path, bob)
        assert hidden.status_code == 404
        assert hidden.json()["message"] == f"No replication found with id: {replication_id}"
        assert (await data.request("DELETE", path, bob)).status_code == 404
    assert (await data.request("GET", f"/data/replications/{replication_id}", admin)
            ).status_code == 200
    assert (await data.request("GET", "/data/replications/", None)).status_code == 401

    listed = await poll("listed", lambda: data.request("GET", "/data/replications", alice),
                        lambda r: r.json()["page"]["totalElements"] == 1, within_s=120)
    assert [item["uuid"] for item in listed.json()["content"]] == [replication_id]
    assert (await data.request("GET", "/data/replications", bob)).json()["content"] == []

    cancelled = await data.request("DELETE", f"/data/replications/{replication_id}", alice)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "CANCELLING"
    await wait_json(data, alice, replication_id, "cancelled",
                    lambda b: b["status"] == "CANCELLED")
    rule = await fx_rucio.get_replication_rule(rule_id)
    assert rule.expires_at is not None  # removed (soft delete) in Rucio
    again = await data.request("DELETE", f"/data/replications/{replication_id}", alice)
    assert again.status_code == 202 and again.json()["status"] == "CANCELLED"
    late = await data.request("POST", f"/data/replications/{replication_id}/migrate", alice,
                              json={"rseExpression": fx_scenario.source})
    assert late.status_code == 409


async def test_bad_input_is_a_clear_4xx_and_rucio_refusals_fail_the_request(
        data: DataHarness, fx_scenario: Scenario) -> None:
    alice = data.user()
    for body, message in [
        ({"dids": [], "rseExpression": "X"}, "at least one DID"),
        ({"dids": ["no-colon"], "rseExpression": "X"}, "scope:name"),
        ({"dids": ["s:a"], "rseExpression": "X", "copies": 0}, "copies"),
        ({"dids": ["s:a"]}, "rseExpression"),
        ({"dids": ["s:a"], "rseExpression": "X", "surprise": 1}, "surprise"),
    ]:
        response = await data.request("POST", "/data/replications", alice, json=body)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()) == {"code", "title", "message"}
        assert message in response.json()["message"], response.text

    unknown_did = (await data.request("POST", "/data/replications", alice, json={
        "dids": [f"{fx_scenario.scope}:nothing_{uuid.uuid4().hex[:6]}"],
        "rseExpression": fx_scenario.target})).json()["uuid"]
    bad_expression = (await data.request("POST", "/data/replications", alice, json={
        "dids": [str(fx_scenario.dataset)],
        "rseExpression": f"nosuchattr={uuid.uuid4().hex[:6]}"})).json()["uuid"]
    failed = await wait_json(data, alice, unknown_did, "failed",
                             lambda b: b["status"] == "FAILED")
    assert "DataIdentifierNotFound" in failed["statusReason"]
    failed = await wait_json(data, alice, bad_expression, "failed",
                             lambda b: b["status"] == "FAILED")
    assert "found no RSE for the expression" in failed["statusReason"]
    assert "InvalidRSEExpression" in failed["statusReason"]
    assert failed["ruleIds"] == []


async def test_idempotency_key_returns_the_same_replication(
        data: DataHarness, fx_scenario: Scenario) -> None:
    alice = data.user()
    body = {"dids": [str(fx_scenario.dataset)], "rseExpression": fx_scenario.source}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = await data.request("POST", "/data/replications", alice, json=body, headers=headers)
    second = await data.request("POST", "/data/replications", alice, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["uuid"] == second.json()["uuid"]
    assert await data.event_types(rep.replication_stream(first.json()["uuid"])) in (
        ["replication.requested"], ["replication.requested", "replication.rule_created"],
        ["replication.requested", "replication.rule_created", "replication.state_observed"])


async def test_legacy_create_accepts_data_requirements(
        data: DataHarness, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    alice = data.user()
    created = await data.request("POST", "/deployments", alice, json={
        "template": TEMPLATE, "parameters": {}, "userGroup": "g1",
        "dataRequirements": [{"dids": [str(fx_scenario.dataset)],
                              "rseExpression": fx_scenario.target, "lifetimeSeconds": 600}]})
    assert created.status_code == 201, created.text
    deployment_id = created.json()["uuid"]
    state = await data.deployment(deployment_id)
    assert state.data_requirements == (dep.DataRequirement(
        dids=(str(fx_scenario.dataset),), rse_expression=fx_scenario.target,
        lifetime_seconds=600, wait=True),)
    assert state.awaiting_data
    replication_id = rep.requirement_replication_id(deployment_id, 0)
    # The owner sees the deployment's replication through /data/replications.
    replication = await wait_json(data, alice, replication_id, "rule",
                                  lambda b: bool(b["ruleIds"]))
    assert replication["deploymentId"] == deployment_id and replication["wait"] is True

    refused = await data.request("POST", "/deployments", alice, json={
        "template": TEMPLATE, "userGroup": "g1",
        "dataRequirements": [{"dids": ["no-scope"], "rseExpression": "X"}]})
    assert refused.status_code == 400
    assert "dataRequirements[0].dids" in refused.json()["message"]
    # Clients that send nothing new are unaffected.
    plain = await data.request("POST", "/deployments", alice, json={
        "template": TEMPLATE, "userGroup": "g1"})
    assert plain.status_code == 201
    assert not (await data.deployment(plain.json()["uuid"])).awaiting_data


async def test_the_data_endpoints_are_in_the_openapi_document(data: DataHarness) -> None:
    response = await data.client.get("/orchestrator/openapi/openapi.json")
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    assert set(paths["/orchestrator/data/replications"]) >= {"get", "post"}
    assert set(paths["/orchestrator/data/replications/{replication_id}"]) >= {"get", "delete"}
    migrate = paths["/orchestrator/data/replications/{replication_id}/migrate"]["post"]
    assert migrate["operationId"] == "migrateReplication"
    assert migrate["security"] == [{"bearer": []}]
