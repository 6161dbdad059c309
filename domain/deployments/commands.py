"""Deployment commands: what users (through the API) and handlers ask the aggregate to do.

Every command names the deployment and the acting identity. User commands also say whether the
actor is an admin of its issuer (the API knows from the token; the decider only applies the
owner-or-admin rule). Handler commands act under a system identity
(:func:`domain.identity.system_actor`) and name the operation or attempt they report on, so
that late or repeated reports can be told apart from current ones.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

from domain.identity import Actor

from .values import (
    AttemptFailureCause,
    CloudProviderEndpoint,
    DataRequirement,
    DeploymentProvider,
    DeploymentStatus,
    JsonObject,
    PreferredSite,
    RankedSite,
    RequestedResources,
    Resource,
    ResourceAction,
    Site,
    SiteRejection,
    TemplateIdentity,
)


class DeploymentCommand(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every deployment command."""

    deployment_id: str
    actor: Actor


class UserCommand(DeploymentCommand, frozen=True, kw_only=True):
    """A command a user issues; ``actor_is_admin`` means admin of ``actor.issuer``."""

    actor_is_admin: bool = False


# --- user commands -------------------------------------------------------------------------


class CreateDeployment(UserCommand, frozen=True, kw_only=True):
    """POST /deployments. ``owner`` defaults to the actor; only a system actor may set another
    (e.g. a deployment made by a data-movement schedule on its owner's behalf)."""

    user_group: str | None
    template: str
    template_identity: TemplateIdentity
    requested_resources: RequestedResources
    parameters: JsonObject = msgspec.field(default_factory=dict)
    callback: str | None = None
    timeout_mins: int | None = None
    provider_timeout_mins: int | None = None
    max_providers_retry: int | None = None
    keep_last_attempt: bool = False
    preferred_site: PreferredSite | None = None
    owner: Actor | None = None
    data_requirements: tuple[DataRequirement, ...] = ()


class UpdateDeployment(UserCommand, frozen=True, kw_only=True):
    """PUT /deployments/{id}. ``None`` means "keep the stored value"; ``parameters`` are merged
    into the stored ones; a ``user_group`` different from the stored one is refused."""

    template: str
    template_identity: TemplateIdentity
    requested_resources: RequestedResources
    parameters: JsonObject = msgspec.field(default_factory=dict)
    callback: str | None = None
    timeout_mins: int | None = None
    provider_timeout_mins: int | None = None
    user_group: str | None = None


class DeleteDeployment(UserCommand, frozen=True, kw_only=True):
    """DELETE /deployments/{id}[?force=true]."""

    force: bool = False


class ResetDeployment(UserCommand, frozen=True, kw_only=True):
    """PATCH /deployments/{id} with ``{"status": <target>}``."""

    status: DeploymentStatus


class RetryDeployment(UserCommand, frozen=True, kw_only=True):
    """Run a failed create again (additive endpoint)."""


class RequestResourceAction(UserCommand, frozen=True, kw_only=True):
    """POST /deployments/{id}/resources/{rid}/actions with ``{"type": "start"|"stop"}``.

    Whether the node derives from ``tosca.nodes.Compute`` is the API's check (it needs the
    TOSCA type hierarchy)."""

    resource_id: str
    action: ResourceAction


# --- handler commands ----------------------------------------------------------------------


class RecordScheduling(DeploymentCommand, frozen=True, kw_only=True):
    """The scheduler's ranked candidates for a create operation (may be empty)."""

    operation: int
    candidates: tuple[RankedSite, ...]
    ranking_method: str
    model_version: str | None = None
    rejected: tuple[SiteRejection, ...] = ()
    # issue 4: why this ranking method (e.g. the external ranker did not answer in time)
    ranking_note: str | None = None


class StartAttempt(DeploymentCommand, frozen=True, kw_only=True):
    """Record, before calling the deployer, that attempt ``attempt`` runs on ``site``."""

    operation: int
    attempt: int
    site: Site
    cloud_provider_endpoint: CloudProviderEndpoint | None = None
    deployment_provider: DeploymentProvider = DeploymentProvider.IM


class RecordInfrastructureCreated(DeploymentCommand, frozen=True, kw_only=True):
    """The deployer returned an infrastructure id for an attempt (persist it at once)."""

    attempt: int
    infrastructure_id: str


class RecordInfrastructureDestroyed(DeploymentCommand, frozen=True, kw_only=True):
    """An attempt's infrastructure is gone (destroyed, or 404 at the deployer)."""

    attempt: int
    infrastructure_id: str


class FailAttempt(DeploymentCommand, frozen=True, kw_only=True):
    """The running attempt failed or timed out."""

    attempt: int
    reason: str
    cause: AttemptFailureCause = AttemptFailureCause.ERROR


class CompleteDeployment(DeploymentCommand, frozen=True, kw_only=True):
    """The create (on the running attempt) or update operation succeeded."""

    operation: int
    outputs: JsonObject = msgspec.field(default_factory=dict)


class FailDeployment(DeploymentCommand, frozen=True, kw_only=True):
    """The create or update operation failed for good (a running attempt fails with it)."""

    operation: int
    reason: str
    cause: AttemptFailureCause = AttemptFailureCause.ERROR


class CompleteDeletion(DeploymentCommand, frozen=True, kw_only=True):
    """Everything of the deployment was torn down."""

    operation: int


class FailDeletion(DeploymentCommand, frozen=True, kw_only=True):
    """The teardown failed."""

    operation: int
    reason: str


class ChangeResources(DeploymentCommand, frozen=True, kw_only=True):
    """Observed resources (upsert by ``resource_id``); unchanged ones produce nothing."""

    resources: tuple[Resource, ...]


class RecordLog(DeploymentCommand, frozen=True, kw_only=True):
    """A new snapshot of the deployer's log; an unchanged one produces nothing."""

    log: str
    attempt: int | None = None


# --- data staging (issue 6) ----------------------------------------------------------------


class MarkDataReady(DeploymentCommand, frozen=True, kw_only=True):
    """The Rucio handler saw every waited-for requirement's rules OK (see
    ``deployment.data_ready``). A STUCK rule fails the deployment through FailDeployment."""

    operation: int
    replication_ids: tuple[str, ...] = ()


# --- end data staging ----------------------------------------------------------------------


DeploymentCommandUnion: TypeAlias = (
    MarkDataReady  # issue 6
    | CreateDeployment
    | UpdateDeployment
    | DeleteDeployment
    | ResetDeployment
    | RetryDeployment
    | RequestResourceAction
    | RecordScheduling
    | StartAttempt
    | RecordInfrastructureCreated
    | RecordInfrastructureDestroyed
    | FailAttempt
    | CompleteDeployment
    | FailDeployment
    | CompleteDeletion
    | FailDeletion
    | ChangeResources
    | RecordLog
)

USER_COMMAND_TYPES: tuple[type[UserCommand], ...] = (
    CreateDeployment,
    UpdateDeployment,
    DeleteDeployment,
    ResetDeployment,
    RetryDeployment,
    RequestResourceAction,
)

HANDLER_COMMAND_TYPES: tuple[type[DeploymentCommand], ...] = (
    RecordScheduling,
    StartAttempt,
    RecordInfrastructureCreated,
    RecordInfrastructureDestroyed,
    FailAttempt,
    CompleteDeployment,
    FailDeployment,
    CompleteDeletion,
    FailDeletion,
    ChangeResources,
    RecordLog,
    MarkDataReady,  # issue 6
)
