"""SIGKILL the deployer at each step of a create and of a delete, start it again: IM holds
exactly the expected infrastructures and the deployment ends in the right status."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml

from api.legacy.common import DECIDER
from domain.deployments import (
    CreateDeployment,
    DeleteDeployment,
    DeploymentState,
    RankedSite,
    RecordScheduling,
    stream_id,
)
from domain.deployments.values import RequestedResources, TemplateIdentity, template_sha256
from eventstore.command_service import CommandService
from eventstore.records import Metadata
from eventstore.store import EventStore
from orchestrator.bootstrap import event_registry
from tests.api.support import DEPLOYER
from tests.im.conftest import ImPeer
from tests.im.support import compute_template
from tests.im_handler.support import ImHarness, site, sites_document

ROOT = Path(__file__).resolve().parents[2]
META = Metadata(actor_issuer=DEPLOYER.issuer, actor_subject=DEPLOYER.subject)


class Worker:
    def __init__(self, database_url: str, sites_file: Path, instance: str) -> None:
        self.args = [database_url, str(sites_file), instance]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        args = [*self.args, *([crash_at] if crash_at else [])]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.im_handler.crash_worker", *args], cwd=ROOT)
        return self.process

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(name="crash_env")
async def fixture_crash_env(fx_store: EventStore, fx_database_url: str, fx_im_peer: ImPeer,
                            tmp_path: Path) -> AsyncIterator[tuple[CommandService, Worker]]:
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump(sites_document(fx_im_peer)))
    worker = Worker(fx_database_url, sites_file, f"crash{uuid.uuid4().hex[:8]}")
    try:
        yield CommandService(fx_store, event_registry()), worker
    finally:
        worker.stop()


async def _until(commands: CommandService, deployment_id: str,
                 done: Callable[[DeploymentState], bool], what: str,
                 within: float = 90.0) -> DeploymentState:
    deadline = time.monotonic() + within
    while True:
        state, _ = await commands.load(stream_id(deployment_id), DECIDER)
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: status {state.status} ({state.status_reason})")
        await asyncio.sleep(0.1)


async def _killed(process: subprocess.Popen[bytes]) -> None:
    for _ in range(3000):  # bounds a hang only (a loaded machine, a busy shared IM)
        if process.poll() is not None:
            break
        await asyncio.sleep(0.1)
    assert process.returncode == -signal.SIGKILL, process.returncode


async def _infrastructures(peer: ImPeer, deployment_id: str) -> list[str]:
    harness = ImHarness.__new__(ImHarness)
    harness.peer = peer
    return await harness.infrastructures_of(deployment_id)


async def _create(commands: CommandService) -> str:
    deployment_id = str(uuid.uuid4())
    template = compute_template()
    await commands.execute(stream_id(deployment_id), DECIDER, CreateDeployment(
        deployment_id=deployment_id, actor=DEPLOYER, user_group="g1", template=template,
        template_identity=TemplateIdentity(name="t", type="vm", hash=template_sha256(template)),
        requested_resources=RequestedResources(vms=1)), META)
    await commands.execute(stream_id(deployment_id), DECIDER, RecordScheduling(
        deployment_id=deployment_id, actor=DEPLOYER, operation=1,
        candidates=(RankedSite(site=site("dummy-a")),), ranking_method="test"), META)
    return deployment_id


@pytest.mark.parametrize("crash_at", ["attempt_started", "created_in_im",
                                      "infrastructure_recorded", "resources_recorded"])
async def test_killed_during_create(crash_env: tuple[CommandService, Worker],
                                    fx_im_peer: ImPeer, crash_at: str) -> None:
    commands, worker = crash_env
    deployment_id = await _create(commands)
    await _killed(worker.start(crash_at))
    worker.start()
    state = await _until(commands, deployment_id, lambda s: s.status == "CREATE_COMPLETE",
                         "created after the restart")
    [attempt] = state.attempts
    assert await _infrastructures(fx_im_peer, deployment_id) == [attempt.infrastructure_id]
    worker.stop()


@pytest.mark.parametrize("crash_at", ["before_destroy", "destroyed_in_im"])
async def test_killed_during_delete(crash_env: tuple[CommandService, Worker],
                                    fx_im_peer: ImPeer, crash_at: str) -> None:
    commands, worker = crash_env
    deployment_id = await _create(commands)
    worker.start()
    await _until(commands, deployment_id, lambda s: s.status == "CREATE_COMPLETE", "created")
    worker.stop()
    await commands.execute(stream_id(deployment_id), DECIDER, DeleteDeployment(
        deployment_id=deployment_id, actor=DEPLOYER), META)
    await _killed(worker.start(crash_at))
    worker.start()
    await _until(commands, deployment_id, lambda s: s.status == "DELETE_COMPLETE",
                 "deleted after the restart")
    assert await _infrastructures(fx_im_peer, deployment_id) == []
    worker.stop()
