"""API and TOSCA benchmarks (issue 3): `.venv/bin/python -m bench.run api`.

The server is the real thing: ``orchestrator run`` (API, relay and projection runners in
one process, uvicorn on loopback) against a scratch database, trusting a development
OIDC issuer that runs in this process. The load comes from ``hey`` (Go, a separate
process: a Python client on the same two cores would starve the server), installed with
``go install github.com/rakyll/hey@latest`` into ``~/go/bin`` (or HEY=path).

The deployments view is bulk-loaded with 1,000,000 rows directly in SQL (an
``INSERT ... SELECT generate_series``, about a minute) rather than by appending events
and projecting them (that would take the better part of an hour here); one user owns
1,000 of them, the rest belong to 10,000 other users of the same issuer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import median, percentile
from orchestrator.dev_issuer import DEV_ADMIN_GROUP, DevIssuer
from orchestrator.settings import env

ROOT = Path(__file__).resolve().parents[1]
ROWS = 1_000_000
MINE = 1_000
OTHER_USERS = 10_000
ME = "bench-me"
SECONDS = 10
CONCURRENCY = 10
TEMPLATE = """\
tosca_definitions_version: tosca_simple_yaml_1_0
description: A single VM for the API benchmark
metadata:
  display_name: Bench VM
  template_type: vm
topology_template:
  inputs:
    num_cpus:
      type: integer
      default: 1
  node_templates:
    server:
      type: tosca.nodes.Compute
      capabilities:
        host:
          properties:
            num_cpus: { get_input: num_cpus }
            mem_size: 2 GB
"""
INDIGO_TEMPLATE = "indigo-paas/tosca-templates/single-vm/single_vm.yaml"


def hey_binary() -> str:
    found = os.environ.get("HEY") or shutil.which("hey") or str(Path.home() / "go/bin/hey")
    if not Path(found).exists():
        raise SystemExit("hey not found: go install github.com/rakyll/hey@latest (or HEY=)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cores_of_others(pid: int, seconds: float = 3.0) -> float:
    """Cores busy with anything but the server over ``seconds`` (the shared-machine load)."""
    def totals() -> tuple[float, float]:
        parts = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = parts[3] + parts[4]
        return (sum(parts) - idle) / os.sysconf("SC_CLK_TCK"), process_cpu_seconds(pid)

    busy0, own0 = totals()
    time.sleep(seconds)
    busy1, own1 = totals()
    return round((busy1 - busy0 - (own1 - own0)) / seconds, 2)


# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, database_url: str, issuer: DevIssuer) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "ORCH_DATABASE_URL": database_url,
                    "ORCH_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
                    "ORCH_API_PORT": str(self.port), "ORCH_API_HOST": "127.0.0.1",
                    "ORCH_LOG_LEVEL": "WARNING", "ORCH_TOSCA_WORKERS": "1",
                    "ORCH_AUTH_ISSUERS": json.dumps([{"issuer": issuer.issuer,
                                                      "admin_group": DEV_ADMIN_GROUP}])}
        for name in ("ORCH_SITES_FILE", "ORCH_DEV_ISSUER", "ORCH_API_BASE_PATH"):
            self.env.pop(name, None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run"],
                                        cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit("the server did not become ready within 180 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def bulk_load(database_url: str, issuer: str) -> float:
    """1,000,000 rows straight into the live deployments table; returns the seconds taken."""
    conn = await asyncpg.connect(database_url)
    try:
        version = await conn.fetchval("SELECT version FROM projection_versions "
                                      "WHERE projection = 'deployments' AND state = 'live'")
        table = f"deployments_v{version}"
        started = time.perf_counter()
        await conn.execute(f"""
            INSERT INTO {table} (id, stream_version, owner_issuer, owner_subject, user_group,
                status, task, created_at, updated_at, template_name, template_type,
                template_hash, keep_last_attempt, operation, outputs, provider_name,
                iaas_type, requested_resources)
            SELECT md5('bench' || i)::uuid::text, 3, $1,
                   CASE WHEN i % ($2 / $3) = 0 THEN $4 ELSE 'user-' || (i % $5) END,
                   'g' || (i % 20),
                   (ARRAY['CREATE_COMPLETE','CREATE_FAILED','DELETE_COMPLETE',
                          'UPDATE_COMPLETE'])[1 + i % 4], 'NONE',
                   now() - i * interval '7 seconds', now() - i * interval '5 seconds',
                   'Bench VM', 'vm', md5('t' || (i % 50)), true, 1,
                   '{{"node_ip": "192.0.2.10"}}'::jsonb, 'BACKBONE', 'OPENSTACK',
                   '{{"vms": 1, "vcpus": 2, "ramMb": 4096}}'::jsonb
            FROM generate_series(1, $2) AS i""", issuer, ROWS, MINE, ME, OTHER_USERS)
        await conn.execute(f"VACUUM ANALYZE {table}")  # as autovacuum would, soon after
        mine = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE owner_subject = $1",
                                   ME)
        assert mine == MINE, mine
        return time.perf_counter() - started
    finally:
        await conn.close()


# ---------------------------------------------------------------- load


def run_hey(url: str, token: str, *, method: str = "GET", body: str | None = None,
            seconds: int = SECONDS, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    args = [hey_binary(), "-z", f"{seconds}s", "-c", str(concurrency), "-m", method,
            "-H", f"Authorization: Bearer {token}", "-H", "Accept: application/json"]
    body_file = None
    if body is not None:
        body_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        body_file.write(body)
        body_file.close()
        args += ["-T", "application/json", "-D", body_file.name]
    usage_before = os.times()
    try:
        output = subprocess.run([*args, url], check=True, capture_output=True, text=True,
                                timeout=seconds + 120).stdout
    finally:
        if body_file is not None:
            os.unlink(body_file.name)
    usage_after = os.times()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def latency(p: int) -> float:
        match = re.search(rf"\s{p}%% in ([\d.]+) secs", output)
        return float(match.group(1)) * 1000 if match else float("nan")

    statuses = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", output))
    client_cpu = ((usage_after.children_user + usage_after.children_system)
                  - (usage_before.children_user + usage_before.children_system))
    return {"rps": rps, "p50_ms": latency(50), "p99_ms": latency(99),
            "statuses": {k: int(v) for k, v in statuses.items()},
            "client_cores": round(client_cpu / seconds, 2)}


# ---------------------------------------------------------------- TOSCA


async def tosca_figures(repeats: int) -> list[dict[str, object]]:
    from tosca import TemplateValidator

    corpus = Path(env("ORCH_TOSCA_TYPES_DIR", str(ROOT.parent / "shared" / "tosca"))
                  or "")
    indigo = (corpus / INDIGO_TEMPLATE).read_text()
    validator = TemplateValidator(workers=1)
    await validator.start()
    try:
        await validator.validate(indigo)  # worker warm: imports and type files read once
        cached: list[float] = []
        for _ in range(200 * repeats):
            started = time.perf_counter()
            await validator.validate(indigo)
            cached.append((time.perf_counter() - started) * 1000)
        uncached: list[float] = []
        for i in range(20 * repeats):
            text = f"{indigo}\n# benchmark variant {i} {uuid.uuid4()}\n"  # a new content hash
            started = time.perf_counter()
            await validator.validate(text)
            uncached.append((time.perf_counter() - started) * 1000)
    finally:
        validator.close()
    return [
        {"name": "tosca_cached_p50_ms", "value": round(median(cached), 3), "unit": "ms",
         "target": "<= 2", "p99_ms": round(percentile(cached, 99), 3), "runs": len(cached),
         "template": INDIGO_TEMPLATE},
        {"name": "tosca_uncached_p50_ms", "value": round(median(uncached), 1), "unit": "ms",
         "target": "<= 30", "p99_ms": round(percentile(uncached, 99), 1),
         "runs": len(uncached), "template": INDIGO_TEMPLATE},
    ]


# ---------------------------------------------------------------- the group


async def run_api(url: str, repeats: int) -> list[dict[str, object]]:
    results = await tosca_figures(repeats)
    with DevIssuer() as issuer:
        server = Server(url, issuer)
        server.start()
        try:
            assert server.process is not None
            pid = server.process.pid
            load_seconds = await bulk_load(url, issuer.issuer)
            token = issuer.mint(ME, groups=["g1"], lifetime_s=3600)
            list_url = f"{server.url}/deployments?createdBy=me"
            check = (await asyncio.to_thread(
                httpx.get, list_url, headers={"Authorization": f"Bearer {token}"},
                timeout=30)).json()
            assert check["page"]["totalElements"] == MINE, check["page"]
            assert len(check["content"]) == 10
            others = busy_cores_of_others(pid)
            idle0 = process_cpu_seconds(pid)
            await asyncio.sleep(5)
            idle_cores = round((process_cpu_seconds(pid) - idle0) / 5, 3)  # relay, runners
            floor = run_hey(f"{server.url}/healthz", token)  # no auth, no database
            run_hey(list_url, token, seconds=3)  # warm-up: connections, plans, caches
            lists = []
            for _ in range(repeats):
                cpu0 = process_cpu_seconds(pid)
                figures = run_hey(list_url, token)
                figures["server_cores"] = round((process_cpu_seconds(pid) - cpu0) / SECONDS, 2)
                figures["server_cpu_ms_per_request"] = round(
                    (process_cpu_seconds(pid) - cpu0) * 1000 / (figures["rps"] * SECONDS), 2)
                lists.append(figures)
            body = json.dumps({"template": TEMPLATE, "parameters": {"num_cpus": 2},
                               "userGroup": "g1"})
            warm = await asyncio.to_thread(
                httpx.post, f"{server.url}/deployments", content=body, timeout=60,
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"})
            assert warm.status_code == 201, warm.text  # the template is validated and cached
            creates = []
            for _ in range(repeats):
                cpu0 = process_cpu_seconds(pid)
                figures = run_hey(f"{server.url}/deployments", token, method="POST",
                                  body=body)
                figures["server_cores"] = round((process_cpu_seconds(pid) - cpu0) / SECONDS, 2)
                figures["server_cpu_ms_per_request"] = round(
                    (process_cpu_seconds(pid) - cpu0) * 1000 / (figures["rps"] * SECONDS), 2)
                creates.append(figures)
        finally:
            server.stop()
    setting = (f"{ROWS:,} rows in the view (bulk-loaded in {load_seconds:.0f} s), "
               f"{MINE:,} owned by the caller; hey -c {CONCURRENCY} for {SECONDS} s; "
               f"other processes kept {others} cores busy before the run; the idle server "
               f"used {idle_cores} cores; GET /healthz (no auth, no database) gave "
               f"{floor['rps']:.0f} requests/s")
    results += [
        {"name": "api_list_deployments_rps", "value": round(median([r["rps"] for r in lists])),
         "unit": "requests/s", "target": ">= 1500", "runs": lists, "setting": setting},
        {"name": "api_list_deployments_p99_ms",
         "value": round(median([r["p99_ms"] for r in lists]), 1), "unit": "ms",
         "target": "<= 30", "setting": setting},
        {"name": "api_create_rps", "value": round(median([r["rps"] for r in creates])),
         "unit": "requests/s", "target": ">= 300", "runs": creates, "setting": setting},
    ]
    return results


if __name__ == "__main__":
    from bench import common

    async def main() -> None:
        url = await common.scratch_database("orch_bench_api")
        figures = await run_api(url, int(sys.argv[1]) if len(sys.argv) > 1 else 1)
        common.print_table(figures)
        print(json.dumps(figures, indent=2, default=str))

    asyncio.run(main())
