"""The authorization matrix: owner, another user, an admin of the issuer, a member of the
deployment's group (group visibility on) and the owner with a token lacking
``offline_access``, on every deployment endpoint. Not visible is a 404 (ids do not leak),
visible but not allowed a 403, a missing mutation scope a 403. And of two commands racing
on one deployment exactly one wins; the other gets the legacy 409."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from eventstore.store import EventStore
from tests.api.support import TEMPLATE_V2, Harness, User, assert_legacy_error

ROLES = ("owner", "other", "admin", "member", "no_offline_access")

READ = {"owner": 200, "other": 404, "admin": 200, "member": 200, "no_offline_access": 200}
OWNER_OR_ADMIN_READ = {"owner": 200, "other": 404, "admin": 200, "member": 403,
                       "no_offline_access": 200}
OWNER_ONLY_READ = {"owner": 200, "other": 404, "admin": 403, "member": 403,
                   "no_offline_access": 200}


def mutation(success: int) -> dict[str, int]:
    return {"owner": success, "other": 404, "admin": success, "member": 403,
            "no_offline_access": 403}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # {id} is the deployment
    expected: dict[str, int]
    setup: str = "complete"  # complete | in_progress | failed
    body: Any = None


CASES: dict[str, Case] = {
    "get": Case("GET", "/deployments/{id}", READ),
    "template": Case("GET", "/deployments/{id}/template", READ),
    "resources": Case("GET", "/deployments/{id}/resources", READ),
    "resource": Case("GET", "/deployments/{id}/resources/vm-1", READ),
    "resource filter": Case("GET", "/deployments/{id}/resources/filter?type=tosca.nodes.Compute",
                            READ),
    "log": Case("GET", "/deployments/{id}/log", OWNER_OR_ADMIN_READ),
    "extrainfo": Case("GET", "/deployments/{id}/extrainfo", OWNER_OR_ADMIN_READ),
    "parameters": Case("GET", "/deployments/{id}/parameters", OWNER_OR_ADMIN_READ),
    "credentials": Case("GET", "/deployments/{id}/credentials", OWNER_ONLY_READ),
    "update": Case("PUT", "/deployments/{id}", mutation(202),
                   body={"template": TEMPLATE_V2, "parameters": {"num_cpus": 2}}),
    "delete": Case("DELETE", "/deployments/{id}?force=false", mutation(204)),
    "reset": Case("PATCH", "/deployments/{id}", mutation(204), setup="in_progress",
                  body={"status": "CREATE_FAILED"}),
    "retry": Case("POST", "/deployments/{id}/retry", mutation(202), setup="failed"),
    "resource action": Case("POST", "/deployments/{id}/resources/vm-1/actions", mutation(202),
                            body={"type": "stop"}),
}


def users(api: Harness) -> tuple[User, dict[str, User]]:
    owner = api.user("owner", groups=("g1", "g2"))
    no_offline = User(api.issuer, owner.subject, owner.groups, scope="openid profile")
    return owner, {"owner": owner, "other": api.user("other", groups=("g9",)),
                   "admin": api.admin(), "member": api.user("member", groups=("g1",)),
                   "no_offline_access": no_offline}


async def prepared(api: Harness, owner: User, setup: str) -> str:
    if setup == "complete":
        return await api.completed_deployment(owner)
    deployment_id = str((await api.create(owner))["uuid"])
    if setup == "failed":
        await api.fail_create(deployment_id)
        await api.wait_for_status(owner, deployment_id, "CREATE_FAILED")
    else:
        await api.wait_visible(owner, deployment_id)
    return deployment_id


@pytest.mark.parametrize("name", sorted(CASES))
async def test_authorization_matrix(api: Harness, name: str) -> None:
    case = CASES[name]
    owner, roles = users(api)
    deployment_id = await prepared(api, owner, case.setup)
    path = case.path.format(id=deployment_id)
    kwargs = {"json": case.body} if case.body is not None else {}
    # Denials first (they change nothing), then each allowed role on its own deployment.
    ordered = sorted(ROLES, key=lambda role: case.expected[role] < 400)
    used = False
    for role in ordered:
        expected = case.expected[role]
        target = path
        if expected < 400 and case.method != "GET":
            if used:
                target = case.path.format(id=await prepared(api, owner, case.setup))
            used = True
        response = await api.request(case.method, target, roles[role], **kwargs)
        if expected >= 400:
            assert_legacy_error(response, expected)
        else:
            assert response.status_code == expected, (name, role, response.text)


async def test_list_scoping_matrix(api: Harness) -> None:
    owner, roles = users(api)
    deployment_id = await prepared(api, owner, "in_progress")
    query = f"/deployments?createdBy={owner.created_by}"
    expected = {"owner": 200, "other": 403, "admin": 200, "member": 403,
                "no_offline_access": 200}
    for role, status in expected.items():
        response = await api.request("GET", query, roles[role])
        if status == 200:
            assert [d["uuid"] for d in response.json()["content"]] == [deployment_id]
        else:
            assert_legacy_error(response, status)
    # Without createdBy: one's own (the member and the other user see nothing of the owner's).
    for role in ("other", "member"):
        listed = await api.request("GET", "/deployments", roles[role])
        assert deployment_id not in {d["uuid"] for d in listed.json()["content"]}


class BarrierStore:
    """The event store, except that appends wait until ``parties`` of them are pending:
    the racing commands have all read the same stream version before any of them writes."""

    def __init__(self, inner: EventStore, parties: int) -> None:
        self.inner = inner
        self.barrier = asyncio.Barrier(parties)

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.wait_for(self.barrier.wait(), 30)
        return await self.inner.append(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_concurrent_delete_and_update_exactly_one_wins(api: Harness) -> None:
    owner = api.user()
    deployment_id = await api.completed_deployment(owner)
    commands = api.system.commands
    real_store = commands.store
    commands.store = BarrierStore(real_store, 2)  # type: ignore[assignment]
    try:
        update, delete = await asyncio.gather(
            api.request("PUT", f"/deployments/{deployment_id}", owner,
                        json={"template": TEMPLATE_V2, "parameters": {"num_cpus": 2}}),
            api.request("DELETE", f"/deployments/{deployment_id}", owner))
    finally:
        commands.store = real_store
    statuses = sorted([update.status_code, delete.status_code])
    assert statuses in ([202, 409], [204, 409]), (update.text, delete.text)
    loser = update if update.status_code == 409 else delete
    body = assert_legacy_error(loser, 409)
    assert "concurrent update" in body["message"]
    assert loser.headers["Retry-After"] == "0"
    state = await api.state(deployment_id)
    winner = "UPDATE_IN_PROGRESS" if update.status_code == 202 else "DELETE_IN_PROGRESS"
    assert state.status == winner
