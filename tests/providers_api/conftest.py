"""One real system per test module (fresh database, own topics, the Feeder topic wired),
a real OIDC issuer on loopback, the API through httpx's ASGI transport in this event loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from api.auth import AuthSettings, TrustedIssuer
from orchestrator import bootstrap
from orchestrator.settings import Settings
from tests.consumers.support import consumer_settings, create_topics
from tests.databases import TestDatabases
from tests.oidc_issuer import LocalIssuer
from tests.providers_api.support import ADMIN_GROUP, AUDIENCE, Harness


@pytest.fixture(scope="session", name="fx_provider_issuer")
def fixture_provider_issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer(path="providers").start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module", name="providers")
async def fixture_providers(fx_databases: TestDatabases, fx_kafka_bootstrap: str,
                            fx_provider_issuer: LocalIssuer) -> AsyncIterator[Harness]:
    prefix = f"prov{uuid.uuid4().hex[:10]}"
    feeder_topic = f"{prefix}.feeder"
    await create_topics(fx_kafka_bootstrap, [feeder_topic], 2)
    auth = AuthSettings(
        issuers=(TrustedIssuer(issuer=fx_provider_issuer.issuer, audience=AUDIENCE,
                               admin_group=ADMIN_GROUP),),
        jwks_min_refresh_interval_s=0.0)
    values: dict[str, Any] = {
        "database_url": await fx_databases.fresh(), "kafka_bootstrap": fx_kafka_bootstrap,
        "topic_prefix": prefix, "topic_partitions": 2, "auth": auth,
        "feeder_topic": feeder_topic}
    settings = Settings(**values)
    system = await bootstrap.build(settings)
    stop = asyncio.Event()
    try:
        await bootstrap.start_components(system, stop, consumer_settings(prefix))
        transport = httpx.ASGITransport(app=system.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:8080") as client:
            yield Harness(system=system, client=client, issuer=fx_provider_issuer,
                          feeder_topic=feeder_topic)
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()
