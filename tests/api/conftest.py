"""Fixtures for the API tests: one real system per test module (fresh database, own
topics), real OIDC issuers on loopback, one TOSCA validator for the session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from api.auth import AuthSettings, TrustedIssuer
from api.legacy.ports import DeploymentView
from orchestrator import bootstrap
from orchestrator.settings import Settings
from tests.api.support import ADMIN_GROUP, AUDIENCE, Harness
from tests.consumers.support import consumer_settings
from tests.databases import TestDatabases
from tests.oidc_issuer import LocalIssuer
from tosca import TemplateValidator


class StaticDeployerInfo:
    """VM details as the deployer (IM) would report them, set by the tests."""

    def __init__(self) -> None:
        self.vms: dict[str, dict[str, dict[str, Any]]] = {}

    async def vm_info(self, deployment: DeploymentView) -> dict[str, dict[str, Any]]:
        return self.vms.get(deployment.id, {})


@pytest.fixture(scope="session", name="fx_validator")
async def fixture_validator() -> AsyncIterator[TemplateValidator]:
    validator = TemplateValidator(workers=2)
    await validator.start()
    yield validator
    validator.close()


@pytest.fixture(scope="session", name="fx_issuers")
def fixture_issuers() -> Iterator[tuple[LocalIssuer, LocalIssuer]]:
    first = LocalIssuer().start()
    second = LocalIssuer(path="second").start()
    yield first, second
    first.stop()
    second.stop()


def harness_settings(database_url: str, kafka: str, issuers: tuple[LocalIssuer, LocalIssuer],
                     **overrides: Any) -> Settings:
    first, second = issuers
    auth = AuthSettings(
        issuers=(TrustedIssuer(issuer=first.issuer, audience=AUDIENCE, admin_group=ADMIN_GROUP),
                 TrustedIssuer(issuer=second.issuer, admin_group=ADMIN_GROUP)),
        group_visibility=True, jwks_min_refresh_interval_s=0.0)
    values: dict[str, Any] = {
        "database_url": database_url, "kafka_bootstrap": kafka,
        "topic_prefix": f"api{uuid.uuid4().hex[:10]}", "topic_partitions": 2,
        "api_base_path": "/orchestrator", "auth": auth,
        "configuration": {"im_url": "http://127.0.0.1:8899"}}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module", name="api")
async def fixture_api(fx_databases: TestDatabases, fx_kafka_bootstrap: str,
                      fx_issuers: tuple[LocalIssuer, LocalIssuer],
                      fx_validator: TemplateValidator) -> AsyncIterator[Harness]:
    settings = harness_settings(await fx_databases.fresh(), fx_kafka_bootstrap, fx_issuers)
    deployer_info = StaticDeployerInfo()
    system = await bootstrap.build(settings, validator=fx_validator,
                                   deployer_info=deployer_info)
    stop = asyncio.Event()
    try:
        await bootstrap.start_components(system, stop,
                                         consumer_settings(settings.topic_prefix))
        # The app runs in this event loop (its pools belong to it), through httpx's ASGI
        # transport: Litestar's AsyncTestClient would run it in a portal thread.
        transport = httpx.ASGITransport(app=system.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:8080") as client:
            yield Harness(system=system, client=client, issuer=fx_issuers[0],
                          second_issuer=fx_issuers[1], deployer_info=deployer_info)
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()
