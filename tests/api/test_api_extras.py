"""The additive improvements: Idempotency-Key, retry, the wider reset, precise timestamps,
server-side filters on provider/template type/iaas type, proxy prefixes, read-your-writes."""

from __future__ import annotations

import re
from datetime import datetime

from tests.api.support import BASE, TEMPLATE, Harness, assert_legacy_error


async def test_idempotency_key_returns_the_same_deployment(api: Harness) -> None:
    alice = api.user()
    headers = {"Idempotency-Key": "create-once-1"}
    first = await api.request("POST", "/deployments", alice, headers=headers,
                              json={"template": TEMPLATE, "userGroup": "g1"})
    assert first.status_code == 201, first.text
    deployment_id = first.json()["uuid"]
    await api.wait_visible(alice, deployment_id)
    second = await api.request("POST", "/deployments", alice, headers=headers,
                               json={"template": TEMPLATE, "userGroup": "g1"})
    assert second.status_code == 201 and second.json()["uuid"] == deployment_id
    listed = await api.request("GET", "/deployments", alice)
    assert listed.json()["page"]["totalElements"] == 1


async def test_retry_a_failed_create_under_the_same_id(api: Harness) -> None:
    alice = api.user()
    deployment_id = (await api.create(alice))["uuid"]
    await api.wait_visible(alice, deployment_id)
    assert_legacy_error(await api.request("POST", f"/deployments/{deployment_id}/retry",
                                          alice), 409)
    await api.fail_create(deployment_id)
    await api.wait_for_status(alice, deployment_id, "CREATE_FAILED")
    retried = await api.request("POST", f"/deployments/{deployment_id}/retry", alice)
    assert retried.status_code == 202
    assert retried.json()["status"] == "CREATE_IN_PROGRESS"
    assert "statusReason" not in retried.json()


async def test_reset_a_stuck_create_and_update(api: Harness) -> None:
    alice = api.user()
    deployment_id = (await api.create(alice))["uuid"]
    await api.start_attempt(deployment_id)
    await api.wait_for_status(alice, deployment_id, "CREATE_IN_PROGRESS", task="DEPLOYER")
    response = await api.request("PATCH", f"/deployments/{deployment_id}", alice,
                                 json={"status": "create_failed"})
    assert response.status_code == 204
    await api.wait_for_status(alice, deployment_id, "CREATE_FAILED", task="NONE")
    state = await api.state(deployment_id)
    assert state.attempts[-1].failure_cause == "cancelled"


async def test_precise_timestamps_and_template_facts(api: Harness) -> None:
    alice = api.user()
    body = await api.create(alice)
    stamp = datetime.fromisoformat(body["creationTimestamp"].replace("Z", "+00:00"))
    assert body["creationTime"] == stamp.strftime("%Y-%m-%dT%H:%M+0000")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", body["updateTimestamp"])
    assert body["templateType"] == "vm" and body["templateName"] == "Test VM"


async def test_server_side_filters(api: Harness) -> None:
    alice = api.user()
    deployed = await api.completed_deployment(alice)
    waiting = (await api.create(alice))["uuid"]
    await api.wait_visible(alice, waiting)
    for query, expected in (("provider=BACKBONE", [deployed]), ("provider=prov-backbone",
                                                                [deployed]),
                            ("iaasType=openstack", [deployed]),
                            ("templateType=vm", [waiting, deployed]),
                            ("templateType=k8s", [])):
        response = await api.request("GET", f"/deployments?{query}", alice)
        assert [d["uuid"] for d in response.json()["content"]] == expected, query
    kept = await api.request("GET", "/deployments?provider=BACKBONE&size=1", alice)
    assert all("provider=BACKBONE" in link["href"] for link in kept.json()["links"])


async def test_links_behind_a_prefix_stripping_proxy(api: Harness) -> None:
    alice = api.user()
    body = await api.create(alice)
    await api.wait_visible(alice, body["uuid"])
    response = await api.request("GET", f"/deployments/{body['uuid']}", alice, headers={
        "Forwarded": 'proto=https;host="paas.example:8443"', "X-Forwarded-Prefix": "/edge"})
    assert response.json()["links"][0]["href"] == (
        f"https://paas.example:8443/edge/orchestrator/deployments/{body['uuid']}")


async def test_trailing_slashes_are_served_not_redirected(api: Harness) -> None:
    alice = api.user()
    for path in ("/deployments/", "/configuration/", "/info/"):
        response = await api.request("GET", path, alice)
        assert response.status_code == 200, path
    assert (await api.client.get(f"{BASE}/")).status_code == 200
