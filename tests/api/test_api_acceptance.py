"""The 25 acceptance checks of reference/legacy-orchestrator-api.md section 9, at the HTTP
level (orchent's requests and the fields it reads; orchent itself needs a Go toolchain).

The server runs behind the prefix /orchestrator; user A is in g1 and g2, user B in another
group, admin C in the admin group. The deployer is played by the tests, which send the
handler commands the IM handler will send.
"""

from __future__ import annotations

import json
import re
from typing import Any

from domain.deployments import NodeState
from tests.api.support import (
    BASE,
    LEGACY_TIME,
    TEMPLATE,
    TEMPLATE_V2,
    Harness,
    User,
    assert_legacy_error,
    has_null,
    vm,
)

UUID36 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def links(body: dict[str, Any]) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in body["links"]}


async def list_all(api: Harness, user: User, path: str) -> tuple[list[dict[str, Any]],
                                                                  list[dict[str, Any]]]:
    """Follow ``next`` like orchent and the dashboard: (items, pages)."""
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    url: str | None = path
    while url is not None:
        response = await api.request("GET", url, user)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        items.extend(page["content"])
        url = links(page).get("next")
        assert len(pages) < 50
    return items, pages


async def test_01_url_probe(api: Harness) -> None:
    response = await api.request("GET", "/info")
    assert response.status_code == 200
    assert isinstance(response.json(), dict)
    root = await api.request("GET", "/")
    assert root.status_code == 200 and root.text == "INDIGO-Orchestrator"
    assert root.headers["content-type"].startswith("text/plain")


async def test_02_configuration_is_a_flat_object_of_strings(api: Harness) -> None:
    response = await api.request("GET", "/configuration", api.user())
    assert response.status_code == 200
    body = response.json()
    assert body and all(isinstance(k, str) and isinstance(v, str) for k, v in body.items())


async def test_03_create(api: Harness) -> None:
    alice = api.user()
    response = await api.request("POST", "/deployments", alice,
                                 json={"template": TEMPLATE, "parameters": {"num_cpus": 1},
                                       "userGroup": "g1", "keepLastAttempt": "true"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert UUID36.match(body["uuid"])
    assert re.match(LEGACY_TIME, body["creationTime"])
    assert re.match(LEGACY_TIME, body["updateTime"])
    assert body["status"] == "CREATE_IN_PROGRESS"
    assert body["task"] == "NONE"
    assert body["outputs"] == {}
    assert body["userGroup"] == "g1"
    assert body["createdBy"] == {"issuer": api.issuer.issuer, "subject": alice.subject}
    own = f"{BASE}/deployments/{body['uuid']}"
    assert links(body) == {"self": own, "resources": f"{own}/resources",
                           "template": f"{own}/template"}
    assert [link["rel"] for link in body["links"]] == ["self", "resources", "template"]
    assert "Location" not in response.headers
    assert not has_null(body)


async def test_04_lenient_create_body(api: Harness) -> None:
    alice = api.user()
    response = await api.client.post(
        f"{BASE}/deployments/",
        headers={"Authorization": f"bearer {alice.token()}"},
        json={"template": TEMPLATE, "parameters": {}, "keepLastAttempt": "true",
              "providerTimeoutMins": "720", "timeoutMins": 720, "callback": None,
              "keepLastAttemp": True, "userGroup": "g1", "unknownField": {"x": 1}})
    assert response.status_code == 201, response.text
    # orpy's "Bearer<token>" (no space) is accepted too.
    again = await api.client.get(f"{BASE}/deployments/",
                                 headers={"Authorization": f"Bearer{alice.token()}"})
    assert again.status_code == 200


async def test_05_json_output(api: Harness) -> None:
    response = await api.request("POST", "/deployments", api.user(),
                                 json={"template": TEMPLATE, "userGroup": "g1"})
    line = response.text
    assert "\n" not in line
    body = json.loads(line)
    assert body["uuid"] and body["status"]


async def test_06_show_has_no_nulls(api: Harness) -> None:
    alice = api.user()
    created = await api.create(alice)
    shown = await api.wait_visible(alice, created["uuid"])
    for field in ("uuid", "creationTime", "updateTime", "status", "outputs", "task", "links",
                  "createdBy", "userGroup"):
        assert shown[field] == created[field]
    response = await api.show(alice, created["uuid"])
    assert not has_null(response.json())
    assert "null" not in response.text
    # Once deployed: provider, endpoint (deploymentType and iaasType), physical id, outputs.
    await api.complete_create(created["uuid"], outputs={"node_ip": "192.0.2.10",
                                                        "unset": None})
    done = await api.wait_for_status(alice, created["uuid"], "CREATE_COMPLETE")
    assert done["cloudProviderName"] == "BACKBONE"
    assert done["cloudProviderEndpoint"]["iaasType"] == "OPENSTACK"
    assert done["cloudProviderEndpoint"]["deploymentType"] == "OPENSTACK"
    assert done["cloudProviderEndpoint"]["region"] == "cnaf"
    assert done["physicalId"].startswith("infra-")
    assert done["outputs"] == {"node_ip": "192.0.2.10"}
    assert not has_null(done)


async def test_07_not_found(api: Harness) -> None:
    alice = api.user()
    for deployment_id in ("00000000-0000-0000-0000-000000000000", "34483-d937"):
        body = assert_legacy_error(await api.show(alice, deployment_id), 404)
        assert body["title"] == "Not Found"
        assert deployment_id in body["message"]


async def test_08_list_and_paging(api: Harness) -> None:
    alice = api.user()
    created = [(await api.create(alice))["uuid"] for _ in range(25)]

    async def all_listed() -> bool:
        response = await api.request("GET", "/deployments?createdBy=me", alice)
        return bool(response.json()["page"]["totalElements"] == 25)

    await api.eventually(all_listed, what="25 deployments listed")
    items, pages = await list_all(api, alice, "/deployments")
    assert [p["page"] for p in pages] == [
        {"size": 10, "totalElements": 25, "totalPages": 3, "number": n} for n in range(3)]
    assert len({item["uuid"] for item in items}) == 25
    assert [item["uuid"] for item in items] == list(reversed(created))  # newest first
    first = pages[0]
    assert [link["rel"] for link in first["links"]] == ["first", "self", "next", "last"]
    assert all(link["href"].startswith(BASE + "/deployments?") for link in first["links"])
    assert [link["rel"] for link in pages[1]["links"]] == [
        "first", "prev", "self", "next", "last"]
    assert "next" not in links(pages[2])
    # Explicit paging and sort are honoured.
    response = await api.request("GET", "/deployments?size=5&page=1&sort=createdAt,asc",
                                 alice)
    page = response.json()
    assert page["page"] == {"size": 5, "totalElements": 25, "totalPages": 5, "number": 1}
    assert [item["uuid"] for item in page["content"]] == created[5:10]
    assert links(page)["next"] == f"{BASE}/deployments?page=2&size=5&sort=createdAt,asc"
    # The legacy property name of the JSON field is accepted too; an unknown key is a 400.
    same = await api.request("GET", "/deployments?size=5&page=1&sort=creationTime,asc", alice)
    assert [i["uuid"] for i in same.json()["content"]] == created[5:10]
    assert_legacy_error(await api.request("GET", "/deployments?sort=nope,asc", alice), 400)
    # Links honour the proxy's forwarded headers.
    proxied = await api.request("GET", "/deployments", alice, headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "paas.example",
        "X-Forwarded-Port": "443"})
    assert links(proxied.json())["next"].startswith(
        "https://paas.example/orchestrator/deployments?")


async def test_09_owner_scoping(api: Harness) -> None:
    alice, bob, admin = api.user("alice"), api.user("bob", groups=("g9",)), api.admin()
    mine = (await api.create(alice))["uuid"]
    await api.wait_visible(alice, mine)
    bobs_list = await api.request("GET", "/deployments", bob)
    assert mine not in {d["uuid"] for d in bobs_list.json()["content"]}
    body = assert_legacy_error(
        await api.request("GET", f"/deployments?createdBy={alice.created_by}", bob), 403)
    assert body["title"] == "Forbidden"
    as_admin = await api.request("GET", f"/deployments?createdBy={alice.created_by}", admin)
    assert as_admin.status_code == 200
    assert [d["uuid"] for d in as_admin.json()["content"]] == [mine]
    assert_legacy_error(await api.request("GET", "/deployments?createdBy=foo", bob), 400)
    # An admin without createdBy sees the whole issuer, including alice's.
    everything, _ = await list_all(api, admin, "/deployments?size=200")
    assert mine in {d["uuid"] for d in everything}


async def test_10_group_filter(api: Harness) -> None:
    alice = api.user()
    in_g1 = (await api.create(alice, group="g1"))["uuid"]
    in_g2 = (await api.create(alice, group="g2"))["uuid"]
    await api.wait_visible(alice, in_g2)
    response = await api.request("GET", "/deployments?userGroup=g1", alice)
    assert [d["uuid"] for d in response.json()["content"]] == [in_g1]
    assert all(d["userGroup"] == "g1" for d in response.json()["content"])
    body = assert_legacy_error(await api.request("GET", "/deployments?userGroup=other", alice),
                               403)
    assert "other" in body["message"]
    # Creating in a group the token does not have is refused the same way.
    refused = await api.request("POST", "/deployments", alice,
                                json={"template": TEMPLATE, "userGroup": "other"})
    assert_legacy_error(refused, 403)
    # Missing userGroup: a clear 400 naming the user's groups, not "group null".
    missing = assert_legacy_error(
        await api.request("POST", "/deployments", alice, json={"template": TEMPLATE}), 400)
    assert "userGroup" in missing["message"] and "g1" in missing["message"]


async def test_11_status_exclusion(api: Harness) -> None:
    alice = api.user()
    deleted = (await api.create(alice))["uuid"]
    failed = (await api.create(alice))["uuid"]
    running = (await api.create(alice))["uuid"]
    await api.wait_visible(alice, deleted)
    # Nothing reached a site yet: the deletion completes at once (the tombstone stays).
    assert (await api.request("DELETE", f"/deployments/{deleted}", alice)).status_code == 204
    await api.fail_create(failed)
    await api.wait_for_status(alice, deleted, "DELETE_COMPLETE")
    await api.wait_for_status(alice, failed, "CREATE_FAILED")
    listed = await api.request("GET", "/deployments", alice)
    assert {d["uuid"] for d in listed.json()["content"]} == {deleted, failed, running}
    for query in ("excludedStatus=DELETE_COMPLETE,CREATE_FAILED",
                  "excludedStatus=DELETE_COMPLETE&excludedStatus=CREATE_FAILED",
                  "excludedStatus=delete_complete,%20create_failed"):
        response = await api.request("GET", f"/deployments?{query}", alice)
        assert [d["uuid"] for d in response.json()["content"]] == [running], query
    only = await api.request("GET", "/deployments?status=CREATE_FAILED", alice)
    assert [d["uuid"] for d in only.json()["content"]] == [failed]
    assert_legacy_error(await api.request("GET", "/deployments?excludedStatus=BOGUS", alice),
                        400)


async def test_12_time_filters(api: Harness) -> None:
    alice = api.user()
    ids = {(await api.create(alice))["uuid"] for _ in range(3)}
    everything: list[dict[str, Any]] = []

    async def listed() -> bool:
        everything[:] = (await list_all(api, alice, "/deployments"))[0]
        return {d["uuid"] for d in everything} == ids

    await api.eventually(listed)

    # orchent -a 200001010000 -b 209912312359 compares creationTime[0:16] client-side.
    def orchent_filter(item: dict[str, Any]) -> bool:
        stamp = str(item["creationTime"])[0:16]
        stamp = stamp.replace("-", "").replace("T", "").replace(":", "")
        return "200001010000" <= stamp <= "209912312359"

    assert [d["uuid"] for d in everything if orchent_filter(d)] == [
        d["uuid"] for d in everything]
    # The same on the server, in orchent's and in RFC 3339 notation.
    for query in ("createdAfter=200001010000&createdBefore=209912312359",
                  "createdAfter=2000-01-01T00:00:00Z&createdBefore=2099-12-31T23:59:00Z"):
        response = await api.request("GET", f"/deployments?{query}", alice)
        assert {d["uuid"] for d in response.json()["content"]} == ids
    future = await api.request("GET", "/deployments?createdAfter=2099-01-01T00:00Z", alice)
    assert future.json()["content"] == []
    assert future.json()["page"]["totalElements"] == 0
    assert_legacy_error(await api.request("GET", "/deployments?createdAfter=yesterday", alice),
                        400)


async def test_13_template_is_raw(api: Harness) -> None:
    alice = api.user()
    template = TEMPLATE + "# a comment, \"quotes\" and unicode: àèìòù\n"
    deployment_id = (await api.create(alice, template=template))["uuid"]
    await api.wait_visible(alice, deployment_id)
    response = await api.request("GET", f"/deployments/{deployment_id}/template", alice)
    assert response.status_code == 200
    assert response.content == template.encode()
    slash = await api.request("GET", f"/deployments/{deployment_id}/template/", alice)
    assert slash.content == template.encode()


async def test_14_log(api: Harness) -> None:
    alice = api.user()
    member = api.user("carol", groups=("g1",))
    stranger = api.user("bob", groups=("g9",))
    deployment_id = (await api.create(alice))["uuid"]
    await api.wait_visible(alice, deployment_id)
    empty = await api.request("GET", f"/deployments/{deployment_id}/log", alice)
    assert empty.status_code == 200 and empty.text == ""
    await api.record_log(deployment_id, "contextualisation: step 1 ok\nstep 2 ok\n")

    async def logged() -> bool:
        response = await api.request("GET", f"/deployments/{deployment_id}/log", alice)
        return response.text == "contextualisation: step 1 ok\nstep 2 ok\n"

    await api.eventually(logged)
    # A group member can read the deployment (group visibility on) but not its log.
    assert_legacy_error(await api.request("GET", f"/deployments/{deployment_id}/log", member),
                        403)
    # Anyone else does not even see it.
    assert_legacy_error(await api.request("GET", f"/deployments/{deployment_id}/log",
                                          stranger), 404)


async def test_15_extra_info(api: Harness) -> None:
    alice, admin = api.user(), api.admin()
    deployment_id = await api.completed_deployment(alice)
    response = await api.request("GET", f"/deployments/{deployment_id}/extrainfo", alice)
    assert response.status_code == 200 and json.loads(response.text) == []
    api.deployer_info.vms[deployment_id] = {"0": {"vmProperties": [
        {"class": "network", "id": "public"},
        {"class": "system", "id": "server", "state": "configured",
         "net_interface.0.ip": "192.0.2.10", "disk.0.os.credentials.username": "cloudadm",
         "disk.0.os.credentials.private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
         "disk.0.os.credentials.public_key": "ssh-rsa AAAA"}]}}
    info = await api.request("GET", f"/deployments/{deployment_id}/extrainfo", alice)
    parsed = json.loads(info.text)
    assert parsed[0]["vmProperties"][1]["net_interface.0.ip"] == "192.0.2.10"
    assert "PRIVATE KEY" not in info.text and "private_key" not in info.text
    resources = await api.request("GET", f"/deployments/{deployment_id}/resources", alice)
    assert "PRIVATE KEY" not in resources.text
    metadata = resources.json()["content"][0]["metadata"]
    assert json.loads(metadata["VirtualMachineInfo"])["vmProperties"][1]["id"] == "server"
    # The owner gets the credentials from the dedicated endpoint; nobody else does.
    secrets = await api.request("GET", f"/deployments/{deployment_id}/credentials", alice)
    assert secrets.status_code == 200
    credentials = secrets.json()["vms"][0]["credentials"]
    assert credentials["disk.0.os.credentials.private_key"].startswith("-----BEGIN")
    assert credentials["disk.0.os.credentials.username"] == "cloudadm"
    assert_legacy_error(await api.request("GET", f"/deployments/{deployment_id}/credentials",
                                          admin), 403)


async def test_16_resources(api: Harness) -> None:
    alice = api.user()
    deployment_id = (await api.create(alice))["uuid"]
    await api.complete_create(deployment_id, resources=(
        vm("vm-1"), vm("vm-2", im_vm_id="1"),
        vm("net-1", node_type="tosca.nodes.network.Network", node_name="pub_network",
           im_vm_id=None)))
    await api.wait_for_status(alice, deployment_id, "CREATE_COMPLETE")
    items, pages = await list_all(api, alice, f"/deployments/{deployment_id}/resources")
    assert pages[0]["page"]["totalElements"] == 3
    assert {item["uuid"] for item in items} == {"vm-1", "vm-2", "net-1"}
    for item in items:
        assert item["requiredBy"] == [] and item["metadata"] == {}
        assert item["state"] and item["toscaNodeType"] and item["toscaNodeName"]
        assert re.match(LEGACY_TIME, item["creationTime"])
        assert [link["rel"] for link in item["links"]] == ["deployment", "self"]
        assert links(item)["self"] == (f"{BASE}/deployments/{deployment_id}/resources/"
                                       f"{item['uuid']}")
    # type=tosca.nodes.Compute matches the INDIGO subtype too.
    computes = await api.request(
        "GET", f"/deployments/{deployment_id}/resources?type=tosca.nodes.Compute", alice)
    assert {i["uuid"] for i in computes.json()["content"]} == {"vm-1", "vm-2"}
    filtered = await api.request(
        "GET", f"/deployments/{deployment_id}/resources/filter?type=tosca.nodes.Compute",
        alice)
    assert isinstance(filtered.json(), list)
    assert {i["uuid"] for i in filtered.json()} == {"vm-1", "vm-2"}
    assert_legacy_error(await api.request(
        "GET", f"/deployments/{deployment_id}/resources/filter?type=", alice), 400)
    paged = await api.request("GET", f"/deployments/{deployment_id}/resources?size=2", alice)
    assert [link["rel"] for link in paged.json()["links"]] == ["first", "self", "next", "last"]


async def test_17_resource_show(api: Harness) -> None:
    alice = api.user()
    deployment_id = await api.completed_deployment(alice)
    response = await api.request("GET", f"/deployments/{deployment_id}/resources/vm-1", alice)
    assert response.status_code == 200
    assert response.json()["uuid"] == "vm-1" and response.json()["state"] == "STARTED"
    assert_legacy_error(await api.request(
        "GET", f"/deployments/{deployment_id}/resources/no-such-vm", alice), 404)


async def test_18_vm_actions(api: Harness) -> None:
    alice = api.user()
    deployment_id = await api.completed_deployment(alice)
    actions = f"/deployments/{deployment_id}/resources/vm-1/actions"
    stop = await api.request("POST", actions, alice, json={"type": "stop"})
    assert stop.status_code == 202, stop.text
    assert stop.json()["uuid"] == deployment_id

    async def resource_state(expected: str) -> None:
        async def probe() -> bool:
            response = await api.request("GET", f"/deployments/{deployment_id}/resources/vm-1",
                                         alice)
            return bool(response.json()["state"] == expected)

        await api.eventually(probe, what=f"vm-1 {expected}")

    await resource_state("STOPPING")
    await api.change_resources(deployment_id, vm("vm-1", NodeState.STOPPED))
    await resource_state("STOPPED")
    start = await api.request("POST", actions, alice, json={"type": "start"})
    assert start.status_code == 202
    await resource_state("STARTING")
    assert_legacy_error(await api.request("POST", actions, alice, json={"type": "reboot"}), 400)
    # On a deployment still being created: 409.
    fresh = (await api.create(alice))["uuid"]
    await api.start_attempt(fresh)
    await api.change_resources(fresh, vm("vm-1"))
    await api.wait_visible(alice, fresh)

    async def resource_listed() -> bool:
        response = await api.request("GET", f"/deployments/{fresh}/resources/vm-1", alice)
        return response.status_code == 200

    await api.eventually(resource_listed)
    assert_legacy_error(await api.request(
        "POST", f"/deployments/{fresh}/resources/vm-1/actions", alice, json={"type": "stop"}),
        409)


async def test_19_update(api: Harness) -> None:
    alice = api.user()
    deployment_id = (await api.create(alice, parameters={"num_cpus": 1, "mem_size": "4 GB"}))[
        "uuid"]
    await api.wait_visible(alice, deployment_id)
    early = await api.request("PUT", f"/deployments/{deployment_id}", alice,
                              json={"template": TEMPLATE_V2, "parameters": {"num_cpus": 2}})
    body = assert_legacy_error(early, 409)
    assert "CREATE_IN_PROGRESS" in body["message"]
    await api.complete_create(deployment_id)
    await api.wait_for_status(alice, deployment_id, "CREATE_COMPLETE")
    response = await api.request("PUT", f"/deployments/{deployment_id}", alice,
                                 json={"template": TEMPLATE_V2, "parameters": {"num_cpus": 2}})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "UPDATE_IN_PROGRESS"
    assert response.json()["uuid"] == deployment_id
    await api.wait_for_status(alice, deployment_id, "UPDATE_IN_PROGRESS")
    parameters = await api.request("GET", f"/deployments/{deployment_id}/parameters", alice)
    assert parameters.json() == {"num_cpus": 2, "mem_size": "4 GB"}  # merged, old key kept
    template = await api.request("GET", f"/deployments/{deployment_id}/template", alice)
    assert template.text == TEMPLATE_V2
    # A changed userGroup is refused; a bad template names the problem.
    await api.complete_update(deployment_id)
    await api.wait_for_status(alice, deployment_id, "UPDATE_COMPLETE")
    assert_legacy_error(await api.request(
        "PUT", f"/deployments/{deployment_id}", alice,
        json={"template": TEMPLATE_V2, "userGroup": "g2"}), 400)
    bad = assert_legacy_error(await api.request(
        "PUT", f"/deployments/{deployment_id}", alice,
        json={"template": TEMPLATE_V2, "parameters": {"num_cpus": "many"}}), 400)
    assert "num_cpus" in bad["message"]


async def test_20_delete(api: Harness) -> None:
    alice = api.user()
    deployment_id = await api.completed_deployment(alice)
    response = await api.request("DELETE", f"/deployments/{deployment_id}?force=false", alice)
    assert response.status_code == 204 and response.content == b""
    await api.wait_for_status(alice, deployment_id, "DELETE_IN_PROGRESS")
    again = assert_legacy_error(
        await api.request("DELETE", f"/deployments/{deployment_id}", alice), 409)
    assert again["title"] == "Conflict"
    await api.complete_deletion(deployment_id)
    await api.wait_for_status(alice, deployment_id, "DELETE_COMPLETE")
    listed = await api.request("GET", "/deployments", alice)
    assert deployment_id in {d["uuid"] for d in listed.json()["content"]}
    resources = await api.request("GET", f"/deployments/{deployment_id}/resources", alice)
    assert {r["state"] for r in resources.json()["content"]} == {"DELETED"}
    # The dashboard sends a JSON body on DELETE: it is ignored.
    other = await api.completed_deployment(alice)
    with_body = await api.request("DELETE", f"/deployments/{other}", alice,
                                  content=json.dumps(["force=true"]),
                                  headers={"Content-Type": "application/json"})
    assert with_body.status_code == 204


async def test_21_forced_delete(api: Harness) -> None:
    alice = api.user()
    deployment_id = await api.completed_deployment(alice)
    assert (await api.request("DELETE", f"/deployments/{deployment_id}", alice)
            ).status_code == 204
    await api.fail_deletion(deployment_id, "IM could not destroy the VM")
    failed = await api.wait_for_status(alice, deployment_id, "DELETE_FAILED")
    assert failed["statusReason"] == "IM could not destroy the VM"
    forced = await api.request("DELETE", f"/deployments/{deployment_id}?force=TRUE", alice)
    assert forced.status_code == 204
    assert (await api.state(deployment_id)).force_delete is True
    await api.complete_deletion(deployment_id)
    await api.wait_for_status(alice, deployment_id, "DELETE_COMPLETE")


async def test_22_reset(api: Harness) -> None:
    alice = api.user()
    stuck = await api.completed_deployment(alice)
    assert (await api.request("DELETE", f"/deployments/{stuck}", alice)).status_code == 204
    await api.wait_for_status(alice, stuck, "DELETE_IN_PROGRESS")
    reset = await api.request("PATCH", f"/deployments/{stuck}", alice,
                              json={"status": "DELETE_FAILED"})
    assert reset.status_code == 204 and reset.content == b""
    await api.wait_for_status(alice, stuck, "DELETE_FAILED")
    complete = await api.completed_deployment(alice)
    assert_legacy_error(await api.request("PATCH", f"/deployments/{complete}", alice,
                                          json={"status": "DELETE_FAILED"}), 409)
    assert_legacy_error(await api.request("PATCH", f"/deployments/{complete}", alice,
                                          json={"status": "CREATE_FAILED"}), 400)
    # The legacy 500 for a non-status string is a 400 now.
    assert_legacy_error(await api.request("PATCH", f"/deployments/{complete}", alice,
                                          json={"status": "SOMETHING"}), 400)


async def test_23_auth_failures(api: Harness) -> None:
    alice = api.user()
    no_token = await api.client.get(f"{BASE}/deployments")
    body = assert_legacy_error(no_token, 401)
    assert body["title"] == "Unauthorized"
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")
    expired = alice.token(exp=1_000_000_000, iat=999_999_000, nbf=999_999_000)
    bad_signature = alice.token()[:-6] + "AAAAAA"
    unknown_issuer = api.issuer.mint({"iss": "https://unknown.example/", "sub": "x",
                                      "aud": "orchestrator"})
    for token in (expired, bad_signature, unknown_issuer):
        response = await api.client.get(f"{BASE}/deployments",
                                        headers={"Authorization": f"Bearer {token}"})
        assert_legacy_error(response, 401)
        assert "invalid_token" in response.headers["WWW-Authenticate"]
    reader = api.user("reader", scope="openid profile")
    deployment_id = (await api.create(alice))["uuid"]
    assert (await api.request("GET", "/deployments", reader)).status_code == 200
    denied = assert_legacy_error(
        await api.request("POST", "/deployments", reader,
                          json={"template": TEMPLATE, "userGroup": "g1"}), 403)
    assert "offline_access" in denied["message"]
    assert_legacy_error(await api.request("DELETE", f"/deployments/{deployment_id}", reader),
                        403)


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/nowhere", {}, 404),
    ("GET", "/deployments/x/y/z/w", {}, 404),
    ("PUT", "/deployments", {"json": {}}, 405),
    ("DELETE", "/configuration", {}, 405),
    ("POST", "/deployments", {"content": b"{not json", "headers": {
        "Content-Type": "application/json"}}, 400),
    ("POST", "/deployments", {"content": b"template: x", "headers": {
        "Content-Type": "text/plain"}}, 415),
    ("POST", "/deployments", {"json": {"template": 5}}, 400),
    ("POST", "/deployments", {"json": {"userGroup": "g1"}}, 400),
    ("POST", "/deployments", {"json": {"template": "a: [", "userGroup": "g1"}}, 400),
    ("POST", "/deployments", {"json": {"template": TEMPLATE, "userGroup": "g1",
                                       "timeoutMins": 0}}, 400),
    ("POST", "/deployments", {"json": {"template": TEMPLATE, "userGroup": "g1",
                                       "timeoutMins": 10, "providerTimeoutMins": 20}}, 400),
    ("POST", "/deployments", {"json": {"template": TEMPLATE, "userGroup": "g1",
                                       "callback": "ftp://x"}}, 400),
    ("POST", "/deployments", {"json": {"template": TEMPLATE, "userGroup": "g1",
                                       "keepLastAttempt": "perhaps"}}, 400),
    ("POST", "/deployments", {"json": {"template": TEMPLATE, "userGroup": "g1",
                                       "parameters": {"undeclared": 1}}}, 400),
    ("GET", "/deployments?createdBy=a@b@c", {}, 400),
    ("GET", "/deployments?sort=", {}, 200),
    ("GET", "/deployments?page=-3&size=abc", {}, 200),
    ("GET", "/schedules", {}, 501),
    ("POST", "/schedules", {"json": {}}, 501),
    ("GET", "/schedules/abc/events", {}, 501),
]


async def test_24_every_error_is_visible_to_orchent(api: Harness) -> None:
    alice = api.user()
    for method, path, kwargs, status in BAD_REQUESTS:
        response = await api.request(method, path, alice, **kwargs)
        if status == 200:
            assert response.status_code == 200, (method, path, response.text)
            continue
        body = assert_legacy_error(response, status)
        # What orchent prints: Error '<title>' [<code>]: <message>
        assert f"Error '{body['title']}' [{body['code']}]: {body['message']}"


async def test_25_callback_is_out_of_scope_here(api: Harness) -> None:
    """The callback is sent by the notification handler (another issue); what is checked
    here is the body it will send: the Deployment JSON with uuid, status, task, outputs and
    updateTime, and nothing the dashboard would choke on."""
    alice = api.user()
    created = await api.create(alice, callback="http://127.0.0.1:9/cb")
    assert created["callback"] == "http://127.0.0.1:9/cb"
    for field in ("uuid", "status", "task", "outputs", "updateTime"):
        assert field in created
