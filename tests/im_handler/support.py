"""Helpers for the IM deployer tests: the sites file, scheduling, and looking into IM."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from domain.deployments import (
    CreateDeployment,
    DeleteDeployment,
    DeploymentState,
    DeploymentStatus,
    RankedSite,
    RecordScheduling,
    ResetDeployment,
    Site,
)
from domain.deployments.values import RequestedResources, TemplateIdentity, template_sha256
from handlers.im_client import ImClient, ImError
from handlers.im_deployer import MARKER_KEYS, ImDeployer
from tests.api.support import DEPLOYER, Harness, User
from tests.im.conftest import ImPeer
from tests.im.support import indigo_simple_node

WORKING_SITES = ("dummy-a", "dummy-b", "dummy-c")


def sites_document(peer: ImPeer, *, blackhole: str = "http://127.0.0.1:9",
                   password_of: dict[str, str] | None = None,
                   url_of: dict[str, str] | None = None,
                   extra_sites: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    password_of = password_of or {}
    url_of = url_of or {}

    def site(name: str, **extra: Any) -> dict[str, Any]:
        return {"provider_id": name, "iaas_type": "OPENSTACK",
                "endpoint": f"https://{name}.cloud.invalid:5000/v3",
                "im_url": url_of.get(name, peer.url),
                "im": {"username": "orchestrator",
                       "password": password_of.get(name, peer.users["orchestrator"])},
                "clouds": [{"kind": "dummy"}], **extra}

    return {"sites": [
        *(site(name) for name in WORKING_SITES),
        site("badcreds") | {"im": {"username": "orchestrator", "password": "wrong-password"}},
        site("never", provider_timeout_seconds=3) | {"clouds": [{
            "kind": "generic", "id": "ost", "type": "OpenStack",
            "values": {"host": blackhole, "username": "u", "password": "p", "tenant": "t"}}]},
        site("never-long", provider_timeout_seconds=3600) | {"clouds": [{
            "kind": "generic", "id": "ost", "type": "OpenStack",
            "values": {"host": blackhole, "username": "u", "password": "p", "tenant": "t"}}]},
        site("needs-token") | {"clouds": [{"kind": "dummy"}, {
            "kind": "openstack", "id": "ost", "host": "http://127.0.0.1:9",
            "identity_provider": "local", "access_token": "${USER_TOKEN}"}]},
        *(extra_sites or []),
    ]}


class Blackhole:
    """A TCP server on loopback that accepts connections and never answers: an OpenStack
    endpoint IM waits on forever (a provider that never finishes)."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        """Close everything: IM's blocked threads get their error and move on."""
        self.server.close()
        for connection in self.connections:
            connection.close()


def hanging_template() -> str:
    """INDIGO simple-node (stripped) whose image is on an OpenStack at 127.0.0.1: the Dummy
    connector deploys it anyway; an OpenStack site whose endpoint is the black hole hangs."""
    document = yaml.safe_load(indigo_simple_node())
    node = document["topology_template"]["node_templates"]["simple_node"]
    node["capabilities"]["os"]["properties"]["image"] = "ost://127.0.0.1/img"
    return yaml.safe_dump(document, sort_keys=False)


def site(name: str) -> Site:
    return Site(provider_id=name, provider_name=name.upper())


@dataclass
class ImHarness(Harness):
    peer: ImPeer | None = None
    blackhole: Blackhole | None = None
    sites_file: Path | None = None
    deployer: ImDeployer | None = None

    def write_sites(self, **changes: Any) -> None:
        assert self.sites_file is not None and self.peer is not None
        before = self.sites_file.stat().st_mtime_ns
        assert self.blackhole is not None
        changes.setdefault("blackhole", self.blackhole.url)
        self.sites_file.write_text(yaml.safe_dump(sites_document(self.peer, **changes)))
        while self.sites_file.stat().st_mtime_ns == before:  # coarse clocks: make it change
            time.sleep(0.01)
            self.sites_file.write_text(yaml.safe_dump(sites_document(self.peer, **changes)))

    async def eventually(self, probe: Callable[[], Awaitable[bool]], *, within: float = 300.0,
                         what: str = "condition") -> None:
        """As the API harness's, with a longer bound: the deployer hears of requests through
        the relay and Kafka, which lag by minutes on a loaded 2-core machine (the bound only
        stops a hang; nothing here asserts a duration)."""
        await super().eventually(probe, within=within, what=what)

    async def schedule(self, deployment_id: str, *names: str) -> DeploymentState:
        state = await self.state(deployment_id)
        return await self.handle(RecordScheduling(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
            candidates=tuple(RankedSite(site=site(n), score=1.0 - i / 10)
                             for i, n in enumerate(names)), ranking_method="test"))

    async def create_direct(self, template: str, **options: Any) -> str:
        """A deployment made by the command itself (no API validation)."""
        deployment_id = str(uuid.uuid4())
        await self.handle(CreateDeployment(
            deployment_id=deployment_id, actor=DEPLOYER, owner=None, user_group="g1",
            template=template,
            template_identity=TemplateIdentity(name="t", type="vm",
                                               hash=template_sha256(template)),
            requested_resources=RequestedResources(vms=1), **options))
        return deployment_id

    async def until(self, deployment_id: str, done: Callable[[DeploymentState], bool], *,
                    what: str, within: float = 300.0) -> DeploymentState:
        """The deployment's state (folded from its stream) once ``done`` holds."""
        deadline = time.monotonic() + within
        while True:
            state = await self.state(deployment_id)
            if done(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached within {within} s; status "
                                     f"{state.status}, reason {state.status_reason!r}")
            await asyncio.sleep(0.05)

    async def handle_delete(self, deployment_id: str, *, force: bool) -> DeploymentState:
        return await self.handle(DeleteDeployment(deployment_id=deployment_id, actor=DEPLOYER,
                                                  force=force))

    async def handle_reset(self, deployment_id: str, status: str) -> DeploymentState:
        return await self.handle(ResetDeployment(deployment_id=deployment_id, actor=DEPLOYER,
                                                 status=DeploymentStatus(status)))

    async def infrastructures_of(self, deployment_id: str) -> list[str]:
        """IM's infrastructures (of the tests' IM user) marked with this deployment."""
        assert self.peer is not None
        auth = self.peer.auth()
        found = []
        async with ImClient(self.peer.url) as im:
            for infrastructure_id in await im.list_infrastructures(auth):
                try:
                    document = yaml.safe_load(await im.tosca(auth, infrastructure_id))
                except ImError:
                    continue  # deleted meanwhile
                metadata = (document or {}).get("metadata") or {}
                if metadata.get(MARKER_KEYS[1]) == deployment_id:
                    found.append(infrastructure_id)
        return sorted(found)


async def api_user(harness: ImHarness) -> User:
    return harness.user("imuser")
