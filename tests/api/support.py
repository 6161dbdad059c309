"""An API harness over the real system: Postgres, Kafka, relay, projections, a real OIDC
issuer on loopback and the real TOSCA validator, served through httpx's ASGI transport
under the legacy path prefix ``/orchestrator``.

The deployer handler does not exist yet, so tests drive the lifecycle by sending the
handler commands it will send (``Harness.complete_create`` and friends) through the same
command service the API uses. Reads are eventually consistent (the projections are fed
from Kafka): ``Harness.eventually`` polls the API with a deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from api.legacy.common import DECIDER
from domain.deployments import (
    ChangeResources,
    CloudProviderEndpoint,
    CompleteDeletion,
    CompleteDeployment,
    DeploymentCommand,
    DeploymentState,
    FailDeletion,
    FailDeployment,
    IaasType,
    NodeState,
    RankedSite,
    RecordInfrastructureCreated,
    RecordLog,
    RecordScheduling,
    Resource,
    Site,
    StartAttempt,
    stream_id,
)
from domain.identity import system_actor
from eventstore.records import Metadata
from orchestrator.bootstrap import System
from tests.oidc_issuer import LocalIssuer

BASE = "http://127.0.0.1:8080/orchestrator"
AUDIENCE = "orchestrator"
ADMIN_GROUP = "orchestrator-admins"
DEPLOYER = system_actor("test-deployer")
SITE = Site(provider_id="prov-backbone", provider_name="BACKBONE", region="cnaf",
            project="g1-project")
ENDPOINT = CloudProviderEndpoint(cp_endpoint="https://keystone.example:5000/v3",
                                 iaas_type=IaasType.OPENSTACK, cp_compute_service_id="svc-42",
                                 region="cnaf")
LEGACY_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}\+0000$"

TEMPLATE = """\
tosca_definitions_version: tosca_simple_yaml_1_0
description: A single VM for the API tests
metadata:
  display_name: Test VM
  template_type: vm
topology_template:
  inputs:
    num_cpus:
      type: integer
      default: 1
    mem_size:
      type: scalar-unit.size
      default: 2 GB
  node_templates:
    server:
      type: tosca.nodes.Compute
      capabilities:
        host:
          properties:
            num_cpus: { get_input: num_cpus }
            mem_size: { get_input: mem_size }
  outputs:
    node_ip:
      value: { get_attribute: [ server, public_address ] }
"""
TEMPLATE_V2 = TEMPLATE.replace("A single VM for the API tests", "Scaled for the API tests")


@dataclass
class User:
    """A user of the test issuer; ``subject`` is unique per test run."""

    issuer: LocalIssuer
    subject: str
    groups: list[str] = field(default_factory=list)
    scope: str = "openid profile email offline_access"
    audience: str | None = AUDIENCE

    def token(self, **claims: Any) -> str:
        values: dict[str, Any] = {"sub": self.subject, "groups": self.groups,
                                  "scope": self.scope, "aud": self.audience}
        values.update(claims)
        return self.issuer.mint(values)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}

    @property
    def created_by(self) -> str:
        return f"{self.subject}@{self.issuer.issuer}"


@dataclass
class Harness:
    system: System
    client: httpx.AsyncClient
    issuer: LocalIssuer
    second_issuer: LocalIssuer
    deployer_info: Any = None

    # ---- users ---------------------------------------------------------------------------

    def user(self, name: str = "alice", *, groups: tuple[str, ...] = ("g1", "g2"),
             scope: str = "openid profile email offline_access") -> User:
        return User(self.issuer, f"{name}-{uuid.uuid4().hex[:8]}", list(groups), scope)

    def admin(self) -> User:
        return self.user("admin", groups=(ADMIN_GROUP, "g1"))

    # ---- HTTP ----------------------------------------------------------------------------

    async def request(self, method: str, path: str, user: User | None = None,
                      **kwargs: Any) -> httpx.Response:
        headers = dict(user.headers) if user is not None else {"Accept": "application/json"}
        headers.update(kwargs.pop("headers", {}) or {})
        url = path if path.startswith("http") else BASE + path
        return await self.client.request(method, url, headers=headers, **kwargs)

    async def create(self, user: User, *, template: str = TEMPLATE,
                     parameters: dict[str, Any] | None = None, group: str | None = "g1",
                     **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"template": template, "parameters": parameters or {},
                                **fields}
        if group is not None:
            body["userGroup"] = group
        response = await self.request("POST", "/deployments", user, json=body)
        assert response.status_code == 201, response.text
        deployment: dict[str, Any] = response.json()
        return deployment

    async def show(self, user: User, deployment_id: str) -> httpx.Response:
        return await self.request("GET", f"/deployments/{deployment_id}", user)

    async def eventually(self, probe: Callable[[], Awaitable[bool]], *, within: float = 30.0,
                         what: str = "condition") -> None:
        """Poll until ``probe`` holds (the read models follow the log asynchronously)."""
        deadline = time.monotonic() + within
        while not await probe():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not hold within {within}s")
            await asyncio.sleep(0.02)

    async def wait_for_status(self, user: User, deployment_id: str, status: str,
                              **expected: Any) -> dict[str, Any]:
        """Until GET shows ``status`` (and the ``expected`` fields); returns the body."""
        seen: dict[str, Any] = {}

        async def probe() -> bool:
            response = await self.show(user, deployment_id)
            if response.status_code != 200:
                return False
            seen.clear()
            seen.update(response.json())
            return seen.get("status") == status and all(
                seen.get(k) == v for k, v in expected.items())

        await self.eventually(probe, what=f"deployment {deployment_id} in {status}")
        return dict(seen)

    async def wait_visible(self, user: User, deployment_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {}

        async def probe() -> bool:
            response = await self.show(user, deployment_id)
            if response.status_code == 200:
                body.update(response.json())
            return response.status_code == 200

        await self.eventually(probe, what=f"deployment {deployment_id} visible")
        return body

    # ---- the deployer's side (handler commands) ------------------------------------------

    async def handle(self, command: DeploymentCommand) -> DeploymentState:
        result = await self.system.commands.execute(
            stream_id(command.deployment_id), DECIDER, command,
            Metadata(actor_issuer=DEPLOYER.issuer, actor_subject=DEPLOYER.subject))
        return result.state

    async def state(self, deployment_id: str) -> DeploymentState:
        state, _ = await self.system.commands.load(stream_id(deployment_id), DECIDER)
        return state

    async def start_attempt(self, deployment_id: str) -> DeploymentState:
        state = await self.state(deployment_id)
        await self.handle(RecordScheduling(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
            candidates=(RankedSite(site=SITE, score=0.9),), ranking_method="test"))
        attempt = state.last_attempt_number + 1
        await self.handle(StartAttempt(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
            attempt=attempt, site=SITE, cloud_provider_endpoint=ENDPOINT))
        return await self.handle(RecordInfrastructureCreated(
            deployment_id=deployment_id, actor=DEPLOYER, attempt=attempt,
            infrastructure_id=f"infra-{deployment_id[:8]}-{attempt}"))

    async def complete_create(self, deployment_id: str, *,
                              resources: tuple[Resource, ...] | None = None,
                              outputs: dict[str, Any] | None = None) -> DeploymentState:
        """Schedule, start an attempt, record its infrastructure and VMs, complete."""
        state = await self.start_attempt(deployment_id)
        await self.handle(ChangeResources(
            deployment_id=deployment_id, actor=DEPLOYER,
            resources=resources if resources is not None else (vm("vm-1"),)))
        return await self.handle(CompleteDeployment(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
            outputs=outputs if outputs is not None else {"node_ip": "192.0.2.10"}))

    async def complete_update(self, deployment_id: str) -> DeploymentState:
        state = await self.state(deployment_id)
        return await self.handle(CompleteDeployment(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
            outputs={"node_ip": "192.0.2.10"}))

    async def fail_create(self, deployment_id: str, reason: str = "no site could deploy it"
                          ) -> DeploymentState:
        state = await self.state(deployment_id)
        if state.candidates is None:
            await self.handle(RecordScheduling(
                deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
                candidates=(), ranking_method="test"))
        return await self.handle(FailDeployment(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
            reason=reason))

    async def complete_deletion(self, deployment_id: str) -> DeploymentState:
        state = await self.state(deployment_id)
        return await self.handle(CompleteDeletion(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation))

    async def fail_deletion(self, deployment_id: str, reason: str) -> DeploymentState:
        state = await self.state(deployment_id)
        return await self.handle(FailDeletion(
            deployment_id=deployment_id, actor=DEPLOYER, operation=state.operation,
            reason=reason))

    async def change_resources(self, deployment_id: str, *resources: Resource
                               ) -> DeploymentState:
        return await self.handle(ChangeResources(
            deployment_id=deployment_id, actor=DEPLOYER, resources=resources))

    async def record_log(self, deployment_id: str, log: str) -> DeploymentState:
        return await self.handle(RecordLog(deployment_id=deployment_id, actor=DEPLOYER,
                                           log=log))

    async def completed_deployment(self, user: User, **create: Any) -> str:
        """A deployment of ``user`` in CREATE_COMPLETE with one started VM, projected."""
        deployment_id = str((await self.create(user, **create))["uuid"])
        await self.complete_create(deployment_id)
        await self.wait_for_status(user, deployment_id, "CREATE_COMPLETE")
        return deployment_id


def vm(resource_id: str, state: NodeState = NodeState.STARTED, *,
       node_type: str = "tosca.nodes.indigo.Compute", node_name: str = "server",
       im_vm_id: str | None = "0") -> Resource:
    return Resource(resource_id=resource_id, node_name=node_name, node_type=node_type,
                    state=state, physical_id=f"os-{resource_id}", im_vm_id=im_vm_id)


def assert_legacy_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The legacy error body: numeric code, reason phrase title, non-empty message."""
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert body["code"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"code", "title", "message"}
    return body


def has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(has_null(v) for v in value)
    return False
