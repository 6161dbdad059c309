"""The IM deployer against the real IM (Dummy connector): through the API, and failures."""

from __future__ import annotations

import dataclasses

from domain.deployments import (
    AttemptFailureCause,
    AttemptOutcome,
    DataRequirement,
    MarkDataReady,
    NodeState,
)
from handlers.im_client import ImClient
from tests.api.support import DEPLOYER
from tests.im.conftest import ImPeer
from tests.im.support import compute_template
from tests.im_handler.support import ImHarness, hanging_template


async def test_create_update_stop_start_delete_through_the_api(im_system: ImHarness) -> None:
    h = im_system
    user = h.user("imuser")
    deployment_id = str((await h.create(user, template=compute_template(count=1)))["uuid"])
    await h.schedule(deployment_id, "dummy-a")

    body = await h.wait_for_status(user, deployment_id, "CREATE_COMPLETE")
    assert body["outputs"]["server_ip"] == "10.0.0.1"
    assert body["cloudProviderName"] == "DUMMY-A"
    [infrastructure] = await h.infrastructures_of(deployment_id)
    assert body["physicalId"] == infrastructure
    state = await h.state(deployment_id)
    assert [r.state for r in state.resources] == [NodeState.STARTED]
    assert state.log  # IM's contextualization log was recorded

    async def resources() -> list[dict]:
        response = await h.request("GET", f"/deployments/{deployment_id}/resources", user)
        return response.json().get("content", []) if response.status_code == 200 else []

    await h.eventually(lambda: _count(resources, 1), what="one resource listed")

    extrainfo = await h.request("GET", f"/deployments/{deployment_id}/extrainfo", user)
    assert extrainfo.status_code == 200
    assert "10.0.0.1" in extrainfo.text
    assert "disk.0.os.credentials.password" not in extrainfo.text  # redacted
    log = await h.request("GET", f"/deployments/{deployment_id}/log", user)
    assert log.status_code == 200 and log.text

    update = await h.request("PUT", f"/deployments/{deployment_id}", user,
                             json={"template": compute_template(count=3), "parameters": {}})
    assert update.status_code == 202, update.text
    await h.wait_for_status(user, deployment_id, "UPDATE_COMPLETE")
    state = await h.state(deployment_id)
    assert len([r for r in state.resources if r.state == NodeState.STARTED]) == 3
    assert await h.infrastructures_of(deployment_id) == [infrastructure]

    resource = next(r for r in state.resources if r.im_vm_id == "1")
    action = f"/deployments/{deployment_id}/resources/{resource.resource_id}/actions"
    stop = await h.request("POST", action, user, json={"type": "stop"})
    assert stop.status_code == 202, stop.text
    state = await h.until(deployment_id, lambda s: s.resource(resource.resource_id).state
                          == NodeState.STOPPED, what="VM stopped")
    start = await h.request("POST", action, user, json={"type": "start"})
    assert start.status_code == 202, start.text
    await h.until(deployment_id, lambda s: s.resource(resource.resource_id).state
                  == NodeState.STARTED, what="VM started")

    delete = await h.request("DELETE", f"/deployments/{deployment_id}", user)
    assert delete.status_code == 204, delete.text
    await h.wait_for_status(user, deployment_id, "DELETE_COMPLETE")
    assert await h.infrastructures_of(deployment_id) == []


async def _count(probe, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await probe()) == expected


async def test_first_two_sites_fail_the_third_succeeds(im_system: ImHarness) -> None:
    h = im_system
    deployment_id = await h.create_direct(hanging_template())
    await h.schedule(deployment_id, "badcreds", "never", "dummy-b")
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_COMPLETE",
                          what="created on the third site")
    first, second, third = state.attempts
    assert first.outcome == second.outcome == AttemptOutcome.FAILED
    assert first.infrastructure_id is None and "401" in (first.failure_reason or "")
    assert second.failure_cause == AttemptFailureCause.TIMEOUT
    assert second.infrastructure_id is not None and not second.infrastructure_live
    assert third.outcome == AttemptOutcome.SUCCEEDED and third.site.provider_id == "dummy-b"
    # the timed-out attempt's infrastructure was destroyed: only the third one is left
    assert await h.infrastructures_of(deployment_id) == [third.infrastructure_id]
    await _delete(h, deployment_id)


async def test_all_sites_failing_lists_each_attempt(im_system: ImHarness) -> None:
    h = im_system
    deployment_id = await h.create_direct(hanging_template())
    await h.schedule(deployment_id, "badcreds", "never")
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_FAILED",
                          what="creation failed")
    reason = state.status_reason or ""
    assert reason.startswith("Retries on cloud providers exhausted")
    assert "attempt 1 on BADCREDS" in reason and "attempt 2 on NEVER" in reason
    assert "provider timeout" in reason
    # the hung attempt's infrastructure was destroyed (no keepLastAttempt)
    assert state.attempts[1].infrastructure_id is not None
    assert await h.infrastructures_of(deployment_id) == []


async def test_keep_last_attempt_keeps_only_the_last_infrastructure(im_system: ImHarness
                                                                    ) -> None:
    h = im_system
    deployment_id = await h.create_direct(hanging_template(), keep_last_attempt=True)
    await h.schedule(deployment_id, "never")
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_FAILED",
                          what="creation failed")
    [attempt] = state.attempts
    assert attempt.infrastructure_live
    assert await h.infrastructures_of(deployment_id) == [attempt.infrastructure_id]
    await _delete(h, deployment_id)


async def test_max_providers_retry_and_keep_last_attempt(im_system: ImHarness) -> None:
    h = im_system
    deployment_id = await h.create_direct(hanging_template(), keep_last_attempt=True,
                                          max_providers_retry=2)
    await h.schedule(deployment_id, "badcreds", "never", "dummy-a")
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_FAILED",
                          what="creation failed after two attempts")
    assert [a.site.provider_id for a in state.attempts] == ["badcreds", "never"]
    kept = state.attempts[-1]
    assert kept.infrastructure_live
    assert await h.infrastructures_of(deployment_id) == [kept.infrastructure_id]
    await _delete(h, deployment_id)


async def test_a_template_im_rejects_fails_with_its_message(
        im_system: ImHarness, fx_private_im_peer: ImPeer) -> None:
    # A fresh IM of its own: a lost delete on the shared one switches IM's template
    # validation off for the whole process (pitfall 2).
    h = im_system
    fresh = fx_private_im_peer
    h.write_sites(extra_sites=[{
        "provider_id": "fresh-im", "im_url": fresh.url, "clouds": [{"kind": "dummy"}],
        "im": {"username": "orchestrator", "password": fresh.users["orchestrator"]}}])
    try:
        template = compute_template().replace("tosca_simple_yaml_1_0", "tosca_bogus_9")
        deployment_id = await h.create_direct(template)
        await h.schedule(deployment_id, "fresh-im")
        state = await h.until(deployment_id, lambda s: s.status == "CREATE_FAILED",
                              what="rejected")
    finally:
        h.write_sites()
    assert "InvalidTemplateVersion" in (state.status_reason or "")
    assert state.attempts[0].infrastructure_id is None
    async with ImClient(fresh.url) as im:
        assert await im.list_infrastructures(fresh.auth()) == []


async def test_force_delete_after_a_failed_delete(im_system: ImHarness) -> None:
    h = im_system
    deployment_id = await h.create_direct(compute_template())
    await h.schedule(deployment_id, "dummy-c")
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_COMPLETE",
                          what="created")
    h.write_sites(password_of={"dummy-c": "not-the-password"})
    try:
        await h.handle_delete(deployment_id, force=False)
        state = await h.until(deployment_id, lambda s: s.status == "DELETE_FAILED",
                              what="delete failed")
        assert "401" in (state.status_reason or "") or "credentials" in (
            state.status_reason or "")
        assert await h.infrastructures_of(deployment_id) == [state.physical_id]
    finally:
        h.write_sites()
    await h.handle_delete(deployment_id, force=True)
    state = await h.until(deployment_id, lambda s: s.status == "DELETE_COMPLETE",
                          what="force-deleted")
    assert await h.infrastructures_of(deployment_id) == []


async def test_reset_of_a_stuck_deletion(im_system: ImHarness) -> None:
    h = im_system
    deployment_id = await h.create_direct(compute_template())
    await h.schedule(deployment_id, "dummy-b")
    await h.until(deployment_id, lambda s: s.status == "CREATE_COMPLETE", what="created")
    assert h.deployer is not None
    patient = h.deployer.settings
    h.deployer.settings = dataclasses.replace(patient, unavailable_retries=10_000)
    h.write_sites(url_of={"dummy-b": "http://127.0.0.1:9"})  # nothing listens there
    try:
        await h.handle_delete(deployment_id, force=False)
        await h.until(deployment_id, lambda s: s.status == "DELETE_IN_PROGRESS",
                      what="deleting")
        await h.handle_reset(deployment_id, "DELETE_FAILED")
        state = await h.until(deployment_id, lambda s: s.status == "DELETE_FAILED",
                              what="reset")
    finally:
        h.deployer.settings = patient
        h.write_sites()
    assert await h.infrastructures_of(deployment_id) == [state.physical_id]
    await _delete(h, deployment_id)


async def _delete(h: ImHarness, deployment_id: str) -> None:
    await h.handle_delete(deployment_id, force=False)
    await h.until(deployment_id, lambda s: s.status == "DELETE_COMPLETE", what="deleted")
    assert await h.infrastructures_of(deployment_id) == []


async def test_a_site_needing_the_user_token_fails_cleanly_without_one(im_system: ImHarness
                                                                      ) -> None:
    h = im_system
    deployment_id = await h.create_direct(compute_template())
    await h.schedule(deployment_id, "needs-token", "dummy-a")
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_COMPLETE",
                          what="created on the second site")
    first = state.attempts[0]
    assert first.infrastructure_id is None
    assert "needs the user's access token" in (first.failure_reason or "")
    await _delete(h, deployment_id)


async def test_the_deployer_waits_for_the_input_data(im_system: ImHarness) -> None:
    h = im_system
    assert h.deployer is not None
    deployment_id = await h.create_direct(compute_template(), data_requirements=(
        DataRequirement(dids=("scope:file",), rse_expression="SITE_A", wait=True),))
    await h.schedule(deployment_id, "dummy-a")
    h.deployer.kick(deployment_id)
    await h.deployer.idle()
    state = await h.state(deployment_id)
    assert state.awaiting_data and state.attempts == ()
    await h.handle(MarkDataReady(deployment_id=deployment_id, actor=DEPLOYER,
                                 operation=state.operation))
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_COMPLETE",
                          what="created once the data is ready")
    await _delete(h, deployment_id)


async def test_reconcile_destroys_marked_orphans_and_leaves_foreign_ones(im_system: ImHarness
                                                                        ) -> None:
    h = im_system
    assert h.deployer is not None and h.peer is not None
    deployment_id = await h.create_direct(compute_template())
    await h.schedule(deployment_id, "dummy-a")
    state = await h.until(deployment_id, lambda s: s.status == "CREATE_COMPLETE",
                          what="created")
    recorded = state.attempts[0].infrastructure_id
    marker = ("metadata:\n"
              f"  orchestrator_instance: {h.deployer.settings.instance}\n"
              f"  orchestrator_deployment: {deployment_id}\n"
              "  orchestrator_attempt: 1\n")
    auth = h.peer.auth()
    async with ImClient(h.peer.url) as im:
        # a second infrastructure for the same attempt (as if a crashed process had
        # created it), and one that is not ours at all
        duplicate = await im.create(auth, marker + compute_template(), asynchronous=False)
        foreign = await im.create(auth, compute_template(), asynchronous=False)
        try:
            counts = await h.deployer.reconcile()
            assert counts["destroyed"] >= 1
            assert await h.infrastructures_of(deployment_id) == [recorded]
            assert await im.exists(auth, foreign)
            assert await im.exists(auth, recorded)
            assert not await im.exists(auth, duplicate)
        finally:
            await im.destroy(auth, foreign)
    await _delete(h, deployment_id)


async def test_delete_while_a_create_is_polled_cancels_it(im_system: ImHarness) -> None:
    # `never-long` would keep the attempt polling for an hour: only the deletion ends it
    h = im_system
    deployment_id = await h.create_direct(hanging_template())
    await h.schedule(deployment_id, "never-long")
    state = await h.until(deployment_id, lambda s: bool(s.attempts)
                          and s.attempts[0].infrastructure_live, what="infrastructure pending")
    [pending] = await h.infrastructures_of(deployment_id)
    await h.handle_delete(deployment_id, force=True)
    state = await h.until(deployment_id, lambda s: s.status == "DELETE_COMPLETE",
                          what="deleted")
    assert state.attempts[0].failure_cause == AttemptFailureCause.CANCELLED
    assert pending == state.attempts[0].infrastructure_id
    assert await h.infrastructures_of(deployment_id) == []
