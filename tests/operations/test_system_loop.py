"""The whole loop in one process, as `orchestrator run` wires it: a command appends,
the relay publishes to Kafka, the projection consumes, the API serves the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from eventstore.consumers import topics_for
from eventstore.projection import ProjectionVersions
from eventstore.relay import ensure_topics
from orchestrator import bootstrap
from orchestrator.settings import Settings
from projections.event_counts import projection as event_counts
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


async def test_a_projection_whose_table_shape_changed_is_rebuilt_at_start(
        fx_database_url: str, fx_kafka_bootstrap: str, fx_topic_prefix: str) -> None:
    """Bumping a projection's VERSION (its table shape) gets it new tables and a rebuild
    the next time the system starts; projections whose shape did not change are kept."""
    settings = Settings(database_url=fx_database_url, kafka_bootstrap=fx_kafka_bootstrap,
                        topic_prefix=fx_topic_prefix)
    system = await bootstrap.build(settings)
    try:
        await ensure_topics(fx_kafka_bootstrap,
                            topics_for(fx_topic_prefix, bootstrap.CATEGORIES), 1)
        await bootstrap.ensure_projections_built(system)
        # As if the live event_counts build had been made by the previous table shape.
        async with system.engine.begin() as conn:
            await conn.execute(text(
                "UPDATE projection_versions SET code_version = code_version - 1 "
                "WHERE projection = 'event_counts'"))

        await bootstrap.ensure_projections_built(system)

        versions = ProjectionVersions(system.engine)
        shape = event_counts.VERSION
        assert [(r.version, r.state, r.code_version)
                for r in await versions.all("event_counts")] == [
            (1, "retired", shape - 1), (2, "live", shape)]
        assert [(r.version, r.state) for r in await versions.all("deployments")] == [
            (1, "live")]
    finally:
        await system.close()
