"""Deployment history and state as of a time/version, the admin audit query, export,
verification and replay, and the statistics endpoints, over the real system."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from eventstore.audit import ExportedEvent, verify_export
from tests.api.support import TEMPLATE, Harness, assert_legacy_error
from tests.audit_api.support import foreign_admin, statistics


async def test_history_lists_every_event_in_order_for_owner_and_admin_only(
        api: Harness) -> None:
    alice = api.user("alice", groups=("g1",))
    created = await api.request("POST", "/deployments", alice,
                                json={"template": TEMPLATE, "userGroup": "g1"},
                                headers={"X-Correlation-Id": "ticket-4711"})
    assert created.status_code == 201, created.text
    deployment_id = created.json()["uuid"]
    await api.complete_create(deployment_id)
    await api.wait_for_status(alice, deployment_id, "CREATE_COMPLETE")
    response = await api.request("GET", f"/deployments/{deployment_id}/history", alice)
    assert response.status_code == 200, response.text
    events = response.json()["events"]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "deployment.requested"
    assert events[0]["actor"] == {"issuer": alice.issuer.issuer, "subject": alice.subject}
    assert events[0]["summary"].startswith(f"Deployment requested by {alice.subject} for "
                                           "group g1")
    assert events[-1]["type"] == "deployment.completed"
    assert events[-1]["summary"] == "CREATE_COMPLETE on BACKBONE (cnaf)"
    assert events[0]["correlationId"] == "ticket-4711"
    assert events[0]["requestId"]
    assert all(e["actor"]["subject"] == "test-deployer" for e in events[1:])

    admin = api.admin()
    assert (await api.request("GET", f"/deployments/{deployment_id}/history",
                              admin)).status_code == 200
    # A member of the same group reads the deployment (group visibility) but not its audit
    # trail; an admin of another issuer does not even learn it exists.
    colleague = api.user("colleague", groups=("g1",))
    assert (await api.show(colleague, deployment_id)).status_code == 200
    for stranger in (colleague, foreign_admin(api)):
        assert_legacy_error(await api.request(
            "GET", f"/deployments/{deployment_id}/history", stranger), 404)
    assert_legacy_error(await api.request("GET", "/deployments/no-such-id/history", admin), 404)


async def test_state_as_of_a_version_or_a_time_is_folded_from_the_log(api: Harness) -> None:
    alice = api.user("alice")
    created = await api.create(alice)
    deployment_id = created["uuid"]
    await api.complete_create(deployment_id)
    history = (await api.request("GET", f"/deployments/{deployment_id}/history",
                                 alice)).json()["events"]

    first = await api.request("GET", f"/deployments/{deployment_id}/state", alice,
                              params={"version": "1"})
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "CREATE_IN_PROGRESS"
    assert "cloudProviderName" not in first.json()
    assert first.json()["createdBy"] == {"issuer": alice.issuer.issuer,
                                         "subject": alice.subject}

    last_time = history[-1]["time"]
    latest = await api.request("GET", f"/deployments/{deployment_id}/state", alice,
                               params={"asOf": last_time})
    assert latest.json()["status"] == "CREATE_COMPLETE"
    assert latest.json()["cloudProviderName"] == "BACKBONE"
    just_before = (datetime.fromisoformat(last_time) - timedelta(microseconds=1)).isoformat()
    earlier = await api.request("GET", f"/deployments/{deployment_id}/state", alice,
                                params={"asOf": just_before})
    assert earlier.json()["status"] == "CREATE_IN_PROGRESS"

    before = (datetime.fromisoformat(history[0]["time"]) - timedelta(seconds=1)).isoformat()
    assert_legacy_error(await api.request("GET", f"/deployments/{deployment_id}/state", alice,
                                          params={"asOf": before}), 404)
    assert_legacy_error(await api.request("GET", f"/deployments/{deployment_id}/state", alice,
                                          params={"asOf": "yesterday"}), 400)
    assert_legacy_error(await api.request("GET", f"/deployments/{deployment_id}/state", alice),
                        400)
    assert_legacy_error(await api.request("GET", f"/deployments/{deployment_id}/state",
                                          api.user("mallory"), params={"version": "1"}), 404)


async def _wait_for_rows(api: Harness, user: Any, path: str, predicate: Any,
                         **params: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def probe() -> bool:
        response = await api.request("GET", path, user, params=params)
        if response.status_code != 200:
            return False
        seen.clear()
        seen.update(response.json())
        return bool(predicate(seen["rows"]))

    await api.eventually(probe, what=f"statistics {path} {params}")
    return seen


async def test_statistics_are_scoped_to_the_admins_issuer_and_the_users_own(
        api: Harness) -> None:
    bob = api.user("bob", groups=("g7",))
    carol = api.user("carol", groups=("g7",))
    dave = api.user("dave", groups=("g8",))
    for user in (bob, bob, carol):
        await api.completed_deployment(user, group="g7")
    failed = (await api.create(dave, group="g8"))["uuid"]
    await api.fail_create(failed, reason="quota exceeded")
    admin = api.admin()
    today = datetime.now(UTC).date().isoformat()

    def counts(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
        return {(r["owner"], r["status"]): r["deployments"] for r in rows
                if r["owner"] in (bob.subject, carol.subject, dave.subject)}

    expected = {(bob.subject, "CREATE_COMPLETE"): 2, (carol.subject, "CREATE_COMPLETE"): 1,
                (dave.subject, "CREATE_FAILED"): 1}
    body = await _wait_for_rows(api, admin, "/v1/admin/statistics/deployments",
                                lambda rows: counts(rows) == expected,
                                groupBy="owner,status", **{"from": today, "to": today})
    assert body["scope"] == f"issuer {admin.issuer.issuer}"

    # bob: his own two, and with group visibility (on in the harness) carol's in g7
    mine = await statistics(api, bob, "/v1/statistics/deployments", groupBy="owner")
    assert {r["owner"]: r["deployments"] for r in mine["rows"]} == {bob.subject: 2,
                                                                    carol.subject: 1}
    # the other issuer's admin sees none of it
    foreign = await statistics(api, foreign_admin(api), "/v1/admin/statistics/deployments")
    assert foreign["rows"] == []

    outcomes = await statistics(api, admin, "/v1/admin/statistics/outcomes",
                                group="g7", groupBy="provider")
    assert [(r["providerName"], r["succeeded"], r["failed"], r["successRate"])
            for r in outcomes["rows"]] == [("BACKBONE", 3, 0, 1.0)]
    assert outcomes["rows"][0]["meanSecondsToComplete"] >= 0
    failures = await statistics(api, admin, "/v1/admin/statistics/failures", group="g8")
    assert [(r["status"], r["reason"], r["failures"]) for r in failures["rows"]] == [
        ("CREATE_FAILED", "quota exceeded", 1)]
    active = await statistics(api, admin, "/v1/admin/statistics/active", group="g7",
                              groupBy="owner")
    assert {r["owner"]: r["active"] for r in active["rows"]} == {bob.subject: 2,
                                                                 carol.subject: 1}
    held = await statistics(api, admin, "/v1/admin/statistics/resources", group="g7")
    assert len(held["rows"]) == 1 and held["rows"][0]["vcpuHours"] > 0

    as_csv = await api.request("GET", "/v1/admin/statistics/deployments", admin,
                               params={"groupBy": "owner", "group": "g7", "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {row["owner"]: row["deployments"] for row in table} == {bob.subject: "2",
                                                                   carol.subject: "1"}
    by_accept = await api.request("GET", "/v1/statistics/deployments", bob,
                                  headers={"Accept": "text/csv"})
    assert by_accept.text.splitlines()[0] == "period,deployments,vcpus,ramMb,gpus"

    assert_legacy_error(await api.request("GET", "/v1/admin/statistics/deployments", bob), 403)
    assert_legacy_error(await api.request("GET", "/v1/statistics/deployments", bob,
                                          params={"interval": "hour"}), 400)
    assert_legacy_error(await api.request("GET", "/v1/statistics/deployments", bob,
                                          params={"groupBy": "colour"}), 400)
    assert_legacy_error(await api.request("GET", "/v1/statistics/deployments", bob,
                                          params={"from": "2026-02-30"}), 400)
    assert_legacy_error(await api.request("GET", "/v1/statistics/nothing", bob), 404)
    assert_legacy_error(await api.request("GET", "/v1/statistics/deployments"), 401)


async def test_audit_events_are_paged_and_scoped_to_the_admins_issuer(api: Harness) -> None:
    erin = api.user("erin")
    first = (await api.create(erin))["uuid"]
    second = (await api.create(erin))["uuid"]
    admin = api.admin()
    page = await api.request("GET", "/v1/admin/audit/events", admin,
                             params={"actor": erin.subject, "size": "1"})
    assert page.status_code == 200, page.text
    body = page.json()
    assert [e["streamId"] for e in body["content"]] == [f"deployment-{first}"]
    assert body["content"][0]["type"] == "deployment.requested"
    assert body["content"][0]["data"]["owner"]["subject"] == erin.subject
    rest = (await api.request("GET", "/v1/admin/audit/events", admin,
                              params={"actor": erin.subject,
                                      "after": str(body["next"])})).json()
    assert [e["streamId"] for e in rest["content"]] == [f"deployment-{second}"]
    assert rest["next"] is None
    typed = (await api.request("GET", "/v1/admin/audit/events", admin,
                               params={"type": "deployment.completed",
                                       "actor": erin.subject})).json()
    assert typed["content"] == []  # the deployer's events carry the system actor
    foreign = (await api.request("GET", "/v1/admin/audit/events", foreign_admin(api),
                                 params={"actor": erin.subject})).json()
    assert foreign["content"] == []
    assert_legacy_error(await api.request("GET", "/v1/admin/audit/events", erin), 403)
    assert_legacy_error(await api.request("GET", "/v1/admin/audit/events", admin,
                                          params={"size": "0"}), 400)


async def test_export_is_verifiable_offline_and_holds_only_the_issuers_streams(
        api: Harness) -> None:
    frank = api.user("frank")
    deployment_id = await api.completed_deployment(frank)
    admin = api.admin()
    lines: list[bytes] = []
    async with api.client.stream(
            "GET", "http://127.0.0.1:8080/orchestrator/v1/admin/audit/export",
            headers=admin.headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        async for line in response.aiter_lines():
            if line:
                lines.append(line.encode())
    assert verify_export(lines) is None
    exported = [msgspec.json.decode(line, type=ExportedEvent) for line in lines]
    assert f"deployment-{deployment_id}" in {e.stream_id for e in exported}
    assert all(e.stream_id.startswith("deployment-") for e in exported)
    # a forged payload in the export is caught by the offline verifier
    index = next(i for i, e in enumerate(exported)
                 if e.stream_id == f"deployment-{deployment_id}" and e.version == 1)
    forged = msgspec.structs.replace(exported[index],
                                     data=exported[index].data.replace("frank", "frenk"))
    assert forged.data != exported[index].data
    broken = verify_export([*lines[:index], msgspec.json.encode(forged), *lines[index + 1:]])
    assert broken is not None
    assert (broken.stream_id, broken.version, broken.problem) == (
        f"deployment-{deployment_id}", 1, "hash mismatch")
    empty = await api.request("GET", "/v1/admin/audit/export", foreign_admin(api))
    assert empty.status_code == 200
    assert all(msgspec.json.decode(line, type=ExportedEvent).stream_id not in {
        e.stream_id for e in exported} for line in empty.content.splitlines() if line)
    assert_legacy_error(await api.request("GET", "/v1/admin/audit/export", frank), 403)
    assert_legacy_error(await api.request("GET", "/v1/admin/audit/export", admin,
                                          params={"to": "999999999"}), 404)


async def test_replay_into_a_scratch_schema_shows_the_statistics_as_of_a_position(
        api: Harness) -> None:
    grace = api.user("grace", groups=("g9",))
    first = await api.completed_deployment(grace, group="g9")
    history = (await api.request("GET", f"/deployments/{first}/history",
                                 grace)).json()["events"]
    cut = history[-1]["position"]
    await api.completed_deployment(grace, group="g9")
    admin = api.admin()
    replayed = await api.request("POST", "/v1/admin/audit/replay", admin, json={
        "projection": "statistics", "schema": "audit_g9", "position": cut})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["position"] == cut
    then = await statistics(api, admin, "/v1/admin/statistics/deployments", group="g9",
                            replay="audit_g9")
    assert [(r["deployments"]) for r in then["rows"]] == [1]
    now = await _wait_for_rows(api, admin, "/v1/admin/statistics/deployments",
                               lambda rows: [r["deployments"] for r in rows] == [2],
                               group="g9")
    assert now["replay"] is None
    assert_legacy_error(await api.request("GET", "/v1/admin/statistics/deployments", admin,
                                          params={"replay": "no_such_replay"}), 404)
    assert_legacy_error(await api.request("POST", "/v1/admin/audit/replay", admin, json={
        "projection": "nope", "schema": "audit_x", "position": cut}), 404)
    assert_legacy_error(await api.request("POST", "/v1/admin/audit/replay", admin, json={
        "projection": "statistics", "schema": "Bad-Name", "position": cut}), 400)
    assert_legacy_error(await api.request("POST", "/v1/admin/audit/replay", grace, json={
        "projection": "statistics", "schema": "audit_y", "position": cut}), 403)


async def test_the_endpoints_are_documented_in_openapi(api: Harness) -> None:
    spec = (await api.request("GET", "/openapi/openapi.json")).json()
    paths = spec["paths"]
    for path in ("/orchestrator/v1/admin/statistics/{view}", "/orchestrator/v1/statistics/{view}",
                 "/orchestrator/v1/admin/audit/events", "/orchestrator/v1/admin/audit/export",
                 "/orchestrator/v1/admin/audit/verify", "/orchestrator/v1/admin/audit/replay",
                 "/orchestrator/deployments/{deployment_id}/history",
                 "/orchestrator/deployments/{deployment_id}/state"):
        assert path in paths, sorted(paths)
