"""Errors ``decide`` raises. Messages are human-readable and, where the legacy API had one,
reuse its wording. The HTTP mapping (suggested in each docstring) belongs to the API."""

from __future__ import annotations


class DeploymentError(Exception):
    """Base of every deployment domain error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeploymentNotFound(DeploymentError):
    """The stream holds no deployment (404)."""

    def __init__(self, deployment_id: str) -> None:
        super().__init__(f"The deployment {deployment_id} doesn't exist")
        self.deployment_id = deployment_id


class AlreadyExists(DeploymentError):
    """A create for an id that already has a deployment (409)."""

    def __init__(self, deployment_id: str) -> None:
        super().__init__(f"The deployment {deployment_id} already exists")
        self.deployment_id = deployment_id


class NotPermitted(DeploymentError):
    """The actor is neither the owner nor an admin of the owner's issuer (403)."""

    def __init__(self) -> None:
        super().__init__("Only the owner of the deployment can perform this operation")


class InvalidRequest(DeploymentError):
    """A command's values are unacceptable whatever the state (400)."""


class InvalidResetTarget(InvalidRequest):
    """A reset (PATCH) asks for a status it may not set from the current one (400)."""


class ResourceNotFound(DeploymentError):
    """A resource action names a resource the deployment does not have (legacy: 400)."""

    def __init__(self, deployment_id: str, resource_id: str) -> None:
        super().__init__(f"Resource {resource_id} not found in deployment {deployment_id}")
        self.deployment_id = deployment_id
        self.resource_id = resource_id


class InvalidTransition(DeploymentError):
    """The command is not allowed in the current state; the message names the status (409)."""


class InfrastructureConflict(InvalidTransition):
    """An attempt already has a different infrastructure: the caller must destroy the new one."""


class StaleCommand(InvalidTransition):
    """A handler command for an operation or attempt that is no longer current.

    The work it reports was superseded (reset, deletion, a newer operation). Handlers treat it as
    "acknowledge and drop", after releasing whatever external resource they still hold.
    """
