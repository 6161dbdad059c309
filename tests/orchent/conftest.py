"""One real system per module for the orchent and dev-issuer tests: fresh database, own
topics, the development OIDC issuer (orchestrator/dev_issuer.py) trusted, served by a real
uvicorn on loopback under the legacy path prefix ``/orchestrator``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.auth import AuthSettings, TrustedIssuer
from orchestrator import bootstrap
from orchestrator.dev_issuer import DEV_ADMIN_GROUP, DevIssuer
from orchestrator.settings import Settings
from tests.api.support import TEMPLATE, Harness
from tests.consumers.support import consumer_settings
from tests.databases import TestDatabases
from tests.http_server import serve

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/orchestrator"


@dataclass
class Server:
    system: bootstrap.System
    client: httpx.AsyncClient
    issuer: DevIssuer
    harness: Harness  # the deployer's side: handler commands through the same services

    @property
    def url(self) -> str:
        return f"{self.client.base_url}{PREFIX}"


@pytest.fixture(scope="session", name="dev_issuer")
def fixture_dev_issuer() -> Iterator[DevIssuer]:
    with DevIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="session", name="orchent")
def fixture_orchent() -> str:
    """The real orchent binary, built by scripts/orchent.sh (cached in .run/bin)."""
    built = subprocess.run(["bash", str(ROOT / "scripts" / "orchent.sh")], check=True,
                           capture_output=True, text=True, timeout=600)
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module", name="server")
async def fixture_server(fx_databases: TestDatabases, fx_kafka_bootstrap: str,
                         dev_issuer: DevIssuer) -> AsyncIterator[Server]:
    settings = Settings(
        database_url=await fx_databases.fresh(), kafka_bootstrap=fx_kafka_bootstrap,
        topic_prefix=f"orchent{uuid.uuid4().hex[:10]}", topic_partitions=2,
        api_base_path=PREFIX, tosca_workers=1,
        auth=AuthSettings(issuers=(TrustedIssuer(issuer=dev_issuer.issuer,
                                                 admin_group=DEV_ADMIN_GROUP),)))
    system = await bootstrap.build(settings)
    stop = asyncio.Event()
    try:
        await bootstrap.start_components(system, stop, consumer_settings(settings.topic_prefix))
        # A loaded shared machine can lag beyond the production bound (2 s); these tests
        # are about orchent, not about that bound.
        system.commands.written.wait_s = 20.0  # type: ignore[attr-defined]
        async with serve(system.app) as client:
            harness = Harness(system=system, client=client, issuer=None,  # type: ignore[arg-type]
                              second_issuer=None)  # type: ignore[arg-type]
            await _until_projections_consume(client, dev_issuer)
            yield Server(system=system, client=client, issuer=dev_issuer, harness=harness)
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()


async def _until_projections_consume(client: httpx.AsyncClient, issuer: DevIssuer) -> None:
    """The projection runners join their consumer groups a few seconds after the start:
    one deployment made and seen before the tests begin."""
    headers = {"Authorization": f"Bearer {issuer.mint('warm-up', groups=['g1'])}"}
    created = await client.post(f"{PREFIX}/deployments", headers=headers,
                                json={"template": TEMPLATE, "userGroup": "g1"})
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 60
    while (await client.get(f"{PREFIX}/deployments/{created.json()['uuid']}",
                            headers=headers)).status_code != 200:
        assert time.monotonic() < deadline, "the deployments projection did not start"
        await asyncio.sleep(0.05)


async def run_orchent(orchent: str, url: str, token: str | None, *args: str) -> str:
    """Run orchent with ORCHENT_URL / ORCHENT_TOKEN; its standard output (orchent prints
    errors there too and exits 0, so tests read what it says)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ORCHENT_", "OIDC_"))}
    env["ORCHENT_URL"] = url
    env["HOME"] = str(ROOT / ".run")  # no personal orchent settings or aliases
    if token is not None:
        env["ORCHENT_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        orchent, *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return output.decode()
