"""Statistics and audit benchmarks (issue 7): statistics queries, deployment history,
state as of a time, statistics rebuild from the log, full hash-chain verification.

The log is filled with realistic deployment streams of ten events each (request,
scheduling, attempts, infrastructure, resources, completion or failure, update or deletion,
deployer logs) appended through ``append_events`` one stream per call by several writers.
The target scale is 1,000,000 deployments / 10,000,000 events; ``--deployments`` sets it
(docs/benchmarks.md says which scale the reported figures used and why).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from api.admin.ports import StatisticsQuery
from api.audit import entry
from bench.common import median, percentile
from domain.deployments import (
    CloudProviderEndpoint,
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentDeleted,
    DeploymentDeletionRequested,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentInfrastructureCreated,
    DeploymentLogUpdated,
    DeploymentRequested,
    DeploymentResourcesChanged,
    DeploymentScheduled,
    DeploymentStatus,
    DeploymentUpdateRequested,
    IaasType,
    NodeState,
    OperationKind,
    RankedSite,
    RequestedResources,
    Resource,
    Site,
    TemplateIdentity,
    fold,
    stream_id,
)
from domain.identity import Actor, system_actor
from eventstore.audit import verify_log
from eventstore.projection import ProjectionVersions, create_tables, versioned_tables
from eventstore.rebuild import drop_version, replay
from eventstore.records import Metadata
from eventstore.store import EventStore, create_pool
from orchestrator.audit_wiring import AuditLog, StatisticsReader
from orchestrator.bootstrap import event_registry
from orchestrator.settings import database_engine
from projections import statistics

S = DeploymentStatus
ISSUERS = ["https://iam-a.example/", "https://iam-b.example/"]
OWNERS = 1000
GROUPS = [f"group{i}" for i in range(20)]
TYPES = ["vm", "kubernetes", "jupyter", "spark", "docker"]
SITES = [Site(provider_id=f"prov-{i}", provider_name=f"SITE-{i}", region=f"r{i % 3}")
         for i in range(8)]
REASONS = ["quota exceeded", "image not found", "timeout", "network unreachable"]
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 365
DEPLOYER = system_actor("bench-deployer")
TEMPLATE = ("tosca_definitions_version: tosca_simple_yaml_1_0\n"
            "topology_template:\n  node_templates:\n    server:\n"
            "      type: tosca.nodes.indigo.Compute\n") * 3
ENDPOINT = CloudProviderEndpoint(cp_endpoint="https://keystone.example:5000/v3",
                                 iaas_type=IaasType.OPENSTACK)


def deployment_events(rng: random.Random) -> tuple[str, list[DeploymentEvent], Actor]:
    """Ten events of one deployment: 60% complete then updated, 25% fail, 15% deleted."""
    deployment_id = str(uuid.uuid4())
    issuer = ISSUERS[rng.random() < 0.3]
    owner = Actor(issuer=issuer, subject=f"user{rng.randrange(OWNERS)}")
    t = START + timedelta(seconds=rng.randrange(DAYS * 86400))
    kind = rng.random()
    first, second = rng.sample(SITES, 2)
    resources = RequestedResources(vms=1, vcpus=rng.choice([1, 2, 4, 8]),
                                   ram_mb=rng.choice([2048, 4096, 8192]),
                                   gpus=int(rng.random() < 0.1))
    template_type = rng.choice(TYPES)
    base: dict[str, Any] = {"deployment_id": deployment_id}

    def at(minutes: float) -> datetime:
        nonlocal t
        t += timedelta(minutes=minutes)
        return t

    events: list[DeploymentEvent] = [
        DeploymentRequested(**base, occurred_at=at(0), actor=owner, operation=1, owner=owner,
                            user_group=rng.choice(GROUPS), template=TEMPLATE,
                            template_identity=TemplateIdentity(name=f"{template_type}-tpl",
                                                               type=template_type,
                                                               hash="0" * 64),
                            requested_resources=resources),
        DeploymentScheduled(**base, occurred_at=at(0.1), actor=DEPLOYER, operation=1,
                            candidates=(RankedSite(site=first), RankedSite(site=second)),
                            ranking_method="bench"),
        DeploymentAttemptStarted(**base, occurred_at=at(0.1), actor=DEPLOYER, operation=1,
                                 attempt=1, site=first, cloud_provider_endpoint=ENDPOINT),
    ]
    if kind < 0.25:
        events += [
            DeploymentAttemptFailed(**base, occurred_at=at(5), actor=DEPLOYER, operation=1,
                                    attempt=1, site=first, reason=rng.choice(REASONS)),
            DeploymentAttemptStarted(**base, occurred_at=at(0.1), actor=DEPLOYER, operation=1,
                                     attempt=2, site=second),
            DeploymentAttemptFailed(**base, occurred_at=at(5), actor=DEPLOYER, operation=1,
                                    attempt=2, site=second, reason=rng.choice(REASONS)),
            DeploymentFailed(**base, occurred_at=at(0), actor=DEPLOYER, operation=1,
                             kind=OperationKind.CREATE, status=S.CREATE_FAILED,
                             reason=rng.choice(REASONS)),
            DeploymentDeletionRequested(**base, occurred_at=at(60), actor=owner, operation=2,
                                        previous_status=S.CREATE_FAILED),
            DeploymentDeleted(**base, occurred_at=at(1), actor=DEPLOYER, operation=2),
            DeploymentLogUpdated(**base, occurred_at=at(0), actor=DEPLOYER, log="failed"),
        ]
        return deployment_id, events, owner
    events += [
        DeploymentInfrastructureCreated(**base, occurred_at=at(1), actor=DEPLOYER, attempt=1,
                                        infrastructure_id=f"inf-{deployment_id[:8]}",
                                        site=first),
        DeploymentResourcesChanged(**base, occurred_at=at(3), actor=DEPLOYER, resources=(
            Resource(resource_id="vm-1", node_name="server", node_type="tosca.nodes.Compute",
                     state=NodeState.STARTED),)),
        DeploymentCompleted(**base, occurred_at=at(rng.uniform(2, 30)), actor=DEPLOYER,
                            operation=1, kind=OperationKind.CREATE, status=S.CREATE_COMPLETE,
                            attempt=1, site=first),
        DeploymentLogUpdated(**base, occurred_at=at(0), actor=DEPLOYER, log="done"),
    ]
    if kind < 0.4:
        events += [
            DeploymentDeletionRequested(**base, occurred_at=at(rng.uniform(60, 40000)),
                                        actor=owner, operation=2,
                                        previous_status=S.CREATE_COMPLETE),
            DeploymentDeleted(**base, occurred_at=at(2), actor=DEPLOYER, operation=2),
            DeploymentLogUpdated(**base, occurred_at=at(0), actor=DEPLOYER, log="deleted"),
        ]
    else:
        bigger = RequestedResources(vms=2, vcpus=resources.vcpus * 2, ram_mb=resources.ram_mb,
                                    gpus=resources.gpus)
        events += [
            DeploymentUpdateRequested(**base, occurred_at=at(rng.uniform(60, 40000)),
                                      actor=owner, operation=2,
                                      previous_status=S.CREATE_COMPLETE, template=TEMPLATE,
                                      template_identity=events[0].template_identity,  # type: ignore[attr-defined]
                                      requested_resources=bigger),
            DeploymentCompleted(**base, occurred_at=at(5), actor=DEPLOYER, operation=2,
                                kind=OperationKind.UPDATE, status=S.UPDATE_COMPLETE),
            DeploymentLogUpdated(**base, occurred_at=at(0), actor=DEPLOYER, log="updated"),
        ]
    return deployment_id, events, owner


async def fill(store: EventStore, deployments: int, *, writers: int = 6,
               seed: int = 7) -> tuple[list[str], int]:
    """Append ``deployments`` streams; returns their ids and the number of events."""
    registry = event_registry()
    rng = random.Random(seed)
    ids: list[str] = []
    appended = 0
    queue: asyncio.Queue[tuple[str, list[Any], Metadata] | None] = asyncio.Queue(maxsize=1000)

    async def writer() -> None:
        nonlocal appended
        while (item := await queue.get()) is not None:
            stream, events, metadata = item
            await store.append(stream, 0, events, metadata)
            appended += len(events)

    tasks = [asyncio.create_task(writer()) for _ in range(writers)]
    began = time.perf_counter()
    for index in range(deployments):
        deployment_id, events, owner = deployment_events(rng)
        ids.append(deployment_id)
        encoded = [registry.encode(e, str(uuid.uuid4())) for e in events]
        await queue.put((stream_id(deployment_id), encoded,
                         Metadata(actor_issuer=owner.issuer, actor_subject=owner.subject,
                                  correlation_id=deployment_id)))
        if index and index % 50_000 == 0:
            print(f"  filled {index:,} deployments ({appended:,} events, "
                  f"{appended / (time.perf_counter() - began):,.0f} events/s)", flush=True)
    for _ in tasks:
        await queue.put(None)
    await asyncio.gather(*tasks)
    return ids, appended


def _p99(samples: list[float]) -> float:
    return round(percentile(samples, 99) * 1000, 2)


def _random_query(rng: random.Random) -> StatisticsQuery:
    view = rng.choice(["deployments", "active", "outcomes", "failures", "resources"])
    first = date(2025, 1, 1) + timedelta(days=rng.randrange(300))
    span = rng.choice([7, 30, 90])
    interval = rng.choice(["day", "week", "month", "total"])
    if view == "resources":
        interval = "total"
    group_by = tuple(rng.sample(["group", "templateType", "provider", "status"],
                                rng.randrange(0, 3)))
    filters: dict[str, Any] = {}
    if rng.random() < 0.3:
        filters["user_group"] = rng.choice(GROUPS)
    if rng.random() < 0.3:
        filters["template_type"] = rng.choice(TYPES)
    if rng.random() < 0.2:
        filters["provider"] = rng.choice(SITES).provider_id
    return StatisticsQuery(view=view, owner_issuer=ISSUERS[0], start=first,  # type: ignore[arg-type]
                           end=first + timedelta(days=span), group_by=group_by,
                           interval=interval, **filters)  # type: ignore[arg-type]


PARTS = ("rebuild", "queries", "history", "verify")


async def run_audit(url: str, *, deployments: int = 100_000, queries: int = 300,
                    reuse: bool = False, parts: tuple[str, ...] = PARTS
                    ) -> list[dict[str, object]]:
    """``reuse``: keep the log a previous run filled (its scale wins over ``deployments``);
    ``parts``: which of ``PARTS`` to measure."""
    pool = await create_pool(url, min_size=4, max_size=12)
    store = EventStore(pool)
    engine = database_engine(url, pool_size=8)
    async with pool.acquire() as conn:
        existing = await conn.fetch(
            "SELECT substr(stream_id, 12) AS id FROM events WHERE type = 'deployment.requested'")
    if reuse and existing:
        ids = [row["id"] for row in existing]
        async with pool.acquire() as conn:
            events = int(await conn.fetchval("SELECT count(*) FROM events"))
        fill_seconds = float("nan")
        print(f"reusing the log: {len(ids):,} deployments, {events:,} events", flush=True)
    else:
        print(f"filling the log with {deployments:,} deployments ...", flush=True)
        began = time.perf_counter()
        ids, events = await fill(store, deployments)
        fill_seconds = time.perf_counter() - began
    async with pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE events")
    scale: dict[str, object] = {"deployments": len(ids), "events": events}
    if fill_seconds == fill_seconds:  # not NaN: this run filled the log
        scale["fill_events_per_s"] = round(events / fill_seconds)
    results: list[dict[str, object]] = []
    rng = random.Random(11)
    try:
        if "rebuild" in parts:
            results += await _rebuild_statistics(store, engine, scale)
        if "queries" in parts:
            results += await _query_statistics(engine, rng, queries, scale)
        if "history" in parts:
            results += await _history(store, engine, rng, ids, queries, scale)
        if "verify" in parts:
            # Three runs, the median reported: the first after a rebuild reads much of
            # the log from disk (this machine's page cache holds about 10 GB of it).
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                report = await verify_log(store)
                runs.append(events / (time.perf_counter() - t0))
                assert report.intact and report.events == events
            results.append({"name": "hash_verify_eps", "value": round(median(runs)),
                            "unit": "events/s", "target": ">= 200000",
                            "runs": [round(r) for r in runs], **scale})
    finally:
        await engine.dispose()
        await pool.close()
    return results


async def _rebuild_statistics(store: EventStore, engine: Any,
                              scale: dict[str, object]) -> list[dict[str, object]]:
    """Replay the log into a new statistics build and make it live (what `orchestrator
    rebuild statistics` does, minus its Kafka catch-up); the build it replaces is dropped."""
    versions = ProjectionVersions(engine)
    number = await versions.next_version(statistics.NAME)
    await versions.mark_building(statistics.NAME, number, code_version=statistics.VERSION)
    tables = versioned_tables(statistics.projection, number)
    async with engine.begin() as conn:
        await create_tables(conn, tables)
    print(f"rebuilding the statistics into v{number} ...", flush=True)
    result = await replay(statistics.projection, store=store, engine=engine, version=number,
                          tables=tables, registry=event_registry(), categories=["deployment"],
                          batch_size=5000, record_position=False)
    # The replay reads only the types statistics handles; the rate is over the whole log
    # it rebuilt from (what "from a log of 10M events" means), the handled ones beside it.
    log_events = int(scale["events"])  # type: ignore[call-overload]
    rebuild_eps = log_events / result.seconds
    print(f"  {log_events:,} log events ({result.events:,} of the types statistics "
          f"handles) in {result.seconds:,.0f} s: {rebuild_eps:,.0f}/s", flush=True)
    retired = await versions.mark_live(statistics.NAME, number)
    if retired is not None:
        await drop_version(engine, statistics.projection, retired)
    async with store.pool.acquire() as conn:
        for table in tables:
            await conn.execute(f"VACUUM ANALYZE {table.name}")
    return [{"name": "stats_rebuild_eps", "value": round(rebuild_eps), "unit": "events/s",
             "target": ">= 50000", **scale, "seconds": round(result.seconds, 1),
             "handled_events": result.events,
             "handled_events_per_s": round(result.events / result.seconds)}]


async def _query_statistics(engine: Any, rng: random.Random, queries: int,
                            scale: dict[str, object]) -> list[dict[str, object]]:
    """Random dashboard queries against the live statistics build, in two passes of
    different queries: the first right after the rebuild (and the VACUUM of the log,
    which pushes the read model's pages out of the caches), the second with the caches
    warmed by the first, as a dashboard in use keeps them. The second is the figure."""
    reader = StatisticsReader(engine, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    async def one_pass(rng: random.Random) -> tuple[list[float], dict[str, list[float]]]:
        samples: list[float] = []
        per_view: dict[str, list[float]] = {}
        for _ in range(queries):
            query = _random_query(rng)
            t0 = time.perf_counter()
            await reader.query(query)
            elapsed = time.perf_counter() - t0
            samples.append(elapsed)
            per_view.setdefault(query.view, []).append(elapsed)
        return samples, per_view

    cold, _ = await one_pass(rng)
    samples, per_view = await one_pass(random.Random(13))
    return [
        {"name": "stats_query_p99_ms", "value": _p99(samples), "unit": "ms",
         "target": "<= 50", **scale,
         "p99_by_view_ms": {view: _p99(values) for view, values in sorted(per_view.items())},
         "median_ms": round(median(samples) * 1000, 2),
         "first_pass_p99_ms": _p99(cold), "first_pass_median_ms": round(median(cold) * 1000, 2)},
    ]


async def _history(store: EventStore, engine: Any, rng: random.Random, ids: list[str],
                   queries: int, scale: dict[str, object]) -> list[dict[str, object]]:
    """A deployment's history, and its state as of the middle of its history."""
    registry = event_registry()
    audit = AuditLog(store, engine, registry, lambda name: (statistics.projection,
                                                            ["deployment"]))
    history: list[float] = []
    as_of: list[float] = []
    for _ in range(queries):
        deployment_id = rng.choice(ids)
        t0 = time.perf_counter()
        stream = await audit.stream(deployment_id)
        [entry(r, d) for r, d in stream]
        history.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stream = await audit.stream(deployment_id)
        cut = stream[len(stream) // 2][1].occurred_at
        state = fold([d for _, d in stream if d.occurred_at <= cut])
        assert state.exists
        as_of.append(time.perf_counter() - t0)
    return [
        {"name": "history_p99_ms", "value": _p99(history), "unit": "ms", "target": "<= 20",
         **scale},
        {"name": "as_of_p99_ms", "value": _p99(as_of), "unit": "ms", "target": "<= 20",
         **scale},
    ]


if __name__ == "__main__":
    import argparse

    from bench import common

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the log of the previous run (skip the slow fill)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated subset of " + ", ".join(PARTS))
    parser.add_argument("--fill-only", action="store_true",
                        help="fill the log and stop (measure later with --reuse, quietly)")
    args = parser.parse_args()

    async def fill_only() -> None:
        url = await common.scratch_database("orch_bench_audit")
        pool = await create_pool(url, min_size=2, max_size=8)
        began = time.perf_counter()
        _, events = await fill(EventStore(pool), args.deployments)
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE events")
        await pool.close()
        print(f"filled {events:,} events in {time.perf_counter() - began:,.0f} s")

    async def main() -> None:
        if args.fill_only:
            await fill_only()
            return
        if args.reuse:
            from orchestrator.settings import env
            from tests.databases import with_database

            url = with_database(env("ORCH_DATABASE_URL"), "orch_bench_audit")
        else:
            url = await common.scratch_database("orch_bench_audit")
        parts = tuple(p for p in args.parts.split(",") if p)
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise SystemExit(f"unknown --parts: {', '.join(sorted(unknown))}")
        results = await run_audit(url, deployments=args.deployments, reuse=args.reuse,
                                  parts=parts)
        print(f"machine: {common.machine()}")
        common.print_table(results)
        common.save(results)

    asyncio.run(main())
