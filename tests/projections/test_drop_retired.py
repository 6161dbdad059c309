"""Retired builds: an operator lists them and drops their tables once nothing can still
use them; a live or building build is never touched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.projection import ProjectionVersions, create_tables, versioned_tables
from eventstore.rebuild import builds, drop_retired
from projections.event_counts import projection as event_counts
from projections.event_counts import read_event_counts

ROOT = Path(__file__).resolve().parents[2]


def cli(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "projections", *arguments],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


async def test_retired_builds_lose_their_tables_after_the_grace_and_only_they(
        fx_engine: AsyncEngine, fx_database_url: str) -> None:
    name = event_counts.NAME
    versions = ProjectionVersions(fx_engine)
    for version in (1, 2, 3):
        async with fx_engine.begin() as conn:
            await create_tables(conn, versioned_tables(event_counts, version))
        await versions.mark_building(name, version, code_version=event_counts.VERSION)
    await versions.mark_live(name, 1)
    assert await versions.mark_live(name, 2) == 1  # v1 retired; v3 a rebuild under way

    # Just retired: its runner may still be writing and readers still reading it.
    assert await drop_retired(fx_engine, event_counts) == []
    assert [b.has_tables for b in await builds(fx_engine, event_counts)] == [True] * 3

    # As if every build had changed state two minutes ago: only the retired one goes.
    async with fx_engine.begin() as conn:
        await conn.execute(text("UPDATE projection_versions SET updated_at = "
                                "now() - interval '2 minutes' WHERE projection = :name"),
                           {"name": name})
    dropped = await asyncio.to_thread(cli, fx_database_url, "--drop-retired")
    assert dropped.returncode == 0, dropped.stderr
    assert f"dropped the tables of {name} v1\n" in dropped.stdout
    assert [(b.record.version, b.record.state, b.has_tables)
            for b in await builds(fx_engine, event_counts)] == [
        (1, "retired", False), (2, "live", True), (3, "building", True)]
    async with fx_engine.connect() as conn:
        assert await read_event_counts(conn, 2) == []  # the live build still answers

    # Again: nothing left to drop; the listing says what is where.
    assert await drop_retired(fx_engine, event_counts) == []
    listed = await asyncio.to_thread(cli, fx_database_url)
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()
             if line.startswith(f"{name}\t")]
    assert [(line[1], line[2], line[-1]) for line in lines] == [
        ("v1", "retired", "tables dropped"), ("v2", "live", "tables"),
        ("v3", "building", "tables")]
