"""Explicit wiring: every component is built here and nowhere else.

Registries are plain lists (PROJECTIONS, HANDLERS) and the event registry is
filled from the domain's event types; no import-time registration.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.app import ApiDependencies, create_app
from api.event_counts import EventCountsController, EventCountView
from api.operations import Operations
from domain.deployments import EVENT_TYPES as DEPLOYMENT_EVENT_TYPES
from domain.deployments import SCHEMA_VERSIONS as DEPLOYMENT_SCHEMA_VERSIONS
from eventstore.command_service import CommandService
from eventstore.consumers import ConsumerSettings, run_live_projection, topics_for
from eventstore.dead_letters import Handler
from eventstore.projection import Projection, ProjectionVersions
from eventstore.rebuild import rebuild
from eventstore.registry import EventRegistry
from eventstore.relay import KafkaRelay, ensure_topics, relay_lag
from eventstore.store import EventStore, create_pool
from orchestrator.metrics import Metrics
from orchestrator.settings import Settings, sqlalchemy_url
from projections.event_counts import projection as event_counts_projection
from projections.event_counts import read_live_event_counts

log = logging.getLogger("orchestrator")

# Every stream category the system writes; each is one Kafka topic.
CATEGORIES = ["deployment"]

PROJECTIONS: list[tuple[Projection, list[str]]] = [
    (event_counts_projection, CATEGORIES),
]
HANDLERS: list[tuple[Handler, list[str]]] = []


def event_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register_all(DEPLOYMENT_EVENT_TYPES, DEPLOYMENT_SCHEMA_VERSIONS)
    return registry


@dataclass
class System:
    settings: Settings
    pool: asyncpg.Pool
    engine: AsyncEngine
    store: EventStore
    registry: EventRegistry
    commands: CommandService
    relay: KafkaRelay
    metrics: Metrics
    app: Litestar
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def projection(self, name: str) -> tuple[Projection, list[str]]:
        for projection, categories in PROJECTIONS:
            if projection.NAME == name:
                return projection, categories
        known = ", ".join(p.NAME for p, _ in PROJECTIONS)
        raise KeyError(f"no projection named {name!r} (known: {known})")

    def handler(self, name: str) -> Handler:
        for handler, _ in HANDLERS:
            if handler.NAME == name:
                return handler
        raise KeyError(f"no handler named {name!r}")

    async def close(self) -> None:
        await self.engine.dispose()
        await self.pool.close()


async def build(settings: Settings) -> System:
    pool = await create_pool(settings.database_url)
    engine = create_async_engine(sqlalchemy_url(settings.database_url), pool_size=10,
                                 max_overflow=10)
    store = EventStore(pool)
    registry = event_registry()
    commands = CommandService(store, registry)
    relay = KafkaRelay(store, bootstrap=settings.kafka_bootstrap,
                       topic_prefix=settings.topic_prefix, partitions=settings.topic_partitions)
    metrics = Metrics()

    async def read_event_counts() -> list[EventCountView]:
        async with engine.connect() as conn:
            rows = await read_live_event_counts(conn)
        return [EventCountView(category=r.category, type=r.type, count=r.count,
                               last_position=r.last_position,
                               last_recorded_at=r.last_recorded_at) for r in rows]

    async def postgres_ready() -> dict[str, object]:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        return {}

    async def kafka_ready() -> dict[str, object]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                    request_timeout_ms=3000)
        await asyncio.wait_for(admin.start(), 5)
        try:
            return {"topics": len(await asyncio.wait_for(admin.list_topics(), 5))}
        finally:
            await admin.close()

    async def relay_ready() -> dict[str, object]:
        return {"lagEvents": await relay_lag(store), "active": relay.stats.holds_lock}

    operations = Operations(
        readiness_probes={"postgres": postgres_ready, "kafka": kafka_ready,
                          "relay": relay_ready},
        metrics_registry=metrics.registry,
        refresh_metrics=lambda: metrics.refresh(store, relay),
    )
    app = create_app(ApiDependencies(
        operations=operations,
        extra={"event_counts_reader": read_event_counts},
        route_handlers=[EventCountsController],
    ), base_path=settings.api_base_path)
    return System(settings=settings, pool=pool, engine=engine, store=store, registry=registry,
                  commands=commands, relay=relay, metrics=metrics, app=app)


def consumer_settings(settings: Settings) -> ConsumerSettings:
    return ConsumerSettings(client_id=f"{settings.topic_prefix}-orchestrator")


async def ensure_projections_built(system: System) -> None:
    """A projection with no live version yet is built from the log first."""
    versions = ProjectionVersions(system.engine)
    for projection, categories in PROJECTIONS:
        if await versions.live(projection.NAME) is None:
            log.info("building projection %s from the log", projection.NAME)
            await rebuild(projection, store=system.store, engine=system.engine,
                          bootstrap_servers=system.settings.kafka_bootstrap,
                          topic_prefix=system.settings.topic_prefix, categories=categories,
                          registry=system.registry, settings=consumer_settings(system.settings))


async def run(system: System, stop: asyncio.Event) -> None:
    """Everything in one process until `stop` is set: relay, projections, handlers, API."""
    settings = system.settings
    await ensure_topics(settings.kafka_bootstrap,
                        topics_for(settings.topic_prefix, CATEGORIES), settings.topic_partitions)
    system.tasks.append(asyncio.create_task(system.relay.run(stop), name="relay"))
    await ensure_projections_built(system)
    for projection, categories in PROJECTIONS:
        system.tasks.append(asyncio.create_task(run_live_projection(
            projection, stop, engine=system.engine,
            bootstrap_servers=settings.kafka_bootstrap,
            topics=topics_for(settings.topic_prefix, categories), registry=system.registry,
            settings=consumer_settings(settings)), name=f"projection:{projection.NAME}"))
    server = uvicorn.Server(uvicorn.Config(
        system.app, host=settings.api_host, port=settings.api_port, log_config=None,
        access_log=False, proxy_headers=True, forwarded_allow_ips="127.0.0.1"))
    serving = asyncio.create_task(server.serve(), name="api")
    await stop.wait()
    server.should_exit = True
    await serving
    await asyncio.gather(*system.tasks, return_exceptions=True)
