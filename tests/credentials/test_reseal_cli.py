"""`orchestrator credentials-reseal` after a key rotation, as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from handlers.credentials import CredentialKeys, CredentialStore
from orchestrator.settings import database_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(name="engine")
async def fixture_engine(fx_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = database_engine(fx_database_url)
    yield engine
    await engine.dispose()


def cli(database_url: str, keys: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_DATABASE_URL": database_url, "ORCH_CREDENTIAL_KEYS": keys}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "credentials-reseal"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


async def test_reseal_moves_every_row_to_the_new_key(engine: AsyncEngine,
                                                     fx_database_url: str) -> None:
    old, new = CredentialKeys.generate("old"), CredentialKeys.generate("new")
    store = CredentialStore(engine, CredentialKeys.parse(old))
    for index in range(3):
        await store.put(f"deployment-{index}", "user-token", f"secret {index}".encode())

    result = await asyncio.to_thread(cli, fx_database_url, f"{new},{old}")
    assert result.returncode == 0, result.stderr
    assert "3 credential(s) re-sealed under key 'new'" in result.stdout
    async with engine.connect() as conn:
        key_ids = (await conn.execute(text("SELECT DISTINCT key_id FROM credentials"))
                   ).scalars().all()
    assert key_ids == ["new"]
    rotated = CredentialStore(engine, CredentialKeys.parse(new))  # the old key can go now
    assert await rotated.get("deployment-2", "user-token") == b"secret 2"

    # Without a key: a clear refusal, not a stack trace.
    env = {k: v for k, v in os.environ.items() if k != "ORCH_CREDENTIAL_KEYS"}
    env["ORCH_DATABASE_URL"] = fx_database_url
    refused = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "orchestrator.cli", "credentials-reseal"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1
    assert "no credential key is configured" in refused.stderr
    assert "Traceback" not in refused.stderr
