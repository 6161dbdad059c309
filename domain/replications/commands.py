"""Replication commands: from users (API) and from the Rucio handler (system actor)."""

from __future__ import annotations

import msgspec

from domain.identity import Actor

from .events import RuleState


class ReplicationCommand(msgspec.Struct, frozen=True, kw_only=True):
    replication_id: str
    actor: Actor


class UserCommand(ReplicationCommand, frozen=True, kw_only=True):
    """``actor_is_admin``: the actor is an admin of its issuer (the API knows from the token)."""

    actor_is_admin: bool = False


class RequestReplication(UserCommand, frozen=True, kw_only=True):
    """POST /data/replications, or the handler for a deployment's data requirement (then
    ``owner`` is the deployment's owner and the actor a system identity)."""

    dids: tuple[str, ...]
    rse_expression: str
    copies: int = 1
    lifetime_seconds: int | None = None
    owner: Actor | None = None
    deployment_id: str | None = None
    requirement_index: int | None = None
    wait: bool = False


class RequestMigration(UserCommand, frozen=True, kw_only=True):
    rse_expression: str


class CancelReplication(UserCommand, frozen=True, kw_only=True):
    reason: str | None = None


# --- handler commands ----------------------------------------------------------------------


class RecordRuleCreated(ReplicationCommand, frozen=True, kw_only=True):
    generation: int
    rse_expression: str
    rule_ids: tuple[str, ...]
    adopted: bool = False


class ObserveRuleState(ReplicationCommand, frozen=True, kw_only=True):
    generation: int
    state: RuleState
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0


class CompleteMigration(ReplicationCommand, frozen=True, kw_only=True):
    """The new generation is OK and the previous one's rules were removed in Rucio."""

    generation: int
    kept: tuple[str, ...] = ()


class FailMigration(ReplicationCommand, frozen=True, kw_only=True):
    generation: int
    reason: str


class RecordRulesRemoved(ReplicationCommand, frozen=True, kw_only=True):
    generation: int
    kept: tuple[str, ...] = ()


class FailReplication(ReplicationCommand, frozen=True, kw_only=True):
    reason: str
