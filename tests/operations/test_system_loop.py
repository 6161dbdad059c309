"""The whole loop in one process, as `orchestrator run` wires it: a command appends,
the relay publishes to Kafka, the projection consumes, the API serves the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from orchestrator import bootstrap
from orchestrator.settings import Settings
from tests.http_server import serve
from tests.operations.support import create_deployment


@pytest.fixture(name="fx_running_system")
async def fixture_running_system(fx_database_url: str, fx_kafka_bootstrap: str,
                                 fx_topic_prefix: str) -> AsyncIterator[bootstrap.System]:
    system = await bootstrap.build(Settings(database_url=fx_database_url,
                                            kafka_bootstrap=fx_kafka_bootstrap,
                                            topic_prefix=fx_topic_prefix))
    stop = asyncio.Event()
    await bootstrap.start_components(system, stop)
    try:
        yield system
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()


async def test_appended_events_reach_the_event_counts_read_model_through_kafka(
        fx_running_system: bootstrap.System) -> None:
    for index in range(5):
        await create_deployment(fx_running_system, index)
    async with serve(fx_running_system.app) as client:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            counts = (await client.get("/v1/event-counts")).json()
            requested = [c for c in counts if c["type"] == "deployment.requested"]
            if requested and requested[0]["count"] == 5:
                break
            assert asyncio.get_running_loop().time() < deadline, counts
            await asyncio.sleep(0.1)
        assert requested[0]["category"] == "deployment"

        metrics = (await client.get("/metrics")).text
        assert "orchestrator_relay_lag_events 0.0" in metrics
        assert "orchestrator_relay_active 1.0" in metrics
        lag_lines = [line for line in metrics.splitlines()
                     if line.startswith("orchestrator_consumer_lag_messages{")
                     and "projection.event_counts" in line]
        assert lag_lines, "the event_counts consumer's lag is reported"
        assert all(line.endswith(" 0.0") for line in lag_lines), lag_lines
