"""The data-management harness: users, API calls, stream reads and deadline polls."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.legacy.common import DECIDER as DEPLOYMENT_DECIDER
from domain import deployments as dep
from domain import replications as rep
from domain.identity import Actor
from eventstore.command_service import Decider
from eventstore.records import Metadata
from orchestrator.bootstrap import System
from tests.api.support import BASE, TEMPLATE, User
from tests.oidc_issuer import LocalIssuer
from tests.rucio.conftest import RUCIO_RUN, RucioPeer
from tests.rucio.support import poll

REPLICATION_DECIDER: Decider[Any, rep.ReplicationState, rep.ReplicationEvent] = Decider(
    rep.initial_state, rep.evolve, rep.decide)


def rucio_settings(peer: RucioPeer) -> dict[str, Any]:
    password_file = None
    for line in (RUCIO_RUN / "env").read_text().splitlines():
        if line.startswith("ORCH_RUCIO_PASSWORD_FILE="):
            password_file = line.partition("=")[2].strip()
    assert password_file and Path(password_file).exists()
    return {"rucio_url": peer.url, "rucio_account": peer.account,
            "rucio_username": peer.username, "rucio_password_file": password_file,
            "rucio_poll_initial_s": 0.2, "rucio_poll_max_s": 1.0}


@dataclass
class DataHarness:
    system: System
    client: httpx.AsyncClient
    issuer: LocalIssuer
    peer: RucioPeer | None

    def user(self, name: str = "alice", *, groups: tuple[str, ...] = ("g1",)) -> User:
        return User(self.issuer, f"{name}-{uuid.uuid4().hex[:8]}", list(groups))

    async def request(self, method: str, path: str, user: User | None = None,
                      **kwargs: Any) -> httpx.Response:
        headers = dict(user.headers) if user is not None else {"Accept": "application/json"}
        headers.update(kwargs.pop("headers", {}) or {})
        return await self.client.request(method, BASE + path, headers=headers, **kwargs)

    # ---- streams ---------------------------------------------------------------------------

    async def replication(self, replication_id: str) -> rep.ReplicationState:
        state, _ = await self.system.commands.load(rep.replication_stream(replication_id),
                                                   REPLICATION_DECIDER)
        return state

    async def deployment(self, deployment_id: str) -> dep.DeploymentState:
        state, _ = await self.system.commands.load(dep.stream_id(deployment_id),
                                                   DEPLOYMENT_DECIDER)
        return state

    async def event_types(self, stream_id: str) -> list[str]:
        return [event.type for event in await self.system.store.read_stream(stream_id)]

    async def wait_replication(self, replication_id: str, what: str, done: Any,
                               within_s: float = 120.0) -> rep.ReplicationState:
        return await poll(f"replication {replication_id}: {what}",
                          lambda: self.replication(replication_id), done, within_s=within_s)

    async def wait_deployment(self, deployment_id: str, what: str, done: Any,
                              within_s: float = 120.0) -> dep.DeploymentState:
        return await poll(f"deployment {deployment_id}: {what}",
                          lambda: self.deployment(deployment_id), done, within_s=within_s)

    # ---- commands --------------------------------------------------------------------------

    async def create_deployment(self, owner: Actor,
                                *requirements: dep.DataRequirement) -> str:
        """A deployment asked for through the command service (the API path is tested on
        its own); no deployer runs here, so it stays CREATE_IN_PROGRESS."""
        deployment_id = str(uuid.uuid4())
        command = dep.CreateDeployment(
            deployment_id=deployment_id, actor=owner, user_group="g1", template=TEMPLATE,
            template_identity=dep.TemplateIdentity(name="vm", type="vm",
                                                   hash=dep.template_sha256(TEMPLATE)),
            requested_resources=dep.RequestedResources(), data_requirements=requirements)
        await self.system.commands.execute(dep.stream_id(deployment_id), DEPLOYMENT_DECIDER,
                                           command, Metadata(actor_subject=owner.subject))
        return deployment_id

    async def run(self, stream_id: str, decider: Any, command: Any) -> None:
        await self.system.commands.execute(stream_id, decider, command,
                                           Metadata(actor_subject="tests"))


def actor_of(user: User) -> Actor:
    return Actor(issuer=user.issuer.issuer, subject=user.subject)
