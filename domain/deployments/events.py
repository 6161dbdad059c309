"""Deployment events: the storage format of the ``deployment-<uuid>`` streams.

Tags are stable public names (``deployment.<fact>``); class names may change, tags may not.
Evolution is additive: a new field gets a default, a breaking change gets a new tag (or an
upcaster in the event store). Unknown fields are accepted on decode, so older code can read
newer events. The store records a schema version per tag, taken from :data:`SCHEMA_VERSIONS`.

Every event names the deployment, when it happened (``occurred_at``, passed to ``decide``) and
who caused it (``actor``: a user, or a system identity for handlers). Events are self-contained
enough for statistics and audits (owner, group, template identity, requested resources, site),
and never carry a credential.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

from domain.event_catalogue import EventCatalogue
from domain.identity import Actor

from .values import (
    AttemptFailureCause,
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
    ResourceAction,
    Site,
    SiteRejection,
    TemplateIdentity,
)


class DeploymentEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every deployment event."""

    deployment_id: str
    occurred_at: datetime
    actor: Actor


# --- user intentions -----------------------------------------------------------------------


class DeploymentRequested(DeploymentEvent, tag="deployment.requested", frozen=True, kw_only=True):
    """A deployment was asked for (POST): status ``CREATE_IN_PROGRESS``, operation 1."""

    operation: int
    owner: Actor
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
    data_requirements: tuple[DataRequirement, ...] = ()


class DeploymentUpdateRequested(
    DeploymentEvent, tag="deployment.update_requested", frozen=True, kw_only=True
):
    """An update was asked for (PUT): status ``UPDATE_IN_PROGRESS``.

    ``parameters`` are the effective inputs after the legacy merge (stored keys overwritten or
    added, never removed); ``submitted_parameters`` are the ones the request carried.
    ``callback`` and the timeouts are the effective values (unchanged when not given).
    """

    operation: int
    previous_status: DeploymentStatus
    template: str
    template_identity: TemplateIdentity
    requested_resources: RequestedResources
    parameters: JsonObject = msgspec.field(default_factory=dict)
    submitted_parameters: JsonObject = msgspec.field(default_factory=dict)
    callback: str | None = None
    timeout_mins: int | None = None
    provider_timeout_mins: int | None = None


class DeploymentDeletionRequested(
    DeploymentEvent, tag="deployment.deletion_requested", frozen=True, kw_only=True
):
    """A deletion was asked for (DELETE): status ``DELETE_IN_PROGRESS``.

    ``cancelled_operation`` is the operation that was still running and must be stopped.
    """

    operation: int
    previous_status: DeploymentStatus
    force: bool = False
    cancelled_operation: int | None = None


class DeploymentStatusReset(
    DeploymentEvent, tag="deployment.status_reset", frozen=True, kw_only=True
):
    """A stuck operation was reset (PATCH) from ``*_IN_PROGRESS`` to the matching ``*_FAILED``.

    ``operation`` is the operation it closed; its running work must be cancelled.
    """

    operation: int
    from_status: DeploymentStatus
    to_status: DeploymentStatus
    cancel_running_work: bool = True


class DeploymentRetryRequested(
    DeploymentEvent, tag="deployment.retry_requested", frozen=True, kw_only=True
):
    """A failed create is run again, same template and inputs, same id: ``CREATE_IN_PROGRESS``."""

    operation: int
    previous_status: DeploymentStatus = DeploymentStatus.CREATE_FAILED


class DeploymentResourceActionRequested(
    DeploymentEvent, tag="deployment.resource_action_requested", frozen=True, kw_only=True
):
    """A start or stop of one compute resource was asked for."""

    resource_id: str
    action: ResourceAction


# --- facts reported by handlers ------------------------------------------------------------


class DeploymentScheduled(DeploymentEvent, tag="deployment.scheduled", frozen=True, kw_only=True):
    """The scheduler ranked the candidate sites of a create operation (best first)."""

    operation: int
    candidates: tuple[RankedSite, ...]
    ranking_method: str
    model_version: str | None = None
    rejected: tuple[SiteRejection, ...] = ()
    # issue 4: why this ranking method (e.g. the external ranker did not answer in time)
    ranking_note: str | None = None


class DeploymentAttemptStarted(
    DeploymentEvent, tag="deployment.attempt_started", frozen=True, kw_only=True
):
    """Attempt ``attempt`` (1, 2, ... over the whole stream) started on ``site``."""

    operation: int
    attempt: int
    site: Site
    cloud_provider_endpoint: CloudProviderEndpoint | None = None
    deployment_provider: DeploymentProvider = DeploymentProvider.IM


class DeploymentInfrastructureCreated(
    DeploymentEvent, tag="deployment.infrastructure_created", frozen=True, kw_only=True
):
    """The deployer created infrastructure ``infrastructure_id`` (IM id) for an attempt."""

    attempt: int
    infrastructure_id: str
    site: Site


class DeploymentInfrastructureDestroyed(
    DeploymentEvent, tag="deployment.infrastructure_destroyed", frozen=True, kw_only=True
):
    """An attempt's infrastructure was destroyed (cleanup of a failed attempt, or teardown)."""

    attempt: int
    infrastructure_id: str


class DeploymentAttemptFailed(
    DeploymentEvent, tag="deployment.attempt_failed", frozen=True, kw_only=True
):
    """An attempt ended without success; ``cause`` tells a site failure from a cancellation."""

    operation: int
    attempt: int
    site: Site
    reason: str
    cause: AttemptFailureCause = AttemptFailureCause.ERROR


class DeploymentCompleted(DeploymentEvent, tag="deployment.completed", frozen=True, kw_only=True):
    """A create or update operation succeeded: ``CREATE_COMPLETE`` or ``UPDATE_COMPLETE``."""

    operation: int
    kind: OperationKind
    status: DeploymentStatus
    outputs: JsonObject = msgspec.field(default_factory=dict)
    attempt: int | None = None
    site: Site | None = None
    cloud_provider_endpoint: CloudProviderEndpoint | None = None
    deployment_provider: DeploymentProvider | None = None
    infrastructure_id: str | None = None


class DeploymentFailed(DeploymentEvent, tag="deployment.failed", frozen=True, kw_only=True):
    """A create or update operation failed: ``CREATE_FAILED`` or ``UPDATE_FAILED``."""

    operation: int
    kind: OperationKind
    status: DeploymentStatus
    reason: str


class DeploymentDeleted(DeploymentEvent, tag="deployment.deleted", frozen=True, kw_only=True):
    """The deletion completed: ``DELETE_COMPLETE``, a tombstone.

    ``infrastructure_ids`` are the infrastructures that were still live and are now released
    (with ``force``, the deployer may have left some cloud resources behind).
    """

    operation: int
    force: bool = False
    infrastructure_ids: tuple[str, ...] = ()


class DeploymentDeletionFailed(
    DeploymentEvent, tag="deployment.deletion_failed", frozen=True, kw_only=True
):
    """The deletion failed: ``DELETE_FAILED``; DELETE may be asked again (maybe forced)."""

    operation: int
    reason: str


class DeploymentResourcesChanged(
    DeploymentEvent, tag="deployment.resources_changed", frozen=True, kw_only=True
):
    """Resources were added or changed (upsert by ``resource_id``); only the changed ones."""

    resources: tuple[Resource, ...]


class DeploymentLogUpdated(
    DeploymentEvent, tag="deployment.log_updated", frozen=True, kw_only=True
):
    """A new snapshot of the deployer's contextualisation log (legacy ``GET …/log``)."""

    log: str
    attempt: int | None = None


# --- data staging (issue 6) ----------------------------------------------------------------


class DeploymentDataReady(
    DeploymentEvent, tag="deployment.data_ready", frozen=True, kw_only=True
):
    """Every data requirement the deployment waits for has its Rucio rules OK: the deployer
    may start (clears ``awaiting_data``). ``replication_ids`` are the replications checked."""

    operation: int
    replication_ids: tuple[str, ...] = ()


# --- end data staging ----------------------------------------------------------------------


EVENT_TYPES: Final[tuple[type[DeploymentEvent], ...]] = (
    DeploymentRequested,
    DeploymentUpdateRequested,
    DeploymentDeletionRequested,
    DeploymentStatusReset,
    DeploymentRetryRequested,
    DeploymentResourceActionRequested,
    DeploymentScheduled,
    DeploymentAttemptStarted,
    DeploymentInfrastructureCreated,
    DeploymentInfrastructureDestroyed,
    DeploymentAttemptFailed,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentDeleted,
    DeploymentDeletionFailed,
    DeploymentResourcesChanged,
    DeploymentLogUpdated,
    DeploymentDataReady,  # issue 6
)

_CATALOGUE: Final = EventCatalogue[DeploymentEvent](EVENT_TYPES)
EVENT_TYPES_BY_TAG: Final = _CATALOGUE.types_by_tag
SCHEMA_VERSIONS: Final = _CATALOGUE.schema_versions
"""Current schema version per tag, recorded by the store with each event."""
encode_event: Final = _CATALOGUE.encode
decode_event: Final = _CATALOGUE.decode
