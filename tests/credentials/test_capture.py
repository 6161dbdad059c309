"""Capture through the real API: the caller's token is kept (encrypted) for each accepted
create, update, delete and retry, deleted at DELETE_COMPLETE, and appears nowhere else:
not in events, Kafka messages, read models or log records."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text

from eventstore.consumers import topics_for
from handlers.credentials import (
    CredentialKeys,
    CredentialStore,
    CredentialUnavailable,
    DeploymentCredentials,
)
from tests.api.support import Harness, User
from tests.callbacks.support import PIPELINE_DEADLINE_S, api_harness, wait_for_status
from tests.databases import TestDatabases
from tests.oidc_issuer import LocalIssuer
from tosca import TemplateValidator

KEYS = CredentialKeys.generate("test-key")


@pytest.fixture(scope="module", name="api")
async def fixture_api(fx_databases: TestDatabases, fx_kafka_bootstrap: str,
                      fx_issuers: tuple[LocalIssuer, LocalIssuer],
                      fx_validator: TemplateValidator) -> AsyncIterator[Harness]:
    async with api_harness(fx_databases, fx_kafka_bootstrap, fx_issuers, fx_validator,
                           credential_keys=KEYS) as harness:
        yield harness


def store_of(api: Harness) -> CredentialStore:
    return CredentialStore(api.system.engine, CredentialKeys.parse(KEYS))


async def as_token(api: Harness, method: str, path: str, token: str,
                   **kwargs: Any) -> Any:
    return await api.request(method, path, headers={"Authorization": f"Bearer {token}"},
                             **kwargs)


async def stored_token(api: Harness, deployment_id: str) -> str | None:
    tokens = await store_of(api).get_tokens(deployment_id)
    return tokens.access_token if tokens is not None else None


async def everything_in_postgres(api: Harness) -> list[tuple[str, Any]]:
    """Every value of every table but the credential store's own."""
    values: list[tuple[str, Any]] = []
    async with api.system.engine.connect() as conn:
        tables = (await conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'credentials'"))).scalars().all()
        for table in tables:
            for row in await conn.execute(text(f'SELECT * FROM "{table}"')):
                values.extend((table, value) for value in row)
    return values


async def everything_in_kafka(api: Harness) -> list[bytes]:
    settings = api.system.settings
    topic = topics_for(settings.topic_prefix, ["deployment"])[0]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        blobs: list[bytes] = []
        async def behind() -> bool:
            return any([await consumer.position(p) < ends[p] for p in partitions])

        while await behind():
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                for message in messages:
                    blobs.append(message.value or b"")
                    blobs.extend(value for _, value in message.headers)
        return blobs
    finally:
        await consumer.stop()


def leaked(token: str, value: Any) -> bool:
    signature = token.rsplit(".", 1)[-1]
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return token.encode() in data or signature.encode() in data
    return token in str(value) or signature in str(value)


async def test_tokens_are_captured_per_command_and_deleted_at_delete_complete(
        api: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = api.user()
    create_token, update_token, delete_token = user.token(), user.token(), user.token()
    assert len({create_token, update_token, delete_token}) == 3

    response = await as_token(api, "POST", "/deployments", create_token,
                              json={"template": _template(), "userGroup": "g1"})
    assert response.status_code == 201, response.text
    deployment_id = response.json()["uuid"]
    assert await stored_token(api, deployment_id) == create_token
    # The IM deployer's port hands back exactly that token.
    credentials = DeploymentCredentials(store_of(api), None)
    assert await credentials.access_token(deployment_id) == create_token

    await api.complete_create(deployment_id)
    await wait_for_status(api, user, deployment_id, "CREATE_COMPLETE")
    response = await as_token(api, "PUT", f"/deployments/{deployment_id}", update_token,
                              json={"template": _template(), "parameters": {"num_cpus": 2}})
    assert response.status_code == 202, response.text
    assert await stored_token(api, deployment_id) == update_token

    await api.complete_update(deployment_id)
    await wait_for_status(api, user, deployment_id, "UPDATE_COMPLETE")
    response = await as_token(api, "DELETE", f"/deployments/{deployment_id}", delete_token)
    assert response.status_code == 204, response.text
    assert await stored_token(api, deployment_id) == delete_token

    # A refused command keeps nothing new: a second DELETE is a 409 (already deleting).
    other = user.token()
    response = await as_token(api, "DELETE", f"/deployments/{deployment_id}", other)
    assert response.status_code == 409, response.text
    assert await stored_token(api, deployment_id) == delete_token

    await api.complete_deletion(deployment_id)

    async def gone() -> bool:
        return await stored_token(api, deployment_id) is None

    await api.eventually(gone, within=PIPELINE_DEADLINE_S,
                         what="credentials deleted at DELETE_COMPLETE")

    # The monitoring line of the completed create went through the handler (wiring check).
    def monitored() -> bool:
        return any(r.name == "orchestrator.monitoring" and deployment_id in r.getMessage()
                   and "Deployment completed successfully." in r.getMessage()
                   for r in caplog.records)

    async def probe() -> bool:
        return monitored()

    await api.eventually(probe, within=PIPELINE_DEADLINE_S, what="the monitoring line")

    # No token anywhere else: events, read models, inboxes, Kafka, log records.
    tokens = [create_token, update_token, delete_token, other]
    for table, value in await everything_in_postgres(api):
        assert not any(leaked(t, value) for t in tokens), f"a token is in table {table}"
    blobs = await everything_in_kafka(api)
    assert any(deployment_id.encode() in blob for blob in blobs)  # the scan saw the events
    for blob in blobs:
        assert not any(leaked(t, blob) for t in tokens), "a token is in a Kafka message"
    for record in caplog.records:
        raw = [record.getMessage(), *map(str, vars(record).values())]
        assert not any(leaked(t, value) for t in tokens for value in raw), (
            f"a token was handed to the logger {record.name}")


async def test_retry_captures_the_retrying_callers_token(api: Harness) -> None:
    user = api.user()
    deployment_id = (await api.create(user))["uuid"]
    await api.fail_create(deployment_id)
    await wait_for_status(api, user, deployment_id, "CREATE_FAILED")
    token = user.token()
    response = await as_token(api, "POST", f"/deployments/{deployment_id}/retry", token)
    assert response.status_code == 202, response.text
    assert await stored_token(api, deployment_id) == token


async def test_without_a_key_the_request_succeeds_and_the_work_fails_cleanly(
        fx_databases: TestDatabases, fx_kafka_bootstrap: str,
        fx_issuers: tuple[LocalIssuer, LocalIssuer], fx_validator: TemplateValidator,
        caplog: pytest.LogCaptureFixture) -> None:
    async with api_harness(fx_databases, fx_kafka_bootstrap, fx_issuers,
                           fx_validator) as unkeyed:
        user: User = unkeyed.user()
        deployment_id = (await unkeyed.create(user))["uuid"]
        assert unkeyed.system.user_credentials is not None
        with pytest.raises(CredentialUnavailable, match="no credential key is configured"):
            await unkeyed.system.user_credentials.access_token(deployment_id)
        async with unkeyed.system.engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM credentials"))).scalar_one()
        assert count == 0
        assert any("not kept" in r.getMessage() for r in caplog.records)


def _template() -> str:
    from tests.api.support import TEMPLATE
    return TEMPLATE
