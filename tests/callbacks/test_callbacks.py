"""Deployment callbacks end to end: API -> log -> Kafka -> callbacks handler -> a real HTTP
receiver on loopback (legacy acceptance check 25), with retries, give-up and the record."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from handlers.callbacks import EVENT_ID_HEADER, SIGNATURE_HEADER, deliveries
from tests.api.support import Harness
from tests.callbacks.support import (
    PIPELINE_DEADLINE_S,
    CallbackReceiver,
    api_harness,
    wait_for_status,
)
from tests.databases import TestDatabases
from tests.oidc_issuer import LocalIssuer
from tosca import TemplateValidator

SECRET = "callback-signing-secret"
ATTEMPTS = 3


@pytest.fixture(scope="module", name="api")
async def fixture_api(fx_databases: TestDatabases, fx_kafka_bootstrap: str,
                      fx_issuers: tuple[LocalIssuer, LocalIssuer],
                      fx_validator: TemplateValidator) -> AsyncIterator[Harness]:
    async with api_harness(fx_databases, fx_kafka_bootstrap, fx_issuers, fx_validator,
                           callback_attempts=ATTEMPTS, callback_backoff_s=0.05,
                           callback_timeout_s=5.0, callback_secret=SECRET) as harness:
        yield harness


@pytest.fixture(scope="module", name="receiver")
def fixture_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()


async def recorded(api: Harness, deployment_id: str, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    async def probe() -> bool:
        rows[:] = await deliveries(api.system.engine, deployment_id)
        return len(rows) >= count

    await api.eventually(probe, within=PIPELINE_DEADLINE_S,
                         what=f"{count} callback outcome(s) of {deployment_id}")
    return rows


async def test_create_complete_posts_the_deployment_json_once(
        api: Harness, receiver: CallbackReceiver) -> None:
    """Acceptance check 25: one POST at CREATE_COMPLETE with uuid, status, task, outputs and
    updateTime; signed; the outcome is recorded."""
    user = api.user()
    created = await api.create(user, callback=receiver.url("/cb-complete"))
    deployment_id = created["uuid"]
    await api.complete_create(deployment_id, outputs={"node_ip": "192.0.2.7"})

    [row] = await recorded(api, deployment_id, 1)
    assert (row["outcome"], row["status"], row["attempts"], row["http_status"]) == (
        "delivered", "CREATE_COMPLETE", 1, 200)
    [post] = receiver.posts("/cb-complete")
    body = post.json()
    assert body["uuid"] == deployment_id
    assert body["status"] == "CREATE_COMPLETE"
    assert body["task"] == "NONE"
    assert body["outputs"] == {"node_ip": "192.0.2.7"}
    assert body["updateTime"] and body["callback"] == receiver.url("/cb-complete")
    assert body["createdBy"]["subject"] == user.subject
    assert body.get("links", []) == []
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers[EVENT_ID_HEADER] == row["event_id"]
    expected = hmac.new(SECRET.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    # The shown deployment agrees with what was posted.
    shown = await wait_for_status(api, user, deployment_id, "CREATE_COMPLETE")
    assert shown["updateTime"] == body["updateTime"]


async def test_transient_failures_are_retried_until_delivered(
        api: Harness, receiver: CallbackReceiver) -> None:
    receiver.answers["/cb-flaky"] = [503, 429, 200]
    user = api.user()
    deployment_id = (await api.create(user, callback=receiver.url("/cb-flaky")))["uuid"]
    await api.fail_create(deployment_id, reason="every site refused it")

    [row] = await recorded(api, deployment_id, 1)
    assert (row["outcome"], row["status"], row["attempts"]) == ("delivered", "CREATE_FAILED", 3)
    posts = receiver.posts("/cb-flaky")
    assert len(posts) == 3 and all(p.body == posts[0].body for p in posts)
    assert posts[0].json()["statusReason"] == "every site refused it"


async def test_a_receiver_that_keeps_failing_is_given_up_after_the_bound(
        api: Harness, receiver: CallbackReceiver) -> None:
    receiver.answers["/cb-down"] = [500]
    receiver.answers["/cb-gone"] = [404]
    user = api.user()
    down = (await api.create(user, callback=receiver.url("/cb-down")))["uuid"]
    gone = (await api.create(user, callback=receiver.url("/cb-gone")))["uuid"]
    await api.complete_create(down)
    await api.complete_create(gone)

    [row] = await recorded(api, down, 1)
    assert (row["outcome"], row["attempts"], row["http_status"]) == ("failed", ATTEMPTS, 500)
    assert "500" in row["error"]
    assert len(receiver.posts("/cb-down")) == ATTEMPTS
    # A client error is not retried.
    [row] = await recorded(api, gone, 1)
    assert (row["outcome"], row["attempts"], row["http_status"]) == ("failed", 1, 404)
    assert len(receiver.posts("/cb-gone")) == 1


async def test_nobody_listening_is_recorded_as_failed(api: Harness) -> None:
    user = api.user()
    closed = CallbackReceiver()
    url = closed.url("/cb")
    closed.close()  # the port is free again: connection refused
    deployment_id = (await api.create(user, callback=url))["uuid"]
    await api.complete_create(deployment_id)
    [row] = await recorded(api, deployment_id, 1)
    assert (row["outcome"], row["attempts"], row["http_status"]) == ("failed", ATTEMPTS, None)
    assert "ConnectError" in row["error"]


async def test_every_terminal_status_of_the_lifecycle_is_posted_as_of_its_event(
        api: Harness, receiver: CallbackReceiver) -> None:
    user = api.user()
    deployment_id = (await api.create(user, callback=receiver.url("/cb-life")))["uuid"]
    await api.complete_create(deployment_id)
    await wait_for_status(api, user, deployment_id, "CREATE_COMPLETE")
    response = await api.request("DELETE", f"/deployments/{deployment_id}", user)
    assert response.status_code == 204, response.text
    await api.fail_deletion(deployment_id, "the site did not answer")
    response = await api.request("DELETE", f"/deployments/{deployment_id}?force=true", user)
    assert response.status_code == 204, response.text
    await api.complete_deletion(deployment_id)

    rows = await recorded(api, deployment_id, 3)
    assert [(r["status"], r["outcome"]) for r in rows] == [
        ("CREATE_COMPLETE", "delivered"), ("DELETE_FAILED", "delivered"),
        ("DELETE_COMPLETE", "delivered")]
    bodies = [p.json() for p in receiver.posts("/cb-life")]
    # Each body is the deployment as of its own event, whatever happened after it.
    assert sorted(b["status"] for b in bodies) == sorted(
        ["CREATE_COMPLETE", "DELETE_FAILED", "DELETE_COMPLETE"])
    failed = next(b for b in bodies if b["status"] == "DELETE_FAILED")
    assert failed["statusReason"] == "the site did not answer"


async def test_a_reset_of_a_stuck_operation_is_posted(
        api: Harness, receiver: CallbackReceiver) -> None:
    user = api.user()
    deployment_id = (await api.create(user, callback=receiver.url("/cb-reset")))["uuid"]
    await wait_for_status(api, user, deployment_id, "CREATE_IN_PROGRESS")
    response = await api.request("PATCH", f"/deployments/{deployment_id}", user,
                                 json={"status": "CREATE_FAILED"})
    assert response.status_code == 204, response.text
    [row] = await recorded(api, deployment_id, 1)
    assert (row["status"], row["outcome"]) == ("CREATE_FAILED", "delivered")
    [post] = receiver.posts("/cb-reset")
    assert post.json()["status"] == "CREATE_FAILED"


async def test_no_callback_url_no_post(api: Harness, receiver: CallbackReceiver) -> None:
    user = api.user()
    with_url = (await api.create(user, callback=receiver.url("/cb-marker")))["uuid"]
    without = (await api.create(user))["uuid"]
    await api.complete_create(without)
    await api.complete_create(with_url)
    # Wait until the handler has passed the terminal event of the deployment without URL.
    await recorded(api, with_url, 1)

    async def passed() -> bool:
        async with api.system.engine.connect() as conn:
            count = (await conn.execute(text(
                "SELECT count(*) FROM handler_inbox i JOIN events e ON e.event_id = i.event_id"
                " WHERE i.handler IN ('callbacks', 'handler.callbacks') AND e.stream_id = :s"
                " AND e.type = 'deployment.completed'"),
                {"s": f"deployment-{without}"})).scalar_one()
        return int(count) > 0

    await api.eventually(passed, within=PIPELINE_DEADLINE_S,
                         what="the callbacks handler passed the deployment")
    assert await deliveries(api.system.engine, without) == []
