"""A real Rucio server for these tests, started by the project's services command.

The session fixture runs `bash scripts/services.sh up rucio` (idempotent: a running,
answering server is reused; a real start gets an empty database). Every test builds its
own scenario with unique scope, RSE and dataset names, so tests never see each other's
data and can run again against the same server.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.rucio_client import Did, FileReplica, RucioClient

ROOT = Path(__file__).resolve().parents[2]
RUCIO_RUN = ROOT / ".run" / "rucio"


@dataclass(frozen=True)
class RucioPeer:
    url: str
    account: str
    username: str
    password: str

    def client(self, *, password: str | None = None) -> RucioClient:
        return RucioClient(self.url, account=self.account, username=self.username,
                           password=self.password if password is None else password)


@dataclass(frozen=True)
class Scenario:
    """A scope, a dataset of `files` with replicas on `source`, an empty `target` RSE
    with attribute `target_attribute` (key=value), quota on both RSEs."""

    scope: str
    source: str
    target: str
    target_attribute: str
    dataset: Did
    files: tuple[Did, ...]


def _read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="session", name="fx_rucio_peer")
def fixture_rucio_peer() -> RucioPeer:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "up", "rucio"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/services.sh up rucio failed:\n{result.stderr[-4000:]}")
    env = _read_env(RUCIO_RUN / "env")
    return RucioPeer(url=env["ORCH_RUCIO_URL"], account=env["ORCH_RUCIO_ACCOUNT"],
                     username=env["ORCH_RUCIO_USERNAME"],
                     password=Path(env["ORCH_RUCIO_PASSWORD_FILE"]).read_text().strip())


@pytest.fixture(name="fx_rucio")
async def fixture_rucio(fx_rucio_peer: RucioPeer) -> AsyncIterator[RucioClient]:
    async with fx_rucio_peer.client() as client:
        yield client


@pytest.fixture(name="fx_scenario")
async def fixture_scenario(fx_rucio: RucioClient) -> Scenario:
    tag = uuid.uuid4().hex[:10]
    scope, source, target = f"t_{tag}", f"SRC_{tag.upper()}", f"DST_{tag.upper()}"
    await fx_rucio.add_scope(scope)
    for rse in (source, target):
        await fx_rucio.add_rse(rse)
        await fx_rucio.set_local_account_limit(rse, bytes_=-1)
    await fx_rucio.add_rse_attribute(target, "orchtest", tag)
    files = tuple(Did(scope, f"file_{i}") for i in range(2))
    await fx_rucio.add_replicas(source, [FileReplica(f.scope, f.name, bytes=1000,
                                                     adler32="0cc737eb") for f in files])
    dataset = Did(scope, "dataset")
    await fx_rucio.add_dataset(dataset)
    await fx_rucio.attach_dids(dataset, files)
    return Scenario(scope=scope, source=source, target=target,
                    target_attribute=f"orchtest={tag}", dataset=dataset, files=files)
