"""What the legacy controllers need, as plain types and protocols the bootstrap fills in.

The API never imports projections or handlers: the read models reach it through
``DeploymentReadModel`` / ``ResourceReadModel`` (implemented by the bootstrap over the
``deployments`` and ``resources`` projections), the TOSCA validator through
``TemplateChecker``, the TOSCA type hierarchy through ``TypeHierarchy`` and live VM details
(which hold credentials and are therefore never stored) through ``DeployerInfo``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec

from api.auth import Authenticator, Authorizer, AuthSettings
from eventstore.command_service import CommandService


class DeploymentView(msgspec.Struct, kw_only=True):
    """One row of the deployments view (or the state a command just produced)."""

    id: str
    status: str
    task: str
    created_at: datetime
    updated_at: datetime
    owner_issuer: str | None = None
    owner_subject: str | None = None
    user_group: str | None = None
    status_reason: str | None = None
    template_name: str | None = None
    template_type: str | None = None
    template_hash: str | None = None
    template_version: str | None = None
    callback: str | None = None
    physical_id: str | None = None
    provider_id: str | None = None
    provider_name: str | None = None
    region: str | None = None
    cloud_provider_endpoint: dict[str, Any] | None = None
    iaas_type: str | None = None
    deployment_provider: str | None = None
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    stream_version: int = 0


class DeploymentDetails(msgspec.Struct, kw_only=True):
    template: str
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    log: str | None = None


class ResourceView(msgspec.Struct, kw_only=True):
    deployment_id: str
    resource_id: str
    node_name: str
    node_type: str
    state: str
    created_at: datetime
    updated_at: datetime
    physical_id: str | None = None
    im_vm_id: str | None = None


class DeploymentQuery(msgspec.Struct, kw_only=True):
    """A server-side filtered, sorted page of deployments (see the deployments projection).

    Scope: ``owner_subject`` set -> one owner; else ``owner_issuer`` -> a whole issuer
    (``include_unowned`` adds legacy rows without owner); ``groups_of_issuer`` widens the
    scope to those user groups' deployments of ``owner_issuer``.
    """

    owner_issuer: str | None = None
    owner_subject: str | None = None
    include_unowned: bool = False
    groups_of_issuer: tuple[str, ...] = ()
    user_group: str | None = None
    statuses: tuple[str, ...] = ()
    excluded_statuses: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    provider: str | None = None
    template_type: str | None = None
    iaas_type: str | None = None
    sort: tuple[tuple[str, bool], ...] = (("created_at", True),)
    offset: int = 0
    limit: int = 10


class DeploymentReadModel(Protocol):
    async def get(self, deployment_id: str) -> DeploymentView | None: ...

    async def details(self, deployment_id: str) -> DeploymentDetails | None: ...

    async def list(self, query: DeploymentQuery) -> tuple[list[DeploymentView], int]: ...


class ResourceReadModel(Protocol):
    async def get(self, deployment_id: str, resource_id: str) -> ResourceView | None: ...

    async def list(self, deployment_id: str, *, node_types: Sequence[str] | None,
                   sort: Sequence[tuple[str, bool]], offset: int,
                   limit: int) -> tuple[list[ResourceView], int]: ...


class TemplateChecker(Protocol):
    """``tosca.TemplateValidator``: ``validate`` returns ``tosca.TemplateFacts`` or raises
    ``tosca.TemplateError`` (the template's fault) / ``tosca.ValidatorUnavailable``."""

    async def validate(self, template_text: str, inputs: Mapping[str, Any] | None = None,
                       ) -> Any: ...


class TypeHierarchy(Protocol):
    def derived_types(self, base: str) -> frozenset[str]:
        """``base`` and every known node type derived from it."""
        ...

    def is_derived_from(self, node_type: str, base: str) -> bool: ...


class DeployerInfo(Protocol):
    """Live details of a deployment's VMs from the deployer (IM ``VirtualMachineInfo``).

    Returns VM id (the resource's ``im_vm_id``) -> ``{"vmProperties": [...]}``, unredacted;
    the API redacts before showing it anywhere but the owner's credentials endpoint.
    """

    async def vm_info(self, deployment: DeploymentView) -> dict[str, dict[str, Any]]: ...


# --- credential capture (handlers/credentials.CredentialCapture implements it) ---


class CredentialSink(Protocol):
    """Keeps the caller's tokens for the deployment's long work (encrypted, outside the log).

    Called after a create, update, delete or retry was accepted; never fails the request
    (an implementation that cannot keep the token logs it and the work fails later with
    a clear reason). There is deliberately no no-op default: the bootstrap wires one.
    """

    async def capture(self, deployment_id: str, access_token: str, *,
                      refresh_token: str | None = None) -> None: ...


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header the guard already verified
    (the legacy no-space form ``Bearer<token>`` included)."""
    value = (authorization or "").strip()
    if value[:6].lower() != "bearer":
        return None
    return value[6:].strip() or None


# --- end credential capture ---


class NoDeployerInfo:
    """Until a deployer handler serves VM details: none."""

    async def vm_info(self, deployment: DeploymentView) -> dict[str, dict[str, Any]]:
        return {}


class ExactTypes:
    """A type hierarchy that knows nothing: a type matches only itself."""

    def derived_types(self, base: str) -> frozenset[str]:
        return frozenset({base})

    def is_derived_from(self, node_type: str, base: str) -> bool:
        return node_type == base


class LegacySettings(msgspec.Struct, kw_only=True):
    base_path: str = ""
    display_name: str = "INDIGO-Orchestrator"
    info: dict[str, Any] = msgspec.field(default_factory=dict)
    configuration: dict[str, str] = msgspec.field(default_factory=dict)
    # A create without userGroup is a 400 (legacy L2 made it effectively mandatory).
    require_user_group: bool = True
    # Honour Forwarded / X-Forwarded-* when building absolute links (legacy: always).
    trust_forwarded_headers: bool = True
    default_page_size: int = 10
    max_page_size: int = 2000
    # POST /deployments may carry dataRequirements only when a Rucio replicator runs
    # (issue 6); otherwise such a deployment would wait for data forever.
    accepts_data_requirements: bool = True


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) as the legacy 36-character string."""
    import os
    import time

    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


@dataclass
class LegacyApi:
    """Everything the legacy controllers use, injected as the ``legacy`` dependency."""

    deployments: DeploymentReadModel
    resources: ResourceReadModel
    commands: CommandService
    authenticator: Authenticator
    auth_settings: AuthSettings
    authorizer: Authorizer
    validator: TemplateChecker
    credential_sink: CredentialSink  # required: the bootstrap wires the credential store
    types: TypeHierarchy = field(default_factory=ExactTypes)
    deployer_info: DeployerInfo = field(default_factory=NoDeployerInfo)
    settings: LegacySettings = field(default_factory=LegacySettings)
    new_id: Callable[[], str] = uuid7
