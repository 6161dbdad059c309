"""Refusals of the replication decider; the API maps them onto HTTP statuses
(NotFound 404, NotPermitted 403, InvalidRequest 400, AlreadyExists/InvalidTransition 409)."""

from __future__ import annotations


class ReplicationError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReplicationNotFound(ReplicationError):
    def __init__(self, replication_id: str) -> None:
        super().__init__(f"No replication found with id: {replication_id}")


class NotPermitted(ReplicationError):
    def __init__(self) -> None:
        super().__init__("Only the owner of the replication or an administrator may do this")


class InvalidRequest(ReplicationError):
    """The command's content is invalid (bad DID, empty expression...)."""


class AlreadyExists(ReplicationError):
    def __init__(self, replication_id: str) -> None:
        super().__init__(f"A different replication with id {replication_id} already exists")


class InvalidTransition(ReplicationError):
    """The command does not fit the replication's current state."""
