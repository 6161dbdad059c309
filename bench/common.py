"""Shared benchmark plumbing: a scratch database, timing, and the results file."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

import asyncpg

from orchestrator import migrate
from orchestrator.settings import env
from tests.databases import with_database

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


async def scratch_database(name: str) -> str:
    """Drop and re-create a migrated database for one benchmark; returns its URL."""
    admin_url, app_url = env("ORCH_ADMIN_DATABASE_URL"), env("ORCH_DATABASE_URL")
    if not admin_url or not app_url:
        raise SystemExit("run scripts/services.sh up first")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}" OWNER orchestrator')
    finally:
        await conn.close()
    url = with_database(app_url, name)
    await asyncio.to_thread(migrate.upgrade, url)
    return url


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = subprocess.run(["/usr/lib/postgresql/15/bin/postgres", "--version"],
                        capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, {pg}, Kafka 3.9.1")


def save(results: list[dict[str, object]]) -> None:
    """Merge figures into bench/results/latest.json by name (other issues add theirs)."""
    existing: list[dict[str, object]] = []
    if RESULTS.exists():
        existing = json.loads(RESULTS.read_text())
    names = {r["name"] for r in results}
    merged = [r for r in existing if r.get("name") not in names] + results
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


def print_table(results: list[dict[str, object]]) -> None:
    width = max(len(str(r["name"])) for r in results)
    print(f"{'name':<{width}}  {'value':>12}  unit        target")
    for r in results:
        print(f"{r['name']:<{width}}  {r['value']:>12}  {r['unit']:<10}  {r.get('target', '')}")
