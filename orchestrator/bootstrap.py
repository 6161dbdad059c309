"""Explicit wiring: every component is built here and nowhere else.

The projection registry is a plain list (PROJECTIONS); side-effect handlers hold clients
and the command service, so build() makes them (System.handlers). The event registry is
filled from the domain's event types; no import-time registration.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta  # provider ranking (issue 4)
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import sqlalchemy as sa  # issue 5 supporting
import uvicorn
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.admin.audit import AuditController  # issue 7
from api.admin.statistics import AdminStatisticsController, UserStatisticsController  # issue 7
from api.app import ApiDependencies, create_app
from api.audit import AUDIT_ROUTE_HANDLERS  # issue 7
from api.auth import Authenticator, Authorizer, build_authorizer

# --- data management (issue 6) ---
from api.data.ports import DataApi, ReplicationView
from api.data.replications import ROUTE_HANDLERS as DATA_ROUTE_HANDLERS
from api.data.replications import app_state as data_app_state
from api.event_counts import EventCountsController, EventCountView
from api.legacy.common import DECIDER, view_of  # issue 5 supporting
from api.legacy.ports import (
    DeployerInfo,
    DeploymentDetails,
    DeploymentQuery,
    DeploymentView,
    LegacyApi,
    LegacySettings,
    NoDeployerInfo,
    ResourceView,
    TemplateChecker,
    TypeHierarchy,
)
from api.legacy.routes import ROUTE_HANDLERS as LEGACY_ROUTE_HANDLERS
from api.legacy.routes import app_state as legacy_app_state
from api.legacy.shapes import deployment_json  # issue 5 supporting
from api.operations import Operations

# ---- provider ingestion and read models (issue 4, part A)
from api.providers.ingestion import ProviderIngestion
from api.providers.ports import (
    FlavorRow,
    ImageRow,
    ProviderRow,
    ProvidersApi,
    QuotaRow,
    ScopeRow,
    SiteRow,
)
from api.providers.routes import ROUTE_HANDLERS as PROVIDER_ROUTE_HANDLERS
from api.providers.routes import app_state as providers_app_state

# ---- end provider ingestion and read models
from domain.deployments import EVENT_TYPES as DEPLOYMENT_EVENT_TYPES
from domain.deployments import SCHEMA_VERSIONS as DEPLOYMENT_SCHEMA_VERSIONS
from domain.deployments import stream_id  # issue 5 supporting
from domain.providers import EVENT_TYPES as PROVIDER_EVENT_TYPES
from domain.providers import SCHEMA_VERSIONS as PROVIDER_SCHEMA_VERSIONS

# ---- provider ranking (issue 4)
from domain.providers.selection import SuccessStats, parse_rse_sites
from domain.providers.state import ProviderState
from domain.providers.usage import USAGE_EVENT_TYPES, USAGE_SCHEMA_VERSIONS, QuotaUsageState
from domain.replications import EVENT_TYPES as REPLICATION_EVENT_TYPES
from domain.replications import SCHEMA_VERSIONS as REPLICATION_SCHEMA_VERSIONS
from eventstore.command_service import CommandService
from eventstore.consumers import (
    ConsumerSettings,
    HandlerRunner,
    projection_consumer,
    run_live_projection,
    topics_for,
)
from eventstore.dead_letters import Handler
from eventstore.projection import Projection, ProjectionVersions, live_version, versioned_tables
from eventstore.rebuild import rebuild
from eventstore.registry import EventRegistry
from eventstore.relay import KafkaRelay, ensure_topics, partition_for, relay_lag
from eventstore.store import EventStore, create_pool
from handlers import callbacks, credentials, monitoring_log, stuck_sweeper  # issue 5 supporting
from handlers.external_ranker import KafkaExternalRanker
from handlers.feeder_ingest import FeederConsumer
from handlers.im_deployer import ImDeployer, ImDeployerInfo, ImDeployerSettings  # issue 5
from handlers.ranking import DataLocator, NoDataLocator, RankingHandler
from handlers.rucio_client import RucioClient
from handlers.rucio_locator import RucioDataLocator
from handlers.rucio_replicator import FollowPolicy, RucioReplicator
from handlers.site_config import SitesFile  # issue 5

# ---- end provider ranking
from orchestrator.audit_wiring import AuditLog, StatisticsReader  # issue 7
from orchestrator.metrics import Metrics

# --- end data management ---
from orchestrator.read_your_writes import (
    RecordingCommandService,
    WrittenVersions,
    consumer_reached,
    event_log_position,
)
from orchestrator.settings import Settings, database_engine
from projections import airanker_dataset as airanker_dataset_view
from projections import deployments as deployments_view
from projections import provider_capacity as provider_capacity_view
from projections import provider_catalogue as provider_catalogue_view
from projections import provider_states as provider_states_view
from projections import replications as replications_view
from projections import resources as resources_view
from projections import site_success as site_success_view
from projections.event_counts import projection as event_counts_projection
from projections.event_counts import read_live_event_counts
from projections.statistics import projection as statistics_projection  # issue 7
from tosca import TemplateValidator, default_types_dir

log = logging.getLogger("orchestrator")

# Every stream category the system writes; each is one Kafka topic. Quota usage samples
# have their own category so that they never flood the provider streams.
CATEGORIES = ["deployment", "provider", "quotausage", "replication"]  # replication: issue 6

PROJECTIONS: list[tuple[Projection, list[str]]] = [
    (event_counts_projection, CATEGORIES),
    (deployments_view.projection, ["deployment"]),
    (resources_view.projection, ["deployment"]),
    # provider ingestion (issue 4, A): the scheduling-first catalogue, capacity
    (provider_catalogue_view.projection, ["provider"]),
    (provider_capacity_view.projection, ["provider", "quotausage"]),
    (replications_view.projection, ["replication"]),  # data management (issue 6)
    (statistics_projection, ["deployment"]),  # usage statistics (issue 7)
    # provider ranking (issue 4): the catalogue selection reads, success rates, AI dataset
    (provider_states_view.projection, ["provider", "quotausage"]),
    (site_success_view.projection, ["deployment"]),
    (airanker_dataset_view.projection, ["deployment"]),
]


def event_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register_all(DEPLOYMENT_EVENT_TYPES, DEPLOYMENT_SCHEMA_VERSIONS)
    registry.register_all(PROVIDER_EVENT_TYPES, PROVIDER_SCHEMA_VERSIONS)
    registry.register_all(REPLICATION_EVENT_TYPES, REPLICATION_SCHEMA_VERSIONS)  # issue 6
    # quota usage samples (read by the provider_states projection, issue 4)
    registry.register_all(USAGE_EVENT_TYPES, USAGE_SCHEMA_VERSIONS)
    return registry


# ---------------------------------------------------------------- read models for the API


class LiveVersion:
    """The live build number of a projection, re-read at most every ``ttl`` seconds (a
    rebuild's switch reaches readers within that time; retired tables are kept meanwhile)."""

    def __init__(self, name: str, ttl: float = 1.0) -> None:
        self.name = name
        self.ttl = ttl
        self._version: int | None = None
        self._checked = 0.0

    async def get(self, conn: AsyncConnection) -> int | None:
        now = time.monotonic()
        if self._version is None or now - self._checked > self.ttl:
            self._version = await live_version(conn, self.name)
            self._checked = now
        return self._version

    async def read(self, engine: AsyncEngine, query: Callable[..., Awaitable[Any]],
                   *arguments: Any, **keywords: Any) -> Any:
        """``query(conn, version, *arguments, **keywords)`` on the live build; None while
        nothing is built yet."""
        async with engine.connect() as conn:
            version = await self.get(conn)
            if version is None:
                return None
            return await query(conn, version, *arguments, **keywords)


class DeploymentsReader:
    """The API's DeploymentReadModel over the live build of the deployments projection.

    With ``written`` (read-your-writes, orchestrator/read_your_writes.py) a read of a
    deployment this process just changed waits, bounded, until its row shows the change."""

    def __init__(self, engine: AsyncEngine, written: WrittenVersions | None = None) -> None:
        # Reads run in autocommit: no BEGIN/ROLLBACK round trips around every request
        # (each statement sees its own READ COMMITTED snapshot either way).
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.live = LiveVersion(deployments_view.NAME)
        self.written = written

    async def _row(self, conn: AsyncConnection, version: int,
                   deployment_id: str) -> dict[str, Any] | None:
        write = (self.written.pending(deployments_view.NAME, deployment_id)
                 if self.written is not None else None)
        if write is None or self.written is None:
            return await deployments_view.get_deployment(conn, version, deployment_id)
        written = self.written

        async def check() -> tuple[bool, dict[str, Any] | None]:
            row = await deployments_view.get_deployment(conn, version, deployment_id)
            shown = row is not None and row["stream_version"] >= write.version
            if shown and row is not None:
                written.seen(deployments_view.NAME, deployment_id, row["stream_version"])
            return shown, row

        return await written.wait(check)

    async def get(self, deployment_id: str) -> DeploymentView | None:
        async with self.engine.connect() as conn:
            version = await self.live.get(conn)
            if version is None:
                return None
            row = await self._row(conn, version, deployment_id)
        return msgspec.convert(row, DeploymentView) if row is not None else None

    async def details(self, deployment_id: str) -> DeploymentDetails | None:
        async with self.engine.connect() as conn:
            version = await self.live.get(conn)
            if version is None:
                return None
            await self._row(conn, version, deployment_id)  # read-your-writes first
            row = await deployments_view.get_deployment_details(conn, version, deployment_id)
        return msgspec.convert(row, DeploymentDetails) if row is not None else None

    async def list(self, query: DeploymentQuery) -> tuple[list[DeploymentView], int]:
        arguments = msgspec.structs.asdict(query)
        async with self.engine.connect() as conn:
            version = await self.live.get(conn)
            if version is None:
                return [], 0
            if self.written is not None:
                await self._wait_for_owner(conn, version, query)
            rows, total = await deployments_view.list_deployments(conn, version, **arguments)
        return [msgspec.convert(row, DeploymentView) for row in rows], total

    async def _wait_for_owner(self, conn: AsyncConnection, version: int,
                              query: DeploymentQuery) -> None:
        """Until the listed owner's recent writes by this process are in the view."""
        assert self.written is not None
        written = self.written
        pending = written.pending_of_owner(deployments_view.NAME, query.owner_issuer,
                                           query.owner_subject)
        if not pending:
            return
        main = versioned_tables(deployments_view.projection, version)[0]

        async def check() -> tuple[bool, None]:
            rows = await conn.execute(select(main.c.id, main.c.stream_version)
                                      .where(main.c.id.in_(list(pending))))
            for row in rows:
                if row.stream_version >= pending[row.id]:
                    written.seen(deployments_view.NAME, row.id, row.stream_version)
                    del pending[row.id]
            return not pending, None

        await written.wait(check)


class ResourcesReader:
    """The API's ResourceReadModel over the live build of the resources projection.

    With ``written``, a read of a deployment this process just changed waits, bounded,
    until the resources consumer has passed the write's log position on the deployment
    stream's partition (``topic``, ``partitions``: where the relay publishes it)."""

    def __init__(self, engine: AsyncEngine, written: WrittenVersions | None = None, *,
                 topic: str = "", partitions: int = 1) -> None:
        self.engine = engine
        self.live = LiveVersion(resources_view.NAME)
        self.written = written
        self.topic = topic
        self.partitions = partitions

    async def _caught_up(self, conn: AsyncConnection, version: int,
                         deployment_id: str) -> None:
        write = (self.written.pending(resources_view.NAME, deployment_id)
                 if self.written is not None else None)
        if write is None or self.written is None:
            return
        written = self.written
        if write.log_position is None:
            write.log_position = await event_log_position(conn, write.stream_id,
                                                          write.version)
        log_position = write.log_position
        if log_position is None:
            return
        consumer = projection_consumer(resources_view.NAME, version)
        partition = partition_for(write.stream_id, self.partitions)

        async def check() -> tuple[bool, None]:
            reached = await consumer_reached(conn, consumer, self.topic, partition,
                                             log_position)
            if reached:
                written.seen(resources_view.NAME, deployment_id, write.version)
            return reached, None

        await written.wait(check)

    async def get(self, deployment_id: str, resource_id: str) -> ResourceView | None:
        async with self.engine.connect() as conn:
            version = await self.live.get(conn)
            if version is None:
                return None
            await self._caught_up(conn, version, deployment_id)
            row = await resources_view.get_resource(conn, version, deployment_id, resource_id)
        return msgspec.convert(row, ResourceView) if row is not None else None

    async def list(self, deployment_id: str, *, node_types: Sequence[str] | None,
                   sort: Sequence[tuple[str, bool]], offset: int,
                   limit: int) -> tuple[list[ResourceView], int]:
        async with self.engine.connect() as conn:
            version = await self.live.get(conn)
            if version is None:
                return [], 0
            await self._caught_up(conn, version, deployment_id)
            rows, total = await resources_view.list_resources(
                conn, version, deployment_id, node_types=node_types, sort=sort, offset=offset,
                limit=limit)
        return [msgspec.convert(row, ResourceView) for row in rows], total


# ---------------------------------------------------------------- provider ranking (issue 4)


class SchedulingCatalogueReader:
    """handlers.ranking.SchedulingCatalogue over the provider_states and site_success
    projections. Decoded provider states are cached by stream version: a ranking reads the
    versions (one small query) and decodes only the providers that changed since."""

    def __init__(self, engine: AsyncEngine, *, success_window: timedelta = timedelta(days=30),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.success_window = success_window
        self.clock = clock
        self.live_states = LiveVersion(provider_states_view.NAME)
        self.live_success = LiveVersion(site_success_view.NAME)
        self._build: int | None = None
        self._providers: dict[str, tuple[int, ProviderState]] = {}
        self._usage: dict[str, tuple[int, QuotaUsageState]] = {}
        self._refreshing: asyncio.Task[None] | None = None

    async def _refresh(self) -> None:
        # Concurrent readers (providers() and usage() of one ranking) share one refresh.
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.create_task(self._read_changes())
        await asyncio.shield(task)

    async def _read_changes(self) -> None:
        async with self.engine.connect() as conn:
            build = await self.live_states.get(conn)
            if build != self._build:
                self._build, self._providers, self._usage = build, {}, {}
            if build is None:
                return
            provider_versions, usage_versions = await provider_states_view.stream_versions(
                conn, build)
            for cache, versions, load in (
                    (self._providers, provider_versions, provider_states_view.provider_states),
                    (self._usage, usage_versions, provider_states_view.usage_states)):
                for gone in set(cache) - set(versions):
                    del cache[gone]
                stale = [p for p, v in versions.items() if cache.get(p, (None,))[0] != v]
                cache.update(await load(conn, build, stale))  # type: ignore[operator]

    async def providers(self) -> Sequence[ProviderState]:
        await self._refresh()
        return [state for _, state in self._providers.values()]

    async def usage(self) -> Sequence[QuotaUsageState]:
        await self._refresh()
        return [state for _, state in self._usage.values()]

    async def success_stats(self, template_type: str | None) -> Sequence[SuccessStats]:
        stats = await self.live_success.read(self.engine, site_success_view.success_stats,
                                             template_type,
                                             since=self.clock() - self.success_window)
        return stats or []


# ---------------------------------------------------------------- data management (issue 6)


class ReplicationsReader:
    """The replications view for the API (``ReplicationReadModel``) and for the Rucio
    replicator (``ReplicationIndex``: what to resume, who else holds a rule)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.live = LiveVersion(replications_view.NAME)

    async def get(self, replication_id: str) -> ReplicationView | None:
        row = await self.live.read(self.engine, replications_view.get_replication,
                                   replication_id)
        return msgspec.convert(row, ReplicationView) if row is not None else None

    async def list(self, *, owner_issuer: str | None, owner_subject: str | None,
                   deployment_id: str | None, offset: int,
                   limit: int) -> tuple[list[ReplicationView], int]:
        rows, total = await self.live.read(
            self.engine, replications_view.list_replications, owner_issuer=owner_issuer,
            owner_subject=owner_subject, deployment_id=deployment_id, offset=offset,
            limit=limit) or ([], 0)
        return [msgspec.convert(row, ReplicationView) for row in rows], total

    async def unsettled(self) -> list[str]:
        async with self.engine.connect() as conn:
            version = await live_version(conn, replications_view.NAME)
            if version is None:
                return []
            return await replications_view.unsettled_ids(conn, version)

    async def rule_holders(self, rule_id: str, *, excluding: str) -> list[str]:
        async with self.engine.connect() as conn:
            version = await live_version(conn, replications_view.NAME)
            if version is None:
                return []
            return await replications_view.rule_holders(conn, version, rule_id,
                                                        excluding=excluding)


def rucio_client(settings: Settings) -> RucioClient | None:
    """The replicator's Rucio client (None: data management is off)."""
    if not settings.rucio_url:
        return None
    if not settings.rucio_username or not settings.rucio_password_file:
        raise SystemExit("ORCH_RUCIO_URL needs ORCH_RUCIO_USERNAME and ORCH_RUCIO_PASSWORD_FILE")
    try:
        password = Path(settings.rucio_password_file).read_text().strip()
    except OSError as error:
        raise SystemExit(f"cannot read ORCH_RUCIO_PASSWORD_FILE: {error.strerror}") from None
    return RucioClient(settings.rucio_url, account=settings.rucio_account,
                       username=settings.rucio_username, password=password)


# ---------------------------------------------------------------- provider reads (issue 4, A)


class ProviderReadsReader:
    """api.providers.ports.ProviderReadModel over the live builds of the provider_catalogue
    and provider_capacity projections (also the Feeder consumer's ProviderDirectory)."""

    def __init__(self, engine: AsyncEngine) -> None:
        # autocommit: no BEGIN/ROLLBACK round trips around every read
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.catalogue = LiveVersion(provider_catalogue_view.NAME)
        self.capacity = LiveVersion(provider_capacity_view.NAME)

    async def _catalogue(self, query: Callable[..., Any], **arguments: Any) -> list[Any]:
        return list(await self.catalogue.read(self.engine, query, **arguments) or [])

    async def providers(self) -> list[ProviderRow]:
        rows = await self._catalogue(provider_catalogue_view.list_providers)
        return [msgspec.convert(r, ProviderRow) for r in rows]

    async def provider(self, provider_id: str) -> ProviderRow | None:
        rows = await self._catalogue(provider_catalogue_view.list_providers,
                                     provider_id=provider_id)
        return msgspec.convert(rows[0], ProviderRow) if rows else None

    async def sites(self, *, issuer: str, group: str, provider_id: str | None = None,
                    region: str | None = None) -> list[SiteRow]:
        rows = await self._catalogue(provider_catalogue_view.list_sites, issuer=issuer,
                                     group=group, provider_id=provider_id, region=region)
        return [msgspec.convert(r, SiteRow) for r in rows]

    async def flavors(self, *, provider_id: str, region: str,
                      project_id: str) -> list[FlavorRow]:
        rows = await self._catalogue(provider_catalogue_view.site_items, kind="flavors",
                                     provider_id=provider_id, region=region,
                                     project_id=project_id)
        return [msgspec.convert(r, FlavorRow) for r in rows]

    async def images(self, *, provider_id: str, region: str,
                     project_id: str) -> list[ImageRow]:
        rows = await self._catalogue(provider_catalogue_view.site_items, kind="images",
                                     provider_id=provider_id, region=region,
                                     project_id=project_id)
        return [msgspec.convert(r, ImageRow) for r in rows]

    async def scopes(self, *, provider_id: str, region: str | None = None) -> list[ScopeRow]:
        rows = await self._catalogue(provider_catalogue_view.list_scopes,
                                     provider_id=provider_id, region=region)
        return [msgspec.convert(r, ScopeRow) for r in rows]

    async def quotas(self, *, provider_id: str, region: str | None = None,
                     project_id: str | None = None) -> list[QuotaRow]:
        rows = await self.capacity.read(self.engine, provider_capacity_view.site_capacity,
                                        provider_id=provider_id, region=region,
                                        project_id=project_id) or []
        return [msgspec.convert(r, QuotaRow) for r in rows]

    async def provider_for_registry_name(self, name: str, provider_type: str) -> str | None:
        found: str | None = await self.catalogue.read(
            self.engine, provider_catalogue_view.provider_for_registry_name, name,
            provider_type)
        return found


# ---------------------------------------------------------------- TOSCA


class LazyTemplateValidator:
    """The TOSCA validator, its worker processes started on first use (operator commands
    that build the system never validate anything)."""

    def __init__(self, factory: Callable[[], TemplateValidator]) -> None:
        self._factory = factory
        self._validator: TemplateValidator | None = None
        self._lock = threading.Lock()

    def _get(self) -> TemplateValidator:
        with self._lock:
            if self._validator is None:
                self._validator = self._factory()
            return self._validator

    async def validate(self, template_text: str,
                       inputs: Mapping[str, Any] | None = None) -> Any:
        validator = self._validator
        if validator is None:
            validator = await asyncio.to_thread(self._get)
        return await validator.validate(template_text, inputs)

    def close(self) -> None:
        if self._validator is not None:
            self._validator.close()


_NORMATIVE_TYPES = "toscaparser/elements/TOSCA_definition_1_0.yaml"


class ToscaTypeHierarchy:
    """``derived_from`` links of node types: the TOSCA normative types (from tosca-parser)
    and every type file in the TOSCA types directory, read once on first use."""

    def __init__(self, types_dir: str | None) -> None:
        self.types_dir = types_dir
        self._parents: dict[str, str] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        with self._lock:
            if self._parents is None:
                self._parents = _read_derived_from(self.types_dir)
            return self._parents

    def is_derived_from(self, node_type: str, base: str) -> bool:
        parents = self._load()
        seen: set[str] = set()
        current: str | None = node_type
        while current is not None and current not in seen:
            if current == base:
                return True
            seen.add(current)
            current = parents.get(current)
        return False

    def derived_types(self, base: str) -> frozenset[str]:
        parents = self._load()
        return frozenset({base} | {t for t in parents if self.is_derived_from(t, base)})


def _read_derived_from(types_dir: str | None) -> dict[str, str]:
    files: list[Path] = []
    for entry in package_metadata.files("tosca-parser") or []:
        if str(entry) == _NORMATIVE_TYPES:
            files.append(Path(str(entry.locate())))
    if types_dir and Path(types_dir).is_dir():
        files.extend(sorted(Path(types_dir).rglob("*.y*ml")))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    parents: dict[str, str] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            if "node_types" not in text or "derived_from" not in text:
                continue
            document = yaml.load(text, Loader=loader)  # a safe loader (C or Python)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        node_types = document.get("node_types") if isinstance(document, dict) else None
        if not isinstance(node_types, dict):
            continue
        for name, definition in node_types.items():
            parent = definition.get("derived_from") if isinstance(definition, dict) else None
            if isinstance(name, str) and isinstance(parent, str) and name != parent:
                parents.setdefault(name, parent)
    return parents


# ---------------------------------------------------------------- issue 5 supporting parts


class CallbackDocuments:
    """handlers.callbacks.DeploymentDocuments: a deployment as of a stream version, in the
    legacy JSON the API renders, without links (as the legacy callbacks)."""

    def __init__(self, store: EventStore, registry: EventRegistry) -> None:
        self.store = store
        self.registry = registry

    async def callback_document(self, deployment_id: str,
                                version: int) -> callbacks.CallbackDocument | None:
        state = DECIDER.initial_state()
        for recorded in await self.store.read_stream(stream_id(deployment_id),
                                                     to_version=version):
            state = DECIDER.evolve(state, self.registry.decode_recorded(recorded))
        if not state.callback or state.status is None or state.created_at is None:
            return None
        body = msgspec.json.encode(deployment_json(view_of(state), None))
        return callbacks.CallbackDocument(url=state.callback, status=state.status.value,
                                          body=body)


class StuckCandidatesReader:
    """handlers.stuck_sweeper.StuckCandidates over the live deployments view."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.live = LiveVersion(deployments_view.NAME)

    async def stuck(self, *, now: Any, default_timeout_mins: int,
                    limit: int) -> list[stuck_sweeper.StuckCandidate]:
        async with self.engine.connect() as conn:
            version = await self.live.get(conn)
            if version is None:
                return []
            main = deployments_view.projection.tables(version)[0]
            timeout = sa.func.make_interval(
                0, 0, 0, 0, 0, sa.func.coalesce(main.c.timeout_mins, default_timeout_mins))
            rows = await conn.execute(
                sa.select(main.c.id, main.c.status, main.c.updated_at, main.c.timeout_mins)
                .where(main.c.status.in_(["CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS",
                                          "DELETE_IN_PROGRESS"]),
                       main.c.updated_at < sa.literal(now) - timeout)
                .order_by(main.c.updated_at).limit(limit))
            return [stuck_sweeper.StuckCandidate(
                deployment_id=row.id, status=row.status, updated_at=row.updated_at,
                timeout_mins=row.timeout_mins) for row in rows]


# ---------------------------------------------------------------- the system


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
    legacy: LegacyApi
    authenticator: Authenticator
    authorizer: Authorizer
    validator: LazyTemplateValidator | None = None
    # Side-effect handlers built by build() (they hold clients and the command service).
    handlers: list[tuple[Handler, list[str]]] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    rucio: RucioClient | None = None  # data management (issue 6), closed with the system
    # Periodic sweep failing stuck deployments (issue 5 supporting; started by
    # start_components).
    sweeper: stuck_sweeper.StuckSweeper | None = None
    # The credential store's UserCredentials (the IM deployer's port).
    user_credentials: credentials.DeploymentCredentials | None = None

    def projection(self, name: str) -> tuple[Projection, list[str]]:
        return _projection_named(name)

    def handler(self, name: str) -> Handler:
        for handler, _ in self.handlers:
            if handler.NAME == name:
                return handler
        raise KeyError(f"no handler named {name!r}")

    async def close(self) -> None:
        await self.authenticator.aclose()
        await self.authorizer.aclose()
        if self.rucio is not None:  # issue 6
            await self.rucio.aclose()
        if self.validator is not None:
            self.validator.close()
        await self.engine.dispose()
        await self.pool.close()


def _projection_named(name: str) -> tuple[Projection, list[str]]:
    """A registered projection and its categories (audit replays; KeyError if unknown)."""
    for projection, categories in PROJECTIONS:
        if projection.NAME == name:
            return projection, categories
    raise KeyError(f"no projection named {name!r} (known: "
                   f"{', '.join(p.NAME for p, _ in PROJECTIONS)})")


def build_info() -> dict[str, Any]:
    """GET /info: a JSON object in the spirit of the Spring Boot actuator's build info."""
    try:
        version = package_metadata.version("paas-orchestrator")
    except package_metadata.PackageNotFoundError:
        version = "0.0.0"
    return {"build": {"version": version, "artifact": "orchestrator",
                      "name": "PaaS Orchestrator (event-sourced)", "group": "paas-orchestrator"},
            "projectVersion": version}


async def build(settings: Settings, *, validator: TemplateChecker | None = None,
                type_hierarchy: TypeHierarchy | None = None,
                deployer_info: DeployerInfo | None = None) -> System:
    """Every component, wired. ``validator``, ``type_hierarchy`` and ``deployer_info``
    replace the defaults (tests share one validator across systems)."""
    pool = await create_pool(settings.database_url)
    engine = database_engine(settings.database_url, pool_size=10, max_overflow=10)
    store = EventStore(pool)
    registry = event_registry()
    # Read-your-writes: the command service remembers this process's deployment writes.
    written = WrittenVersions()
    commands = RecordingCommandService(store, registry, written=written)
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
        refresh_metrics=lambda: metrics.refresh(store, relay, settings.kafka_bootstrap),
    )

    authenticator = Authenticator(settings.auth)
    authorizer = build_authorizer(settings.auth)
    own_validator: LazyTemplateValidator | None = None
    if validator is None:
        own_validator = LazyTemplateValidator(
            lambda: TemplateValidator(workers=settings.tosca_workers))
        validator = own_validator
    # ---- issue 5 supporting parts: credential store, callbacks, monitoring log, stuck sweep
    credential_store = credentials.CredentialStore(
        engine, credentials.CredentialKeys.parse(settings.credential_keys)
        if settings.credential_keys else None)
    token_client = credentials.OidcTokenRefresher(
        client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret)
    credential_capture = credentials.CredentialCapture(
        credential_store, token_client if settings.credential_token_exchange else None)
    # The IM deployer's UserCredentials port.
    user_credentials = credentials.DeploymentCredentials(credential_store, token_client)
    supporting_handlers: list[tuple[Handler, list[str]]] = [
        (credentials.CredentialCleanup(credential_store), ["deployment"]),
        (callbacks.CallbackNotifier(engine, CallbackDocuments(store, registry),
                                    callbacks.CallbackPolicy(
                                        attempts=settings.callback_attempts,
                                        timeout_s=settings.callback_timeout_s,
                                        backoff_s=settings.callback_backoff_s,
                                        secret=settings.callback_secret)), ["deployment"]),
        (monitoring_log.MonitoringLog(store, registry), ["deployment"]),
    ]
    sweeper = stuck_sweeper.StuckSweeper(
        StuckCandidatesReader(engine), store, registry,
        default_timeout_mins=settings.stuck_timeout_mins,
        interval_s=settings.stuck_sweep_interval_s)
    # ---- end issue 5 supporting parts
    configuration = {"orchestrator_url": "", **settings.configuration}
    if not configuration["orchestrator_url"]:
        configuration["orchestrator_url"] = (
            f"http://{settings.api_host}:{settings.api_port}{settings.api_base_path}")
    # ---- IM deployer (issue 5): runs when a sites file is configured; serves /extrainfo.
    im_deployer: ImDeployer | None = None
    if settings.im_sites_file:
        im_sites = SitesFile(settings.im_sites_file)
        im_deployer = ImDeployer(
            commands=commands, sites=im_sites.catalog,
            credentials=user_credentials,  # the credential store's UserCredentials port
            settings=ImDeployerSettings(instance=settings.topic_prefix))
        deployer_info = deployer_info or ImDeployerInfo(im_deployer)
    # ---- end IM deployer
    legacy = LegacyApi(
        deployments=DeploymentsReader(engine, written),
        resources=ResourcesReader(
            engine, written, topic=topics_for(settings.topic_prefix, ["deployment"])[0],
            partitions=settings.topic_partitions),
        commands=commands,
        authenticator=authenticator,
        auth_settings=settings.auth,
        authorizer=authorizer,
        validator=validator,
        credential_sink=credential_capture,  # issue 5 supporting
        types=type_hierarchy or ToscaTypeHierarchy(default_types_dir()),
        deployer_info=deployer_info or NoDeployerInfo(),
        settings=LegacySettings(
            base_path=settings.api_base_path, info=build_info(), configuration=configuration,
            require_user_group=settings.require_user_group,
            trust_forwarded_headers=settings.trust_forwarded_headers),
    )
    # ---- data management (issue 6): replicator and /data/replications when Rucio is set.
    replications_reader = ReplicationsReader(engine)
    rucio = rucio_client(settings)
    data_api = DataApi(replications=replications_reader, rucio_configured=rucio is not None)
    legacy.settings.accepts_data_requirements = rucio is not None
    replicator = None if rucio is None else RucioReplicator(
        commands, rucio, replications_reader,
        follow=FollowPolicy(initial=settings.rucio_poll_initial_s,
                            maximum=settings.rucio_poll_max_s))
    # ---- end data management
    app = create_app(ApiDependencies(
        operations=operations,
        extra={"event_counts_reader": read_event_counts,
               # statistics and audit ports (issue 7)
               "statistics_reader": StatisticsReader(engine),
               "audit_log": AuditLog(store, engine, registry, _projection_named)},
        route_handlers=[EventCountsController, *PROVIDER_ROUTE_HANDLERS,  # providers: issue 4, A
                        *LEGACY_ROUTE_HANDLERS,
                        # statistics and audit (issue 7)
                        AdminStatisticsController, UserStatisticsController, AuditController,
                        *AUDIT_ROUTE_HANDLERS,
                        # /data/replications (issue 6), only when a Rucio is configured
                        *(DATA_ROUTE_HANDLERS if rucio is not None else [])],
        state={**legacy_app_state(legacy), **data_app_state(data_api)},  # data: issue 6
    ), base_path=settings.api_base_path)
    # provider ingestion and reads (issue 4, A): their controllers' state
    app.state.update(providers_app_state(ProvidersApi(
        reads=ProviderReadsReader(engine), ingestion=ProviderIngestion(store, registry))))
    system = System(settings=settings, pool=pool, engine=engine, store=store, registry=registry,
                    commands=commands, relay=relay, metrics=metrics, app=app, legacy=legacy,
                    authenticator=authenticator, authorizer=authorizer, validator=own_validator,
                    handlers=list(supporting_handlers), sweeper=sweeper,
                    user_credentials=user_credentials)  # issue 5 supporting
    if replicator is not None:  # data management (issue 6)
        system.rucio = rucio
        system.handlers.append((replicator, ["deployment", "replication"]))
    if im_deployer is not None:  # IM deployer (issue 5)
        system.handlers.append((im_deployer, ["deployment"]))
    # ---- provider ranking (issue 4): the scheduler, when enabled (ORCH_RANKING)
    if settings.ranking_enabled:
        try:
            rse_sites = parse_rse_sites(settings.rse_sites)
        except ValueError as error:
            raise SystemExit(f"invalid ORCH_RSE_SITES: {error}") from None
        external_ranker = None
        if settings.ranker_request_topic and settings.ranker_answer_topic:
            external_ranker = KafkaExternalRanker(
                bootstrap_servers=settings.kafka_bootstrap,
                request_topic=settings.ranker_request_topic,
                answer_topic=settings.ranker_answer_topic,
                deadline_seconds=settings.ranker_deadline_s,
                client_id=f"{settings.topic_prefix}-ranking")
        # Rucio's DataLocator (handlers/rucio_locator.py) replaces this when configured.
        data_locator: DataLocator = (RucioDataLocator(rucio) if rucio is not None  # issue 6
                                     else NoDataLocator())
        system.handlers.append((RankingHandler(
            commands, SchedulingCatalogueReader(engine), locator=data_locator,
            rse_sites=rse_sites, external=external_ranker), ["deployment"]))
    # ---- end provider ranking
    return system


def consumer_settings(settings: Settings) -> ConsumerSettings:
    # Group ids carry the topic prefix: several systems can share one Kafka cluster.
    return ConsumerSettings(client_id=f"{settings.topic_prefix}-orchestrator",
                            group_prefix=f"{settings.topic_prefix}.")


async def ensure_projections_built(system: System,
                                   consumer: ConsumerSettings | None = None) -> None:
    """A projection with no live version yet, or whose live version another ``VERSION``
    (table shape) built, is built from the log first (blue/green: reads switch at the end)."""
    versions = ProjectionVersions(system.engine)
    consumer = consumer or consumer_settings(system.settings)

    async def build_one(projection: Projection, categories: list[str]) -> None:
        # Nothing live yet, or the live build has another table shape (VERSION was bumped).
        if await versions.needs_rebuild(projection):
            log.info("building projection %s from the log", projection.NAME)
            await rebuild(projection, store=system.store, engine=system.engine,
                          bootstrap_servers=system.settings.kafka_bootstrap,
                          topic_prefix=system.settings.topic_prefix, categories=categories,
                          registry=system.registry, settings=consumer)

    await asyncio.gather(*(build_one(p, c) for p, c in PROJECTIONS))


async def start_components(system: System, stop: asyncio.Event,
                           consumer: ConsumerSettings | None = None) -> None:
    """Topics, the relay, and every projection runner (live until ``stop``), in tasks."""
    settings = system.settings
    consumer = consumer or consumer_settings(settings)
    await ensure_topics(settings.kafka_bootstrap,
                        topics_for(settings.topic_prefix, CATEGORIES), settings.topic_partitions)
    system.tasks.append(asyncio.create_task(system.relay.run(stop), name="relay"))
    await ensure_projections_built(system, consumer)
    for projection, categories in PROJECTIONS:
        system.tasks.append(asyncio.create_task(run_live_projection(
            projection, stop, engine=system.engine,
            bootstrap_servers=settings.kafka_bootstrap,
            topics=topics_for(settings.topic_prefix, categories), registry=system.registry,
            settings=consumer), name=f"projection:{projection.NAME}"))
    if settings.feeder_topic:  # provider ingestion (issue 4, A): the Feeder's topic
        feeder = FeederConsumer(
            ProviderIngestion(system.store, system.registry), engine=system.engine,
            bootstrap_servers=settings.kafka_bootstrap, topic=settings.feeder_topic,
            settings=consumer, directory=ProviderReadsReader(system.engine))
        system.tasks.append(asyncio.create_task(feeder.run(stop), name="feeder-ingest"))
    for handler, categories in system.handlers:
        runner = HandlerRunner(
            handler, engine=system.engine, bootstrap_servers=settings.kafka_bootstrap,
            topics=topics_for(settings.topic_prefix, categories), registry=system.registry,
            settings=consumer)
        system.tasks.append(asyncio.create_task(runner.run(stop), name=f"handler:{handler.NAME}"))
        # Handlers with background work of their own (IM deployer: resumption, orphans).
        background = getattr(handler, "run_background", None)
        if background is not None:
            system.tasks.append(asyncio.create_task(background(stop),
                                                    name=f"background:{handler.NAME}"))
    if system.sweeper is not None:  # issue 5 supporting: stuck deployments
        system.tasks.append(asyncio.create_task(system.sweeper.run(stop), name="stuck-sweeper"))



async def run(system: System, stop: asyncio.Event) -> None:
    """Everything in one process until `stop` is set: relay, projections, handlers, API."""
    settings = system.settings
    await start_components(system, stop)
    server = uvicorn.Server(uvicorn.Config(
        system.app, host=settings.api_host, port=settings.api_port, log_config=None,
        access_log=False, proxy_headers=True, forwarded_allow_ips="127.0.0.1"))
    serving = asyncio.create_task(server.serve(), name="api")
    await stop.wait()
    server.should_exit = True
    await serving
    await asyncio.gather(*system.tasks, return_exceptions=True)
