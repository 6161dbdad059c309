"""Value objects and vocabularies shared by the deployment events, commands and state.

The enum spellings are the legacy INDIGO PaaS Orchestrator ones (``enums/Status.java``,
``enums/Task.java``, ``enums/NodeStates.java``): they are a wire format for existing clients and
a storage format for our events, so they never change.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any, TypeAlias

import msgspec

JsonObject: TypeAlias = dict[str, Any]
"""A JSON object: TOSCA inputs (parameters) and outputs. Values are any JSON value."""


class DeploymentStatus(enum.StrEnum):
    """Legacy deployment status, spelled exactly as ``enums/Status.java``."""

    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_COMPLETE = "CREATE_COMPLETE"
    CREATE_FAILED = "CREATE_FAILED"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    UPDATE_COMPLETE = "UPDATE_COMPLETE"
    UPDATE_FAILED = "UPDATE_FAILED"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    DELETE_COMPLETE = "DELETE_COMPLETE"
    DELETE_FAILED = "DELETE_FAILED"
    UNKNOWN = "UNKNOWN"


class Task(enum.StrEnum):
    """Legacy deployment task, spelled exactly as ``enums/Task.java``.

    Like the legacy server we only ever set ``NONE`` and ``DEPLOYER``; the other values exist so
    that the vocabulary stays complete.
    """

    NONE = "NONE"
    MONITORING = "MONITORING"
    QOS = "QOS"
    BROKERING = "BROKERING"
    DMS = "DMS"
    DEPLOYER = "DEPLOYER"
    UNKNOWN = "UNKNOWN"


class NodeState(enum.StrEnum):
    """Legacy resource (TOSCA node instance) state, spelled exactly as ``enums/NodeStates.java``."""

    INITIAL = "INITIAL"
    CREATING = "CREATING"
    CREATED = "CREATED"
    CONFIGURING = "CONFIGURING"
    CONFIGURED = "CONFIGURED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    DELETING = "DELETING"
    DELETED = "DELETED"
    ERROR = "ERROR"


class IaasType(enum.StrEnum):
    """Kind of cloud behind a site: legacy ``deploymentType`` / dashboard ``iaasType``."""

    OPENSTACK = "OPENSTACK"
    OPENNEBULA = "OPENNEBULA"
    OCCI = "OCCI"
    AWS = "AWS"
    OTC = "OTC"
    AZURE = "AZURE"
    CHRONOS = "CHRONOS"
    MARATHON = "MARATHON"
    QCG = "QCG"
    KUBERNETES = "KUBERNETES"


class DeploymentProvider(enum.StrEnum):
    """The deployer that builds the infrastructure (legacy ``deploymentProvider``)."""

    IM = "IM"
    HEAT = "HEAT"
    KUBERNETES = "KUBERNETES"
    CHRONOS = "CHRONOS"
    MARATHON = "MARATHON"
    QCG = "QCG"


NOT_UPDATABLE_PROVIDERS = frozenset(
    {DeploymentProvider.CHRONOS, DeploymentProvider.MARATHON, DeploymentProvider.QCG}
)
"""Deployers whose deployments the legacy API refuses to update or act on (400)."""


class OperationKind(enum.StrEnum):
    """What the current operation of a deployment does."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class AttemptOutcome(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AttemptFailureCause(enum.StrEnum):
    """Why an attempt ended without success; ``cancelled`` is not the site's fault."""

    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class ResourceAction(enum.StrEnum):
    """Legacy resource actions (``POST …/resources/{rid}/actions``)."""

    START = "start"
    STOP = "stop"


class TemplateIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """What a TOSCA template is, for statistics: computed by the TOSCA layer.

    ``type`` is ``metadata.template_type`` or the classifier's guess (``"custom"`` when unknown);
    ``hash`` is the hex SHA-256 of the template text (see :func:`template_sha256`);
    ``node_types`` is the sorted set of node types, a classifier that metadata cannot forge.
    """

    name: str
    type: str
    hash: str
    version: str | None = None
    node_types: tuple[str, ...] = ()


def template_sha256(template: str) -> str:
    """The hex SHA-256 of a template's UTF-8 text: the ``TemplateIdentity.hash`` convention."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


class OsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The operating system one compute node asks for (``capabilities.os``)."""

    image: str | None = None
    distribution: str | None = None
    version: str | None = None
    type: str | None = None
    architecture: str | None = None


class RequestedResources(msgspec.Struct, frozen=True, kw_only=True):
    """Totals the template asks for, over all node instances (``count`` respected)."""

    vms: int = 0
    vcpus: int = 0
    ram_mb: int = 0
    gpus: int = 0
    disk_gb: float = 0.0
    volumes: int = 0
    volumes_gb: float = 0.0
    public_ips: int = 0
    os: tuple[OsRequest, ...] = ()


class Site(msgspec.Struct, frozen=True, kw_only=True):
    """Where an attempt runs: a provider, optionally a region and project of it.

    ``provider_name`` is what the legacy ``cloudProviderName`` shows; ``provider_id`` is the
    stable registry id that statistics group by.
    """

    provider_id: str
    provider_name: str
    region: str | None = None
    project: str | None = None


class DataRequirement(msgspec.Struct, frozen=True, kw_only=True):
    """Input data a deployment needs replicated by Rucio (a rule per requirement).

    ``dids`` are ``scope:name`` data identifiers; ``rse_expression`` says where the copies
    go; ``wait`` makes the deployer wait until the rule is OK (a STUCK rule fails the
    deployment). Rule ids and progress live in the replication streams, not here.
    """

    dids: tuple[str, ...]
    rse_expression: str
    copies: int = 1
    lifetime_seconds: int | None = None
    wait: bool = False


class PreferredSite(msgspec.Struct, frozen=True, kw_only=True):
    """The site a user chose before deploying (scheduling first); ``None`` region = any."""

    provider_id: str
    region: str | None = None

    def admits(self, site: Site) -> bool:
        return self.provider_id == site.provider_id and self.region in (None, site.region)


class RankedSite(msgspec.Struct, frozen=True, kw_only=True):
    """One scheduling candidate; its rank is its position in the candidates list."""

    site: Site
    score: float | None = None
    # --- ranking explained (issue 4): what the ranking saw at decision time ---
    # ``features`` is the selection's SiteFeatures as JSON (domain.providers.selection),
    # ``ranker_name`` the site's name for the external ranker, ``sla_id`` the SLA used.
    features: JsonObject = msgspec.field(default_factory=dict)
    explanation: str | None = None
    sla_id: str | None = None
    ranker_name: str | None = None


class SiteRejection(msgspec.Struct, frozen=True, kw_only=True):
    """A site the scheduler ruled out, and why (``no_flavor``, ``no_image``, ``quota``...)."""

    site: Site
    reason: str
    # --- ranking explained (issue 4): a readable message and the SLA concerned ---
    message: str | None = None
    sla_id: str | None = None


class CloudProviderEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Legacy ``cloudProviderEndpoint``: the IaaS endpoint an attempt deploys to.

    The legacy API serialises ``iaas_type`` both as ``deploymentType`` and ``iaasType``.
    """

    cp_endpoint: str
    iaas_type: IaasType
    cp_compute_service_id: str | None = None
    region: str | None = None
    vault_uri: str | None = None
    im_endpoint: str | None = None


class Resource(msgspec.Struct, frozen=True, kw_only=True):
    """One TOSCA node instance of a deployment (legacy Resource), without any secret.

    ``im_vm_id`` is the IM virtual-machine id inside the infrastructure (where the VM info,
    which holds credentials and is therefore never stored in events, can be fetched);
    ``physical_id`` is the IaaS id of the VM.
    """

    resource_id: str
    node_name: str
    node_type: str
    state: NodeState
    physical_id: str | None = None
    im_vm_id: str | None = None
