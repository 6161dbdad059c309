"""Provider ingestion and the flavours-for-a-site read (issue 4), against the real services.

A federation of 50 providers x 3 regions, each region with 200 flavours and 300 images
(30,000 flavours and 45,000 images in all), two projects per provider with quotas, SLAs of a
user group on every provider.

- ``provider_rescan_diff_s``: a full re-observation of the federation (50 provider
  observations diffed against each provider's stream, the real changes appended, usage on the
  usage streams) with 1% of the flavours and images changed and every project's usage moved;
  the ingestion as a running process has it (stream states cached, checked against the
  stream version). Also reported: ``provider_rescan_diff_cold_s``, the same with a cold cache
  (every stream read and folded first), and ``provider_rescan_parse_s``, parsing the 50
  Federation Registry trees from JSON into those observations (domain/providers/sources.py:
  JSON decode, validation, normalisation), which comes before the diff.
- ``site_flavors_p99_ms``: ``GET /v1/groups/{group}/sites/{site}/flavors`` through the whole
  application (token verification, the group's sites, the site's flavours and capacity from
  the projections, the JSON answer), in process over ASGI, sequential requests.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from api.auth import AuthSettings, TrustedIssuer
from api.providers.ingestion import ProviderIngestion
from bench.common import median, percentile
from domain.identity import system_actor
from domain.providers import ObserveProvider
from domain.providers.sources import observe_tree
from eventstore.projection import ProjectionVersions, create_tables, versioned_tables
from eventstore.records import LogPosition, Metadata
from eventstore.store import EventStore, create_pool
from orchestrator import bootstrap
from orchestrator.settings import Settings, database_engine, env
from projections import provider_capacity, provider_catalogue
from tests.oidc_issuer import LocalIssuer

PROVIDERS, REGIONS, FLAVORS, IMAGES = 50, 3, 200, 300
GROUP = "bench-group"
ACTOR = system_actor("bench")
META = Metadata(actor_issuer=ACTOR.issuer, actor_subject=ACTOR.subject)
DISTROS = (("ubuntu", ("20.04", "22.04", "24.04")), ("almalinux", ("8", "9")),
           ("rocky", ("8", "9")))


def federation(issuer: str) -> list[dict[str, Any]]:
    trees = []
    for i in range(PROVIDERS):
        projects = [f"p{i:02d}a", f"p{i:02d}b"]
        regions = []
        for r in range(REGIONS):
            flavors = [{"uuid": f"fl-{i}-{r}-{k}", "name": f"flavor.{k}",
                        "vcpus": 1 + k % 64, "ram": 2048 * (1 + k % 32), "disk": 20 + k % 200,
                        "gpus": 1 if k % 25 == 0 else 0,
                        "gpu_vendor": "NVIDIA" if k % 25 == 0 else None,
                        "gpu_model": "A100" if k % 25 == 0 else None,
                        "is_shared": k % 10 != 0,
                        "projects": [] if k % 10 else [projects[0]]}
                       for k in range(FLAVORS)]
            images = []
            for k in range(IMAGES):
                distro, versions = DISTROS[k % len(DISTROS)]
                images.append({
                    "uuid": f"im-{i}-{r}-{k}", "name": f"{distro}-{k}", "os_type": "linux",
                    "os_distro": distro, "os_version": versions[k % len(versions)],
                    "created_at": (datetime(2025, 1, 1, tzinfo=UTC)
                                   + timedelta(hours=k)).isoformat(),
                    "tags": ["bench"]})
            quotas = []
            for project in projects:
                quotas.append({"type": "compute", "project": project, "cores": 200,
                               "ram": 409600, "instances": 100})
                quotas.append({"type": "compute", "project": project, "usage": True,
                               "cores": 10, "ram": 20480, "instances": 5})
            regions.append({
                "name": f"region-{r}",
                "location": {"site": f"SITE-{i}-{r}", "country": "Italy"},
                "identity_services": [{"endpoint": f"https://keystone-{i}.example/v3/{r}",
                                       "name": "org.openstack.keystone"}],
                "compute_services": [{"endpoint": f"https://nova-{i}-{r}.example/v2.1",
                                      "name": "org.openstack.nova", "flavors": flavors,
                                      "images": images, "quotas": quotas}]})
        trees.append({
            "name": f"BENCH-{i:02d}", "type": "openstack", "status": "active",
            "projects": [{"uuid": p, "name": p} for p in projects],
            "identity_providers": [{
                "endpoint": issuer, "group_claim": "groups",
                "user_groups": [
                    {"name": GROUP, "sla": {"doc_uuid": f"sla-{i}-a", "start_date": "2025-01-01",
                                            "end_date": "2030-12-31", "project": projects[0]}},
                    {"name": f"other-{i}", "sla": {"doc_uuid": f"sla-{i}-b",
                                                   "start_date": "2025-01-01",
                                                   "end_date": "2030-12-31",
                                                   "project": projects[1]}}]}],
            "regions": regions})
    return trees


def change_one_percent(trees: list[dict[str, Any]], rng: random.Random, scan: int) -> int:
    """Change 1% of every region's flavours and images, and move every project's usage."""
    changed = 0
    for tree in trees:
        for region in tree["regions"]:
            compute = region["compute_services"][0]
            for flavor in rng.sample(compute["flavors"], FLAVORS // 100):
                flavor["ram"] += 1024
                changed += 1
            for image in rng.sample(compute["images"], IMAGES // 100):
                image["name"] = f"{image['name']}-r{scan}"
                changed += 1
            for quota in compute["quotas"]:
                if quota.get("usage"):
                    quota["cores"] = 10 + scan
    return changed


async def observe_all(ingestion: ProviderIngestion, commands: list[ObserveProvider],
                      concurrency: int = 4) -> int:
    """Observe every provider (diff and append); returns how many provider events."""
    limit = asyncio.Semaphore(concurrency)
    appended = 0

    async def one(command: ObserveProvider) -> None:
        nonlocal appended
        async with limit:
            result = await ingestion.observe(command, META)
            appended += len(result.events)

    await asyncio.gather(*(one(c) for c in commands))
    return appended


def parse_all(trees: list[dict[str, Any]]) -> tuple[list[ObserveProvider], float]:
    """The trees as the JSON documents the Feeder sends, parsed into commands; and how long
    the parsing (JSON decode, validation, normalisation) took."""
    documents = [json.dumps(t).encode() for t in trees]
    start = time.perf_counter()
    commands = [observe_tree(d, actor=ACTOR) for d in documents]
    return commands, time.perf_counter() - start


async def project(store: EventStore, url: str) -> None:
    """Build version 1 of the two provider projections from the log and make it live."""
    engine = database_engine(url)
    registry = bootstrap.event_registry()
    versions = ProjectionVersions(engine)
    targets: list[tuple[Any, list[Any]]] = [(provider_catalogue.projection,
                versioned_tables(provider_catalogue.projection, 1)),
               (provider_capacity.projection,
                versioned_tables(provider_capacity.projection, 1))]
    async with engine.begin() as conn:
        await create_tables(conn, [t for _, tables in targets for t in tables])
    position = LogPosition.start()
    while batch := await store.read_all(position, limit=2000):
        async with engine.begin() as conn:
            for event in batch:
                decoded = registry.decode_recorded(event)
                for projection, tables in targets:
                    if event.type in projection.HANDLES:
                        await projection.apply(conn, event, decoded, tables)
        position = batch[-1].log_position
    for projection, _ in targets:
        await versions.mark_building(projection.NAME, 1, code_version=projection.VERSION)
        await versions.mark_live(projection.NAME, 1)
    await engine.dispose()


async def run_providers(url: str, repeats: int, reads: int = 500) -> list[dict[str, object]]:
    issuer = LocalIssuer(path="bench").start()
    pool = await create_pool(url, max_size=10)
    store = EventStore(pool)
    registry = bootstrap.event_registry()
    rng = random.Random(4)
    try:
        trees = federation(issuer.issuer)
        ingestion = ProviderIngestion(store, registry)
        commands, _ = parse_all(trees)
        start = time.perf_counter()
        first = await observe_all(ingestion, commands)
        initial_s = time.perf_counter() - start

        warm: list[float] = []
        cold: list[float] = []
        parsing: list[float] = []
        for scan in range(1, 2 * repeats + 1):
            change_one_percent(trees, rng, scan)
            commands, parse_s = parse_all(trees)
            parsing.append(parse_s)
            timed = ingestion if scan % 2 else ProviderIngestion(store, registry)
            start = time.perf_counter()
            appended = await observe_all(timed, commands)
            (warm if scan % 2 else cold).append(time.perf_counter() - start)
            assert appended >= PROVIDERS * REGIONS * (FLAVORS + IMAGES) // 100, appended
        await project(store, url)

        settings = Settings(
            database_url=url, kafka_bootstrap=env("ORCH_KAFKA_BOOTSTRAP") or "",
            auth=AuthSettings(issuers=(TrustedIssuer(issuer=issuer.issuer),)))
        system = await bootstrap.build(settings)
        token = issuer.mint({"sub": "bench-user", "groups": [GROUP],
                             "scope": "openid profile"})
        headers = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=system.app)  # type: ignore[arg-type]
        timings = []
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for n in range(reads + 20):
                site = f"bench-{n % PROVIDERS:02d}.openstack:region-{n % REGIONS}"
                start = time.perf_counter()
                response = await client.get(f"/v1/groups/{GROUP}/sites/{site}/flavors",
                                            headers=headers)
                elapsed = time.perf_counter() - start
                assert response.status_code == 200, response.text
                assert len(response.json()["flavors"]) == FLAVORS, site
                if n >= 20:  # the first requests warm the JWKS cache and the pools
                    timings.append(elapsed * 1000)
        await system.close()
    finally:
        await pool.close()
        issuer.stop()
    shape = {"providers": PROVIDERS, "regions": REGIONS, "flavors_per_region": FLAVORS,
             "images_per_region": IMAGES}
    return [
        {"name": "provider_rescan_diff_s", "value": round(median(warm), 3), "unit": "s",
         "target": "<= 2", "runs": [round(w, 3) for w in warm],
         "cold_cache_runs": [round(c, 3) for c in cold],
         "first_observation_s": round(initial_s, 1), "first_events": first, **shape},
        {"name": "provider_rescan_parse_s", "value": round(median(parsing), 3), "unit": "s",
         "target": "(informative)", "runs": [round(p, 3) for p in parsing], **shape},
        {"name": "provider_rescan_diff_cold_s", "value": round(median(cold), 3), "unit": "s",
         "target": "(informative)", "runs": [round(c, 3) for c in cold], **shape},
        {"name": "site_flavors_p99_ms", "value": round(percentile(timings, 99), 2),
         "unit": "ms", "target": "<= 20", "median_ms": round(median(timings), 2),
         "requests": len(timings), **shape},
    ]
