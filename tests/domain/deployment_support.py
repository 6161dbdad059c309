"""Given/when/then for the deployment decider, and builders of typical events and commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain.deployments import (
    CloudProviderEndpoint,
    CreateDeployment,
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentDeletionRequested,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentInfrastructureCreated,
    DeploymentRequested,
    DeploymentResourcesChanged,
    DeploymentScheduled,
    DeploymentState,
    DeploymentStatus,
    DeploymentUpdateRequested,
    IaasType,
    NodeState,
    OperationKind,
    RankedSite,
    RequestedResources,
    Resource,
    Site,
    TemplateIdentity,
    decide,
    decode_event,
    encode_event,
    fold,
    template_sha256,
)
from domain.identity import Actor, system_actor
from tests.given_when_then import Decider, Given

DEPLOYMENT_ID = "11ef8b7c-2f4e-1b2a-9a3d-0242ac120002"
ISSUER = "https://iam.example/"
OWNER = Actor(issuer=ISSUER, subject="owner-sub")
OTHER_USER = Actor(issuer=ISSUER, subject="someone-else")
ADMIN = Actor(issuer=ISSUER, subject="admin-sub")
FOREIGN_ADMIN = Actor(issuer="https://other-iam.example/", subject="admin-sub")
SCHEDULER = system_actor("scheduler")
DEPLOYER = system_actor("im-handler")

T0 = datetime(2025, 2, 20, 10, 15, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)

TEMPLATE = "tosca_definitions_version: tosca_simple_yaml_1_0\ntopology_template: {}\n"
TEMPLATE_V2 = TEMPLATE + "# scaled out\n"
IDENTITY = TemplateIdentity(
    name="single-vm",
    type="vm",
    hash=template_sha256(TEMPLATE),
    node_types=("tosca.nodes.indigo.Compute",),
)
IDENTITY_V2 = TemplateIdentity(name="single-vm", type="vm", hash=template_sha256(TEMPLATE_V2))
RESOURCES = RequestedResources(vms=1, vcpus=2, ram_mb=4096, disk_gb=20.0)
RESOURCES_V2 = RequestedResources(vms=2, vcpus=4, ram_mb=8192, disk_gb=40.0)

SITE_A = Site(provider_id="prov-a", provider_name="BACKBONE", region="cnaf", project="p1")
SITE_B = Site(provider_id="prov-b", provider_name="CLOUD-VENETO", region="pd", project="p2")
SITE_C = Site(provider_id="prov-c", provider_name="RECAS", region="ba")
ENDPOINT_A = CloudProviderEndpoint(
    cp_endpoint="https://keystone.a.example:5000/v3",
    iaas_type=IaasType.OPENSTACK,
    cp_compute_service_id="svc-a",
    region="cnaf",
    im_endpoint="https://im.example/im",
)


def create_command(**overrides: Any) -> CreateDeployment:
    fields: dict[str, Any] = dict(
        deployment_id=DEPLOYMENT_ID,
        actor=OWNER,
        user_group="g1",
        template=TEMPLATE,
        template_identity=IDENTITY,
        requested_resources=RESOURCES,
        parameters={"num_cpus": 2},
        callback="https://dashboard.example/callback",
        timeout_mins=720,
        provider_timeout_mins=120,
        max_providers_retry=None,
        keep_last_attempt=False,
    )
    fields.update(overrides)
    return CreateDeployment(**fields)


def requested(**overrides: Any) -> DeploymentRequested:
    fields: dict[str, Any] = dict(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=T0,
        actor=OWNER,
        operation=1,
        owner=OWNER,
        user_group="g1",
        template=TEMPLATE,
        template_identity=IDENTITY,
        requested_resources=RESOURCES,
        parameters={"num_cpus": 2},
        callback="https://dashboard.example/callback",
        timeout_mins=720,
        provider_timeout_mins=120,
        max_providers_retry=None,
        keep_last_attempt=False,
    )
    fields.update(overrides)
    return DeploymentRequested(**fields)


def scheduled(*sites: Site, operation: int = 1, at: datetime = T0) -> DeploymentScheduled:
    return DeploymentScheduled(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=at,
        actor=SCHEDULER,
        operation=operation,
        candidates=tuple(RankedSite(site=s, score=1.0 / (i + 1)) for i, s in enumerate(sites)),
        ranking_method="fallback",
    )


def attempt_started(
    attempt: int, site: Site = SITE_A, *, operation: int = 1, at: datetime = T0
) -> DeploymentAttemptStarted:
    return DeploymentAttemptStarted(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=at,
        actor=DEPLOYER,
        operation=operation,
        attempt=attempt,
        site=site,
        cloud_provider_endpoint=ENDPOINT_A if site == SITE_A else None,
    )


def infrastructure_created(
    attempt: int, infrastructure_id: str, site: Site = SITE_A, *, at: datetime = T0
) -> DeploymentInfrastructureCreated:
    return DeploymentInfrastructureCreated(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=at,
        actor=DEPLOYER,
        attempt=attempt,
        infrastructure_id=infrastructure_id,
        site=site,
    )


def attempt_failed(
    attempt: int, site: Site = SITE_A, *, operation: int = 1, reason: str = "quota exceeded"
) -> DeploymentAttemptFailed:
    return DeploymentAttemptFailed(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=T0,
        actor=DEPLOYER,
        operation=operation,
        attempt=attempt,
        site=site,
        reason=reason,
    )


def create_completed(
    attempt: int = 1,
    infrastructure_id: str | None = "inf-1",
    *,
    outputs: dict[str, Any] | None = None,
) -> DeploymentCompleted:
    return DeploymentCompleted(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=T0,
        actor=DEPLOYER,
        operation=1,
        kind=OperationKind.CREATE,
        status=DeploymentStatus.CREATE_COMPLETE,
        outputs={"node_ip": "192.0.2.10"} if outputs is None else outputs,
        attempt=attempt,
        site=SITE_A,
        cloud_provider_endpoint=ENDPOINT_A,
        infrastructure_id=infrastructure_id,
    )


def update_requested(operation: int = 2, **overrides: Any) -> DeploymentUpdateRequested:
    fields: dict[str, Any] = dict(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=T0,
        actor=OWNER,
        operation=operation,
        previous_status=DeploymentStatus.CREATE_COMPLETE,
        template=TEMPLATE_V2,
        template_identity=IDENTITY_V2,
        requested_resources=RESOURCES_V2,
        parameters={"num_cpus": 4},
        submitted_parameters={"num_cpus": 4},
        callback="https://dashboard.example/callback",
        timeout_mins=720,
        provider_timeout_mins=120,
    )
    fields.update(overrides)
    return DeploymentUpdateRequested(**fields)


def deletion_requested(
    operation: int, previous: DeploymentStatus, **overrides: Any
) -> DeploymentDeletionRequested:
    fields: dict[str, Any] = dict(
        deployment_id=DEPLOYMENT_ID,
        occurred_at=T0,
        actor=OWNER,
        operation=operation,
        previous_status=previous,
    )
    fields.update(overrides)
    return DeploymentDeletionRequested(**fields)


def vm(state: NodeState = NodeState.STARTED, resource_id: str = "res-1") -> Resource:
    return Resource(
        resource_id=resource_id,
        node_name="simple_node",
        node_type="tosca.nodes.indigo.Compute",
        state=state,
        physical_id="vm-38e9",
        im_vm_id="0",
    )


def resources_changed(*resources: Resource) -> DeploymentResourcesChanged:
    return DeploymentResourcesChanged(
        deployment_id=DEPLOYMENT_ID, occurred_at=T0, actor=DEPLOYER, resources=resources
    )


# Histories that reach each status.
def created_history() -> list[DeploymentEvent]:
    return [
        requested(),
        scheduled(SITE_A, SITE_B),
        attempt_started(1),
        infrastructure_created(1, "inf-1"),
        create_completed(),
    ]


def create_failed_history() -> list[DeploymentEvent]:
    return [
        requested(),
        scheduled(SITE_A),
        attempt_started(1),
        attempt_failed(1),
        DeploymentFailed(
            deployment_id=DEPLOYMENT_ID,
            occurred_at=T0,
            actor=DEPLOYER,
            operation=1,
            kind=OperationKind.CREATE,
            status=DeploymentStatus.CREATE_FAILED,
            reason="no site could deploy it",
        ),
    ]


# --- given / when / then -------------------------------------------------------------------


DECIDER: Decider[DeploymentState, DeploymentEvent] = Decider(
    decide=decide, fold=fold, encode_event=encode_event, decode_event=decode_event, now=NOW
)


def given(*events: DeploymentEvent) -> Given[DeploymentState, DeploymentEvent]:
    return Given(DECIDER, fold(events))


def _event(cls: type[DeploymentEvent], **fields: Any) -> DeploymentEvent:
    base: dict[str, Any] = dict(deployment_id=DEPLOYMENT_ID, occurred_at=T0, actor=DEPLOYER)
    base.update(fields)
    return cls(**base)


def history_in(status: DeploymentStatus) -> list[DeploymentEvent]:
    """A typical history that leaves the deployment in ``status``."""
    S = DeploymentStatus
    created = created_history()
    update_completed = _event(
        DeploymentCompleted,
        operation=2,
        kind=OperationKind.UPDATE,
        status=S.UPDATE_COMPLETE,
        outputs={"node_ip": "192.0.2.10"},
        site=SITE_A,
        cloud_provider_endpoint=ENDPOINT_A,
        infrastructure_id="inf-1",
    )
    update_failed = _event(
        DeploymentFailed,
        operation=2,
        kind=OperationKind.UPDATE,
        status=S.UPDATE_FAILED,
        reason="IM said no",
    )
    histories: dict[DeploymentStatus, list[DeploymentEvent]] = {
        S.CREATE_IN_PROGRESS: [requested()],
        S.CREATE_COMPLETE: created,
        S.CREATE_FAILED: create_failed_history(),
        S.UPDATE_IN_PROGRESS: [*created, update_requested()],
        S.UPDATE_COMPLETE: [*created, update_requested(), update_completed],
        S.UPDATE_FAILED: [*created, update_requested(), update_failed],
        S.DELETE_IN_PROGRESS: [*created, deletion_requested(2, S.CREATE_COMPLETE)],
        S.DELETE_COMPLETE: [
            *created,
            deletion_requested(2, S.CREATE_COMPLETE),
            _event(DeploymentDeleted, operation=2, infrastructure_ids=("inf-1",)),
        ],
        S.DELETE_FAILED: [
            *created,
            deletion_requested(2, S.CREATE_COMPLETE),
            _event(DeploymentDeletionFailed, operation=2, reason="IM unreachable"),
        ],
    }
    history = histories[status]
    assert fold(history).status == status
    return history


REACHABLE_STATUSES = [s for s in DeploymentStatus if s != DeploymentStatus.UNKNOWN]
