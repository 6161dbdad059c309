"""A whole system (Postgres, Kafka, relay, projections, API) with the Rucio replicator wired
to the real Rucio peer, one per test module; and a system without Rucio for the tests that
drive their own replicator (Rucio down, crash in the middle of a rule creation)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orchestrator import bootstrap
from tests.api.conftest import fixture_issuers, fixture_validator, harness_settings
from tests.consumers.support import consumer_settings
from tests.oidc_issuer import LocalIssuer
from tests.replications.support import DataHarness, rucio_settings
from tests.rucio.conftest import (
    RucioPeer,
    fixture_rucio,
    fixture_rucio_peer,
    fixture_scenario,
)
from tosca import TemplateValidator

__all__ = ["fixture_issuers", "fixture_rucio", "fixture_rucio_peer", "fixture_scenario",
           "fixture_validator"]


async def _harness(databases: Any, kafka: str, issuers: tuple[LocalIssuer, LocalIssuer],
                   validator: TemplateValidator, peer: RucioPeer | None,
                   **overrides: Any) -> AsyncIterator[DataHarness]:
    prefix = f"rep{uuid.uuid4().hex[:10]}"
    extra = rucio_settings(peer) if peer is not None else {}
    settings = harness_settings(await databases.fresh(), kafka, issuers, topic_prefix=prefix,
                                **extra, **overrides)
    system = await bootstrap.build(settings, validator=validator)
    stop = asyncio.Event()
    try:
        await bootstrap.start_components(system, stop, consumer_settings(prefix))
        transport = httpx.ASGITransport(app=system.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:8080") as client:
            yield DataHarness(system=system, client=client, issuer=issuers[0], peer=peer)
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()


@pytest.fixture(scope="module", name="data")
async def fixture_data(fx_databases: Any, fx_kafka_bootstrap: str,
                       fx_issuers: tuple[LocalIssuer, LocalIssuer],
                       fx_validator: TemplateValidator,
                       fx_rucio_peer: RucioPeer) -> AsyncIterator[DataHarness]:
    async for harness in _harness(fx_databases, fx_kafka_bootstrap, fx_issuers, fx_validator,
                                  fx_rucio_peer):
        yield harness


@pytest.fixture(name="bare")
async def fixture_bare(fx_databases: Any, fx_kafka_bootstrap: str,
                       fx_issuers: tuple[LocalIssuer, LocalIssuer],
                       fx_validator: TemplateValidator) -> AsyncIterator[DataHarness]:
    """No Rucio configured: no replicator runs unless the test starts one."""
    async for harness in _harness(fx_databases, fx_kafka_bootstrap, fx_issuers, fx_validator,
                                  None):
        yield harness
