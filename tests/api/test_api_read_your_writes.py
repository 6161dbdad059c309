"""Read-your-writes over real HTTP: a client that just changed a deployment reads the
change at once, although the read models are fed from Kafka (orchestrator/read_your_writes).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from orchestrator.read_your_writes import WrittenVersions
from tests.api.support import TEMPLATE, Harness, User, vm
from tests.http_server import serve

ITERATIONS = 40
PREFIX = "/orchestrator"


@pytest.fixture(name="api")
def fixture_api_with_generous_bound(api: Harness) -> Harness:
    """The production bound (2 s) is a safety valve; on a shared, loaded test machine the
    projection can lag longer, and these tests are about waiting, not about the bound."""
    written = api.system.commands.written  # type: ignore[attr-defined]
    written.wait_s = 20.0
    return api


async def _create(client: httpx.AsyncClient, user: User) -> dict[str, Any]:
    response = await client.post(f"{PREFIX}/deployments", headers=user.headers,
                                 json={"template": TEMPLATE, "parameters": {},
                                       "userGroup": "g1"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_get_right_after_a_create_finds_the_deployment_every_time(
        api: Harness) -> None:
    user = api.user("ryw")
    created: list[str] = []
    async with serve(api.system.app) as client:
        for _ in range(ITERATIONS):
            deployment_id = (await _create(client, user))["uuid"]
            created.append(deployment_id)
            shown = await client.get(f"{PREFIX}/deployments/{deployment_id}",
                                     headers=user.headers)
            assert shown.status_code == 200, shown.text
            assert shown.json()["status"] == "CREATE_IN_PROGRESS"
            template = await client.get(f"{PREFIX}/deployments/{deployment_id}/template",
                                        headers=user.headers)
            assert template.status_code == 200 and template.text == TEMPLATE
        listed = await client.get(f"{PREFIX}/deployments",
                                  params={"createdBy": "me", "size": ITERATIONS},
                                  headers=user.headers)
    assert listed.status_code == 200
    assert {d["uuid"] for d in listed.json()["content"]} == set(created)


async def test_a_list_right_after_a_create_contains_it_every_time(api: Harness) -> None:
    user = api.user("rywlist")
    async with serve(api.system.app) as client:
        for count in range(1, ITERATIONS // 2 + 1):
            deployment_id = (await _create(client, user))["uuid"]
            listed = await client.get(f"{PREFIX}/deployments", params={"createdBy": "me"},
                                      headers=user.headers)
            assert listed.status_code == 200
            page = listed.json()
            assert page["page"]["totalElements"] == count
            assert page["content"][0]["uuid"] == deployment_id


async def test_a_get_right_after_a_delete_shows_the_deletion(api: Harness) -> None:
    user = api.user("rywdelete")
    async with serve(api.system.app) as client:
        for _ in range(ITERATIONS // 4):
            deployment_id = (await _create(client, user))["uuid"]
            await api.complete_create(deployment_id)  # handler commands, same process
            shown = await client.get(f"{PREFIX}/deployments/{deployment_id}",
                                     headers=user.headers)
            assert shown.json()["status"] == "CREATE_COMPLETE"
            resources = await client.get(f"{PREFIX}/deployments/{deployment_id}/resources",
                                         headers=user.headers)
            assert [r["uuid"] for r in resources.json()["content"]] == ["vm-1"]
            deleted = await client.delete(f"{PREFIX}/deployments/{deployment_id}",
                                          headers=user.headers)
            assert deleted.status_code == 204
            shown = await client.get(f"{PREFIX}/deployments/{deployment_id}",
                                     headers=user.headers)
            assert shown.json()["status"] == "DELETE_IN_PROGRESS"


async def test_resource_reads_wait_for_a_resource_change_of_this_process(
        api: Harness) -> None:
    user = api.user("rywres")
    async with serve(api.system.app) as client:
        deployment_id = (await _create(client, user))["uuid"]
        await api.complete_create(deployment_id)
        for index in range(2, ITERATIONS // 4 + 2):
            await api.change_resources(deployment_id, vm(f"vm-{index}"))
            shown = await client.get(
                f"{PREFIX}/deployments/{deployment_id}/resources/vm-{index}",
                headers=user.headers)
            assert shown.status_code == 200, shown.text


async def test_a_read_waits_no_longer_than_the_bound_when_the_view_never_shows_it() -> None:
    written = WrittenVersions(wait_s=0.05)
    written.record("d1", "deployment-d1", 3, ("iss", "alice"))
    checks = 0

    async def never_shown() -> tuple[bool, str]:
        nonlocal checks
        checks += 1
        return False, "stale row"

    assert await asyncio.wait_for(written.wait(never_shown), 5) == "stale row"
    assert checks >= 2
    assert written.pending("deployments", "d1") is not None
    assert written.pending_of_owner("deployments", "iss", "alice") == {"d1": 3}
    written.seen("deployments", "d1", 3)
    assert written.pending("deployments", "d1") is None
    assert written.pending_of_owner("deployments", "iss", None) == {}
    assert written.pending("resources", "d1") is not None


async def test_writes_older_than_the_memory_are_forgotten() -> None:
    now = [0.0]
    written = WrittenVersions(remember_s=10.0, clock=lambda: now[0])
    written.record("d1", "deployment-d1", 1, ("iss", "alice"))
    now[0] = 5.0
    written.record("d1", "deployment-d1", 2, ("iss", "alice"))
    now[0] = 12.0  # the first write is old, the second is not
    assert written.pending_of_owner("deployments", "iss", "alice") == {"d1": 2}
    now[0] = 16.0
    assert written.pending("deployments", "d1") is None
    assert written.pending_of_owner("deployments", "iss", None) == {}
