"""The state of one deployment, as folded from its events.

It holds everything ``decide`` needs, and everything the legacy deployment object shows
(``uuid``, ``creationTime``, ``updateTime``, ``physicalId``, ``status``, ``statusReason``,
``task``, ``outputs``, ``callback``, ``userGroup``, ``cloudProviderName``,
``cloudProviderEndpoint``, ``createdBy``) so that it can be derived from events alone.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain.identity import Actor

from .values import (
    AttemptFailureCause,
    AttemptOutcome,
    CloudProviderEndpoint,
    DataRequirement,
    DeploymentProvider,
    DeploymentStatus,
    JsonObject,
    OperationKind,
    PreferredSite,
    RankedSite,
    RequestedResources,
    Resource,
    Site,
    Task,
    TemplateIdentity,
)

IN_PROGRESS_STATUS: dict[OperationKind, DeploymentStatus] = {
    OperationKind.CREATE: DeploymentStatus.CREATE_IN_PROGRESS,
    OperationKind.UPDATE: DeploymentStatus.UPDATE_IN_PROGRESS,
    OperationKind.DELETE: DeploymentStatus.DELETE_IN_PROGRESS,
}
COMPLETE_STATUS: dict[OperationKind, DeploymentStatus] = {
    OperationKind.CREATE: DeploymentStatus.CREATE_COMPLETE,
    OperationKind.UPDATE: DeploymentStatus.UPDATE_COMPLETE,
    OperationKind.DELETE: DeploymentStatus.DELETE_COMPLETE,
}
FAILED_STATUS: dict[OperationKind, DeploymentStatus] = {
    OperationKind.CREATE: DeploymentStatus.CREATE_FAILED,
    OperationKind.UPDATE: DeploymentStatus.UPDATE_FAILED,
    OperationKind.DELETE: DeploymentStatus.DELETE_FAILED,
}
IN_PROGRESS_STATUSES = frozenset(IN_PROGRESS_STATUS.values())
FAILED_STATUSES = frozenset(FAILED_STATUS.values())


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try of a create operation on one site, with the infrastructure it made (if any)."""

    number: int
    operation: int
    site: Site
    started_at: datetime
    cloud_provider_endpoint: CloudProviderEndpoint | None = None
    deployment_provider: DeploymentProvider = DeploymentProvider.IM
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    ended_at: datetime | None = None
    failure_reason: str | None = None
    failure_cause: AttemptFailureCause | None = None
    infrastructure_id: str | None = None
    infrastructure_live: bool = False


class DeploymentState(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment as of some version of its stream; ``status is None`` means "no deployment".

    ``operation`` counts the requested operations (create, update, delete, retry), starting at 1;
    ``operation_kind`` is what the latest one does. ``candidates`` are the scheduled sites of the
    current create operation (``None``: not scheduled yet). ``attempts`` are numbered 1, 2, ...
    over the whole stream; ``attempts[n - 1].number == n``.
    """

    deployment_id: str = ""
    version: int = 0
    status: DeploymentStatus | None = None
    task: Task = Task.NONE
    status_reason: str | None = None
    owner: Actor | None = None
    user_group: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    template: str = ""
    template_identity: TemplateIdentity | None = None
    requested_resources: RequestedResources = msgspec.field(default_factory=RequestedResources)
    parameters: JsonObject = msgspec.field(default_factory=dict)
    callback: str | None = None
    timeout_mins: int | None = None
    provider_timeout_mins: int | None = None
    max_providers_retry: int | None = None
    keep_last_attempt: bool = False
    preferred_site: PreferredSite | None = None
    operation: int = 0
    operation_kind: OperationKind | None = None
    candidates: tuple[RankedSite, ...] | None = None
    attempts: tuple[Attempt, ...] = ()
    site: Site | None = None
    cloud_provider_endpoint: CloudProviderEndpoint | None = None
    deployment_provider: DeploymentProvider | None = None
    physical_id: str | None = None
    outputs: JsonObject = msgspec.field(default_factory=dict)
    resources: tuple[Resource, ...] = ()
    log: str | None = None
    force_delete: bool = False
    data_requirements: tuple[DataRequirement, ...] = ()
    # True while the deployment waits for its input data (a Rucio rule to be OK) before
    # the deployer may start; set and cleared by the data-staging events.
    awaiting_data: bool = False

    @property
    def exists(self) -> bool:
        return self.status is not None

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS_STATUSES

    @property
    def running_attempt(self) -> Attempt | None:
        """The attempt still running, if any (at most one, of the current create operation)."""
        if self.attempts and self.attempts[-1].outcome == AttemptOutcome.RUNNING:
            return self.attempts[-1]
        return None

    @property
    def last_attempt_number(self) -> int:
        return len(self.attempts)

    def attempt(self, number: int) -> Attempt | None:
        if 1 <= number <= len(self.attempts):
            return self.attempts[number - 1]
        return None

    @property
    def current_operation_attempts(self) -> tuple[Attempt, ...]:
        return tuple(a for a in self.attempts if a.operation == self.operation)

    @property
    def live_infrastructure_ids(self) -> tuple[str, ...]:
        """Infrastructures that exist at the deployer and have not been destroyed."""
        return tuple(
            a.infrastructure_id
            for a in self.attempts
            if a.infrastructure_live and a.infrastructure_id is not None
        )

    @property
    def cloud_provider_name(self) -> str | None:
        """Legacy ``cloudProviderName``: the provider of the latest attempt."""
        return self.site.provider_name if self.site is not None else None

    def resource(self, resource_id: str) -> Resource | None:
        for resource in self.resources:
            if resource.resource_id == resource_id:
                return resource
        return None
