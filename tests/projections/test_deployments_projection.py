"""The deployments and resources views against the domain: for random command histories
(real event store, real Postgres), every row equals what ``domain.deployments.fold`` says,
a repeated event changes nothing, and the list query filters, sorts and pages on the
server."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.deployments import (
    ChangeResources,
    CloudProviderEndpoint,
    CompleteDeletion,
    CompleteDeployment,
    CreateDeployment,
    DeleteDeployment,
    DeploymentCommand,
    DeploymentError,
    DeploymentProvider,
    DeploymentState,
    DeploymentStatus,
    FailAttempt,
    FailDeletion,
    FailDeployment,
    IaasType,
    NodeState,
    RankedSite,
    RecordInfrastructureCreated,
    RecordInfrastructureDestroyed,
    RecordLog,
    RecordScheduling,
    RequestedResources,
    RequestResourceAction,
    ResetDeployment,
    Resource,
    ResourceAction,
    RetryDeployment,
    Site,
    StartAttempt,
    TemplateIdentity,
    UpdateDeployment,
    decide,
    evolve,
    fold,
    initial_state,
    stream_id,
)
from domain.identity import Actor, system_actor
from eventstore.command_service import CommandService, Decider
from eventstore.projection import apply_events, create_tables, versioned_tables
from eventstore.records import Metadata, RecordedEvent
from eventstore.store import EventStore
from orchestrator.bootstrap import event_registry
from orchestrator.settings import database_engine
from projections import deployments as deployments_view
from projections import resources as resources_view
from tests.event_log import all_events

OWNERS = [Actor(issuer="https://iam.example/", subject=f"user-{n}") for n in range(3)]
ADMIN = Actor(issuer="https://iam.example/", subject="admin")
DEPLOYER = system_actor("test-deployer")
SITES = [Site(provider_id="p1", provider_name="BACKBONE", region="cnaf"),
         Site(provider_id="p2", provider_name="CLOUD-VENETO", region=None, project="x")]
ENDPOINTS = [None, CloudProviderEndpoint(cp_endpoint="https://ks.example:5000/v3",
                                         iaas_type=IaasType.OPENSTACK, region="cnaf"),
             CloudProviderEndpoint(cp_endpoint="https://k8s.example",
                                   iaas_type=IaasType.KUBERNETES)]
TEMPLATES = ["tosca_definitions_version: tosca_simple_yaml_1_0\n# a\n",
             "tosca_definitions_version: tosca_simple_yaml_1_0\n# b\n"]


DECIDER: Decider[Any, DeploymentState, Any] = Decider(
    initial_state=initial_state, evolve=evolve, decide=decide)


class SteppingClock:
    """Deterministic, strictly increasing decision times."""

    def __init__(self) -> None:
        self.now = datetime(2025, 2, 20, 10, 15, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=7, microseconds=123)
        return self.now


@pytest.fixture(name="fx_view_engine")
async def fixture_view_engine(fx_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = database_engine(fx_database_url)
    yield engine
    await engine.dispose()


def identity(rng: random.Random, template: str) -> TemplateIdentity:
    return TemplateIdentity(name=f"T{len(template)}", type=rng.choice(["vm", "k8s"]),
                            hash=uuid.uuid5(uuid.NAMESPACE_OID, template).hex)


def next_command(rng: random.Random, deployment_id: str, state: DeploymentState,
                 owner: Actor) -> DeploymentCommand:
    """A plausible next command: mostly valid for ``state``, sometimes not (refused ones are
    simply skipped by the caller)."""
    if not state.exists:
        template = rng.choice(TEMPLATES)
        return CreateDeployment(
            deployment_id=deployment_id, actor=owner, user_group=rng.choice(["g1", "g2", None]),
            template=template, template_identity=identity(rng, template),
            requested_resources=RequestedResources(vms=1, vcpus=2, ram_mb=4096),
            parameters={"n": rng.randint(1, 4)}, callback=rng.choice([None, "https://cb/x"]),
            max_providers_retry=rng.choice([None, 2]))
    user = ADMIN if rng.random() < 0.2 else owner
    operation = state.operation
    attempt = state.last_attempt_number
    choices: list[DeploymentCommand] = [
        UpdateDeployment(deployment_id=deployment_id, actor=user, actor_is_admin=True,
                         template=TEMPLATES[1], template_identity=identity(rng, TEMPLATES[1]),
                         requested_resources=RequestedResources(vms=2),
                         parameters={"m": rng.randint(1, 9)}),
        DeleteDeployment(deployment_id=deployment_id, actor=user, actor_is_admin=True,
                         force=rng.random() < 0.5),
        ResetDeployment(deployment_id=deployment_id, actor=user, actor_is_admin=True,
                        status=rng.choice([DeploymentStatus.DELETE_FAILED,
                                           DeploymentStatus.CREATE_FAILED,
                                           DeploymentStatus.UPDATE_FAILED])),
        RetryDeployment(deployment_id=deployment_id, actor=user, actor_is_admin=True),
        RecordScheduling(deployment_id=deployment_id, actor=DEPLOYER, operation=operation,
                         candidates=tuple(RankedSite(site=s) for s in SITES),
                         ranking_method="test"),
        StartAttempt(deployment_id=deployment_id, actor=DEPLOYER, operation=operation,
                     attempt=attempt + 1, site=rng.choice(SITES),
                     cloud_provider_endpoint=rng.choice(ENDPOINTS),
                     deployment_provider=rng.choice([DeploymentProvider.IM,
                                                     DeploymentProvider.KUBERNETES])),
        RecordInfrastructureCreated(deployment_id=deployment_id, actor=DEPLOYER,
                                    attempt=max(1, attempt - rng.randint(0, 1)),
                                    infrastructure_id=f"infra-{rng.randint(1, 50)}"),
        FailAttempt(deployment_id=deployment_id, actor=DEPLOYER, attempt=max(1, attempt),
                    reason="site failed"),
        CompleteDeployment(deployment_id=deployment_id, actor=DEPLOYER, operation=operation,
                           outputs={"ip": f"192.0.2.{rng.randint(1, 250)}",
                                    "list": [1, {"a": None}]}),
        FailDeployment(deployment_id=deployment_id, actor=DEPLOYER, operation=operation,
                       reason=f"failure {rng.randint(1, 9)}"),
        CompleteDeletion(deployment_id=deployment_id, actor=DEPLOYER, operation=operation),
        FailDeletion(deployment_id=deployment_id, actor=DEPLOYER, operation=operation,
                     reason="could not delete"),
        ChangeResources(deployment_id=deployment_id, actor=DEPLOYER, resources=tuple(
            Resource(resource_id=f"r{n}", node_name=f"node{n}",
                     node_type=rng.choice(["tosca.nodes.indigo.Compute",
                                           "tosca.nodes.network.Network"]),
                     state=rng.choice([NodeState.STARTED, NodeState.STOPPED,
                                       NodeState.CONFIGURING]),
                     physical_id=rng.choice([None, f"vm-{n}"]), im_vm_id=str(n))
            for n in rng.sample(range(4), rng.randint(1, 3)))),
        RequestResourceAction(deployment_id=deployment_id, actor=user, actor_is_admin=True,
                              resource_id=f"r{rng.randint(0, 3)}",
                              action=rng.choice([ResourceAction.START, ResourceAction.STOP])),
        RecordLog(deployment_id=deployment_id, actor=DEPLOYER, log=f"log {rng.randint(1, 5)}"),
    ]
    infra = next((a for a in state.attempts if a.infrastructure_id is not None), None)
    if infra is not None:
        choices.append(RecordInfrastructureDestroyed(
            deployment_id=deployment_id, actor=DEPLOYER, attempt=infra.number,
            infrastructure_id=infra.infrastructure_id or ""))
    likely = [c for c in choices if type(c).__name__ in LIKELY.get(state.status, ())]
    return rng.choice(likely if likely and rng.random() < 0.7 else choices)


S = DeploymentStatus
LIKELY: dict[DeploymentStatus | None, tuple[str, ...]] = {
    S.CREATE_IN_PROGRESS: ("RecordScheduling", "StartAttempt", "RecordInfrastructureCreated",
                           "CompleteDeployment", "FailAttempt", "FailDeployment",
                           "ChangeResources", "RecordLog", "ResetDeployment"),
    S.UPDATE_IN_PROGRESS: ("CompleteDeployment", "FailDeployment", "ResetDeployment"),
    S.DELETE_IN_PROGRESS: ("CompleteDeletion", "FailDeletion", "RecordInfrastructureDestroyed",
                           "ResetDeployment"),
    S.CREATE_COMPLETE: ("UpdateDeployment", "DeleteDeployment", "RequestResourceAction",
                        "ChangeResources"),
    S.UPDATE_COMPLETE: ("UpdateDeployment", "DeleteDeployment", "RequestResourceAction"),
    S.UPDATE_FAILED: ("UpdateDeployment", "DeleteDeployment"),
    S.CREATE_FAILED: ("RetryDeployment", "DeleteDeployment"),
    S.DELETE_FAILED: ("DeleteDeployment",),
}


async def write_histories(store: EventStore, *, seed: int, deployments: int,
                          steps: int) -> dict[str, Actor]:
    rng = random.Random(seed)
    commands = CommandService(store, event_registry(), clock=SteppingClock())
    owners: dict[str, Actor] = {}
    for _ in range(deployments):
        deployment_id = str(uuid.UUID(int=rng.getrandbits(128)))
        owner = rng.choice(OWNERS)
        owners[deployment_id] = owner
        state = DeploymentState()
        for _ in range(steps):
            command = next_command(rng, deployment_id, state, owner)
            try:
                result = await commands.execute(
                    stream_id(deployment_id), DECIDER, command,
                    Metadata(actor_issuer=command.actor.issuer,
                             actor_subject=command.actor.subject))
            except DeploymentError:
                continue
            state = result.state
    return owners


async def project(engine: AsyncEngine, events: list[RecordedEvent], *, twice: bool = False
                  ) -> None:
    """Apply the log to version 1 of both views, in log order (as a rebuild does)."""
    registry = event_registry()
    for projection in (deployments_view.projection, resources_view.projection):
        tables = versioned_tables(projection, 1)
        async with engine.begin() as conn:
            await create_tables(conn, tables)
        items = [(e, registry.decode_recorded(e)) for e in events
                 if e.type in projection.HANDLES]
        for _ in range(2 if twice else 1):
            async with engine.begin() as conn:
                await apply_events(conn, projection, tables, items)


def expected_row(state: DeploymentState) -> dict[str, Any]:
    assert state.status is not None and state.owner is not None
    identity_ = state.template_identity
    assert identity_ is not None
    endpoint = state.cloud_provider_endpoint
    return {
        "id": state.deployment_id, "status": state.status.value, "task": state.task.value,
        "status_reason": state.status_reason, "owner_issuer": state.owner.issuer,
        "owner_subject": state.owner.subject, "user_group": state.user_group,
        "created_at": state.created_at, "updated_at": state.updated_at,
        "template_name": identity_.name, "template_type": identity_.type,
        "template_hash": identity_.hash, "callback": state.callback,
        "timeout_mins": state.timeout_mins, "max_providers_retry": state.max_providers_retry,
        "operation": state.operation, "physical_id": state.physical_id,
        "provider_id": state.site.provider_id if state.site else None,
        "provider_name": state.cloud_provider_name,
        "region": state.site.region if state.site else None,
        "cloud_provider_endpoint": msgspec.to_builtins(endpoint) if endpoint else None,
        "iaas_type": endpoint.iaas_type.value if endpoint else None,
        "deployment_provider": (state.deployment_provider.value
                                if state.deployment_provider else None),
        "outputs": state.outputs,
        "requested_resources": msgspec.json.decode(
            msgspec.json.encode(state.requested_resources)),
    }


async def check_against_domain(engine: AsyncEngine, events: list[RecordedEvent]) -> int:
    registry = event_registry()
    streams: dict[str, list[Any]] = {}
    for event in events:
        streams.setdefault(event.stream_id, []).append(registry.decode_recorded(event))
    async with engine.connect() as conn:
        for stream, decoded in streams.items():
            state = fold(decoded)
            deployment_id = stream.removeprefix("deployment-")
            row = await deployments_view.get_deployment(conn, 1, deployment_id)
            assert row is not None
            expected = expected_row(state)
            assert {k: row[k] for k in expected} == expected, stream
            details = await deployments_view.get_deployment_details(conn, 1, deployment_id)
            assert details == {"id": deployment_id, "template": state.template,
                               "parameters": state.parameters, "log": state.log}
            rows, total = await resources_view.list_resources(conn, 1, deployment_id,
                                                              limit=100)
            assert total == len(state.resources)
            assert sorted((r["resource_id"], r["node_name"], r["node_type"], r["state"],
                           r["physical_id"], r["im_vm_id"]) for r in rows) == sorted(
                (r.resource_id, r.node_name, r.node_type, r.state.value, r.physical_id,
                 r.im_vm_id) for r in state.resources)
    return len(streams)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_views_equal_the_domain_fold(fx_store: EventStore, fx_view_engine: AsyncEngine,
                                           seed: int) -> None:
    await write_histories(fx_store, seed=seed, deployments=12, steps=40)
    events = await all_events(fx_store)
    types = {e.type for e in events}
    await project(fx_view_engine, events)
    assert await check_against_domain(fx_view_engine, events) == 12
    assert len(types) >= 12, types  # the walk reaches most of the lifecycle


async def test_a_repeated_event_changes_nothing(fx_store: EventStore,
                                                fx_view_engine: AsyncEngine) -> None:
    await write_histories(fx_store, seed=7, deployments=4, steps=30)
    events = await all_events(fx_store)
    await project(fx_view_engine, events, twice=True)
    await check_against_domain(fx_view_engine, events)


async def test_list_filters_sorts_and_pages(fx_store: EventStore,
                                            fx_view_engine: AsyncEngine) -> None:
    owners = await write_histories(fx_store, seed=11, deployments=30, steps=8)
    events = await all_events(fx_store)
    await project(fx_view_engine, events)
    async with fx_view_engine.connect() as conn:
        everything, total = await deployments_view.list_deployments(conn, 1, limit=1000)
        assert total == 30 == len(everything)
        created = [row["created_at"] for row in everything]
        assert created == sorted(created, reverse=True)
        owner = OWNERS[0]
        mine = sorted(d for d, o in owners.items() if o == owner)
        rows, total = await deployments_view.list_deployments(
            conn, 1, owner_issuer=owner.issuer, owner_subject=owner.subject,
            sort=[("id", False)], limit=1000)
        assert [r["id"] for r in rows] == mine and total == len(mine)
        pages: list[str] = []
        for page in range(0, 30, 7):
            rows, total = await deployments_view.list_deployments(
                conn, 1, sort=[("created_at", False)], offset=page, limit=7)
            assert total == 30
            pages.extend(r["id"] for r in rows)
        assert pages == [r["id"] for r in reversed(everything)]
        excluded = {DeploymentStatus.DELETE_COMPLETE.value, DeploymentStatus.CREATE_FAILED.value}
        rows, total = await deployments_view.list_deployments(
            conn, 1, excluded_statuses=sorted(excluded), limit=1000)
        assert {r["id"] for r in rows} == {r["id"] for r in everything
                                           if r["status"] not in excluded}
        rows, _ = await deployments_view.list_deployments(conn, 1, user_group="g1", limit=1000)
        assert {r["id"] for r in rows} == {r["id"] for r in everything
                                           if r["user_group"] == "g1"}
        middle = everything[15]["created_at"]
        rows, total = await deployments_view.list_deployments(
            conn, 1, created_after=middle, limit=1000)
        assert total == 16
        rows, total = await deployments_view.list_deployments(conn, 1, provider="BACKBONE",
                                                              limit=1000)
        assert all(r["provider_name"] == "BACKBONE" for r in rows)
        empty, total = await deployments_view.list_deployments(conn, 1, offset=1000, limit=10)
        assert empty == [] and total == 30
