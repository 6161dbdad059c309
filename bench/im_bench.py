"""IM benchmark (issue 5): 200 deployments created at once through the whole system against
the real IM (Dummy connector), and IM's own time for the same load measured directly.

Run: `.venv/bin/python -m bench.run im` (IM must be up: `scripts/services.sh up im`).

- `im_create_p50_s`, `im_create_p99_s`: for each deployment, from just before its POST
  /deployments (client wall clock) to the `recorded_at` of its `deployment.completed`
  event (the database clock, same host). The path: real uvicorn API (OIDC token from a
  local issuer, TOSCA validation), event log, relay, Kafka, the IM deployer handler, IM,
  then the completion command. Scheduling is a direct `RecordScheduling` command sent
  right after the POST (the scheduler is issue 4's; here the sites are fixed), spreading
  the deployments over three Dummy sites. One deployment runs first, unmeasured (TOSCA
  validator processes and the handler's consumer-group assignment start on first use).
- `im_handler_overhead_ms`: median system time minus IM's own median for the same
  template and the same 200 deployments, measured first in a separate phase: `POST
  /infrastructures?async=1` straight to IM, each polled every 50 ms until `configured`,
  with at most 16 requests in flight (200 at once make IM 2.0.0 time out); a deployment's
  clock starts when its create is sent. What remains is everything that is not IM: API,
  validation, log, Kafka, handler, polling backoff.

Every infrastructure created is destroyed at the end (deletions confirmed).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from api.auth import AuthSettings, TrustedIssuer
from bench.common import median, percentile
from domain.deployments import RankedSite, RecordScheduling, Site, stream_id
from domain.identity import system_actor
from eventstore.records import Metadata
from handlers.credentials import CredentialKeys
from handlers.im_client import DummyCredentials, ImClient, ImCredentials, build_authorization
from orchestrator import bootstrap
from orchestrator.settings import ROOT, Settings, env
from tests.http_server import serve
from tests.im.support import compute_template
from tests.oidc_issuer import LocalIssuer

SITES = ("bench-a", "bench-b", "bench-c")
SCHEDULER = system_actor("bench-scheduler")
AUDIENCE = "orchestrator"
IM_REQUESTS = 16


def im_peer() -> tuple[str, dict[str, str]]:
    users_file = ROOT / ".run" / "im" / "users.json"
    if not users_file.exists():
        raise SystemExit("IM is not set up: run scripts/services.sh up im")
    users = {u["username"]: u["password"]
             for u in json.loads(users_file.read_text())["users"]}
    url = env("ORCH_IM_URL") or f"http://127.0.0.1:{env('ORCH_IM_PORT', '18899')}"
    return url, users


async def destroy_all(url: str, auth: Any, infrastructure_ids: list[str]) -> None:
    limit = asyncio.Semaphore(4)  # IM 2.0.0 times out under many concurrent deletes

    async def one(client: ImClient, inf_id: str) -> None:
        async with limit:
            try:
                await client.destroy(auth, inf_id, force=True)
            except Exception as error:  # report and go on: the others still get cleaned
                print(f"could not destroy {inf_id}: {error}")

    async with ImClient(url, timeout=120.0) as client:
        await asyncio.gather(*(one(client, i) for i in infrastructure_ids))


async def im_own_times(url: str, users: dict[str, str], template: str,
                       count: int) -> list[float]:
    """IM alone: `count` concurrent async creates, each polled every 50 ms to configured."""
    auth = build_authorization(ImCredentials(username="orchestrator",
                                             password=users["orchestrator"]),
                               [DummyCredentials()])
    created: list[str] = []
    # At most IM_REQUESTS requests in flight: 200 at once exhaust IM 2.0.0 (its answers
    # time out) and the client's connection pool. The clock of a deployment starts when
    # its create request is sent.
    in_flight = asyncio.Semaphore(IM_REQUESTS)

    async def one(client: ImClient) -> float:
        async with in_flight:
            start = time.monotonic()
            inf_id = await client.create(auth, template, asynchronous=True)
        created.append(inf_id)
        while True:
            async with in_flight:
                state = (await client.state(auth, inf_id)).state
            if state == "configured":
                return time.monotonic() - start
            if state in ("failed", "unconfigured"):
                raise RuntimeError(f"IM left {inf_id} {state}")
            await asyncio.sleep(0.05)

    try:
        async with ImClient(url, timeout=120.0) as client:
            return list(await asyncio.gather(*(one(client) for _ in range(count))))
    finally:
        await destroy_all(url, auth, created)


def sites_file(path: Path, url: str, users: dict[str, str]) -> None:
    path.write_text(yaml.safe_dump({"sites": [
        {"provider_id": name, "iaas_type": "OPENSTACK",
         "endpoint": f"https://{name}.cloud.invalid:5000/v3", "im_url": url,
         "im": {"username": "orchestrator", "password": users["orchestrator"]},
         "clouds": [{"kind": "dummy"}]} for name in SITES]}))


async def system_times(database_url: str, url: str, users: dict[str, str], template: str,
                       count: int) -> tuple[list[float], int, dict[str, float]]:
    """The whole system: POST -> CREATE_COMPLETE per deployment; returns the times, how
    many did not complete, and the median time of each stage (seconds)."""
    kafka = env("ORCH_KAFKA_BOOTSTRAP") or ""
    prefix = f"benchim{uuid.uuid4().hex[:8]}"
    directory = ROOT / ".run" / "bench"
    directory.mkdir(parents=True, exist_ok=True)
    sites = directory / f"{prefix}-sites.yaml"
    sites_file(sites, url, users)
    with LocalIssuer(key_kinds=("RSA",)) as issuer:
        settings = Settings(
            database_url=database_url, kafka_bootstrap=kafka, topic_prefix=prefix,
            topic_partitions=4, api_base_path="/orchestrator",
            auth=AuthSettings(issuers=(TrustedIssuer(issuer=issuer.issuer, audience=AUDIENCE),)),
            im_sites_file=str(sites), credential_keys=CredentialKeys.generate("bench"))
        system = await bootstrap.build(settings)
        stop = asyncio.Event()
        started: dict[str, float] = {}
        try:
            await bootstrap.start_components(system, stop)
            token = issuer.mint({"sub": "bench-user", "groups": ["g1"], "aud": AUDIENCE,
                                 "scope": "openid profile offline_access"}, lifetime=3600)
            headers = {"Authorization": f"Bearer {token}"}
            async with serve(system.app) as client:
                async def create(index: int) -> None:
                    start = time.time()
                    response = await client.post(
                        "/orchestrator/deployments", headers=headers,
                        json={"template": template, "userGroup": "g1"})
                    if response.status_code != 201:
                        raise RuntimeError(f"POST answered {response.status_code}: "
                                           f"{response.text[:300]}")
                    deployment_id = response.json()["uuid"]
                    started[deployment_id] = start
                    name = SITES[index % len(SITES)]
                    await system.commands.execute(
                        stream_id(deployment_id), _decider(), RecordScheduling(
                            deployment_id=deployment_id, actor=SCHEDULER, operation=1,
                            candidates=(RankedSite(site=Site(provider_id=name,
                                                             provider_name=name.upper()),
                                                   score=1.0),),
                            ranking_method="bench"),
                        Metadata(actor_subject=SCHEDULER.subject))

                # Warm-up, not measured: the validator's worker processes start on first
                # use and the handler's consumer group needs its first assignment.
                await create(0)
                await _wait_completed(system, set(started), within=120.0)
                started.clear()
                await asyncio.gather(*(create(i) for i in range(count)))
                finished = await _wait_completed(system, set(started), within=600.0)
        finally:
            stop.set()
            await asyncio.gather(*system.tasks, return_exceptions=True)
            infrastructures = await _infrastructures(system)
            stages = await _stages(system, started)
            await system.close()
            sites.unlink(missing_ok=True)
    auth = build_authorization(ImCredentials(username="orchestrator",
                                             password=users["orchestrator"]),
                               [DummyCredentials()])
    await destroy_all(url, auth, infrastructures)
    times = [finished[d] - started[d] for d in finished]
    return times, count - len(finished), stages


def _decider() -> Any:
    from api.legacy.common import DECIDER
    return DECIDER


async def _wait_completed(system: bootstrap.System, deployment_ids: set[str], *,
                          within: float) -> dict[str, float]:
    """deployment id -> epoch seconds of its deployment.completed (database clock)."""
    deadline = time.monotonic() + within
    finished: dict[str, float] = {}
    while True:
        async with system.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT stream_id, extract(epoch FROM recorded_at) AS at FROM events"
                " WHERE type = 'deployment.completed' AND stream_id = ANY($1::text[])",
                [stream_id(d) for d in deployment_ids])
            failed = await conn.fetchval(
                "SELECT count(*) FROM events WHERE type = 'deployment.failed'"
                " AND stream_id = ANY($1::text[])", [stream_id(d) for d in deployment_ids])
        for row in rows:
            finished[row["stream_id"].removeprefix("deployment-")] = float(row["at"])
        if len(finished) + failed >= len(deployment_ids) or time.monotonic() > deadline:
            return finished
        await asyncio.sleep(0.5)


_STAGES = (
    ("api_s", None, "deployment.requested"),
    ("to_attempt_s", "deployment.scheduled", "deployment.attempt_started"),
    ("im_create_call_s", "deployment.attempt_started", "deployment.infrastructure_created"),
    ("to_completed_s", "deployment.infrastructure_created", "deployment.completed"),
)


async def _stages(system: bootstrap.System, started: dict[str, float]) -> dict[str, float]:
    """Median seconds of each stage, from the events' recorded_at (the POST start for the
    first): API and validation, scheduling to attempt start (Kafka, handler pickup), IM's
    create call, infrastructure created to completed (IM's work, polling, results)."""
    async with system.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT stream_id, type, min(extract(epoch FROM recorded_at)) AS at FROM events"
            " WHERE stream_id = ANY($1::text[]) GROUP BY stream_id, type",
            [stream_id(d) for d in started])
    at: dict[str, dict[str, float]] = {}
    for row in rows:
        at.setdefault(row["stream_id"].removeprefix("deployment-"), {})[row["type"]] = float(
            row["at"])
    medians: dict[str, float] = {}
    for name, first, last in _STAGES:
        spans = [events[last] - (events[first] if first else started[d])
                 for d, events in at.items()
                 if last in events and (first is None or first in events)]
        if spans:
            medians[name] = round(median(spans), 3)
    return medians


async def _infrastructures(system: bootstrap.System) -> list[str]:
    async with system.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT DISTINCT data ->> 'infrastructure_id' AS id"
            " FROM events WHERE type = 'deployment.infrastructure_created'")
    return [row["id"] for row in rows if row["id"]]


async def run_im(database_url: str, count: int = 200) -> list[dict[str, object]]:
    url, users = im_peer()
    template = compute_template(count=1)
    own = await im_own_times(url, users, template, count)
    times, missing, stages = await system_times(database_url, url, users, template, count)
    if missing or not times:
        print(f"{missing} of {count} deployments did not reach CREATE_COMPLETE")
    overhead_ms = (median(times) - median(own)) * 1000 if times else float("nan")
    return [
        {"name": "im_create_p50_s", "value": round(median(times), 2) if times else None,
         "unit": "s", "target": "<= 5", "deployments": count, "incomplete": missing},
        {"name": "im_create_p99_s", "value": round(percentile(times, 99), 2) if times else None,
         "unit": "s", "target": "<= 15", "deployments": count, "incomplete": missing},
        {"name": "im_handler_overhead_ms", "value": round(overhead_ms), "unit": "ms",
         "target": "<= 200", "im_own_p50_s": round(median(own), 2),
         "im_own_p99_s": round(percentile(own, 99), 2), "stage_medians_s": stages},
    ]
