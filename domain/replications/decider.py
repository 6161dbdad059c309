"""The replication decider: ``initial_state``, ``evolve``, ``fold``, ``decide``.

User commands (request, migrate, cancel) need the owner, an admin of the owner's issuer,
or a system actor. Handler commands are idempotent: a fact already recorded decides ``[]``,
so a handler that crashed between a Rucio call and its record can simply do it again.
A rule created for a generation is always recorded, even after a cancel or a failure, so
that no rule the orchestrator made is ever forgotten (it is then removed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from domain.identity import Actor

from .commands import (
    CancelReplication,
    CompleteMigration,
    FailMigration,
    FailReplication,
    ObserveRuleState,
    RecordRuleCreated,
    RecordRulesRemoved,
    ReplicationCommand,
    RequestMigration,
    RequestReplication,
    UserCommand,
)
from .errors import (
    AlreadyExists,
    InvalidRequest,
    InvalidTransition,
    NotPermitted,
    ReplicationNotFound,
)
from .events import (
    ReplicationCancelled,
    ReplicationEvent,
    ReplicationFailed,
    ReplicationMigrationCompleted,
    ReplicationMigrationFailed,
    ReplicationMigrationRequested,
    ReplicationRequested,
    ReplicationRuleCreated,
    ReplicationRuleRemoved,
    ReplicationStateObserved,
    RuleState,
)
from .state import Generation, ReplicationState

MAX_DIDS = 100
MAX_COPIES = 100
MAX_EXPRESSION_LENGTH = 500
# Rucio's generic schema: scope and name of letters, digits and ._- (names also '/' and ':'?
# no: ':' separates them); we only refuse what can never be a DID.
_DID = re.compile(r"^[A-Za-z0-9_.\-]{1,30}:[A-Za-z0-9_.\-/+]{1,250}$")


def replication_stream(replication_id: str) -> str:
    return f"replication-{replication_id}"


def requirement_replication_id(deployment_id: str, index: int) -> str:
    """The replication of a deployment's data requirement: deterministic, so a redelivered
    ``deployment.requested`` never opens a second one."""
    return f"{deployment_id}-data-{index}"


def validate_request(dids: Iterable[str], rse_expression: str, copies: int,
                     lifetime_seconds: int | None) -> None:
    """Raise InvalidRequest unless this could be a Rucio rule request."""
    dids = tuple(dids)
    if not dids:
        raise InvalidRequest("dids: at least one DID (scope:name) is required")
    if len(dids) > MAX_DIDS:
        raise InvalidRequest(f"dids: at most {MAX_DIDS} DIDs per replication")
    for did in dids:
        if not isinstance(did, str) or not _DID.match(did):
            raise InvalidRequest(f"dids: {did!r} is not a Rucio DID of the form scope:name")
    if len(set(dids)) != len(dids):
        raise InvalidRequest("dids: a DID is listed twice")
    if not rse_expression or not rse_expression.strip():
        raise InvalidRequest("rseExpression: an RSE expression is required")
    if len(rse_expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidRequest(f"rseExpression: at most {MAX_EXPRESSION_LENGTH} characters")
    if not 1 <= copies <= MAX_COPIES:
        raise InvalidRequest(f"copies: must be between 1 and {MAX_COPIES}")
    if lifetime_seconds is not None and lifetime_seconds < 1:
        raise InvalidRequest("lifetimeSeconds: must be at least 1 (or absent: no expiry)")


# --- fold ----------------------------------------------------------------------------------


def initial_state() -> ReplicationState:
    return ReplicationState()


def fold(events: Iterable[ReplicationEvent],
         state: ReplicationState | None = None) -> ReplicationState:
    current = initial_state() if state is None else state
    for event in events:
        current = evolve(current, event)
    return current


def _with_generation(replication: ReplicationState, number: int, /,
                     **changes: object) -> tuple[Generation, ...]:
    generations = list(replication.generations)
    if 0 <= number < len(generations):
        generations[number] = msgspec.structs.replace(generations[number], **changes)
    return tuple(generations)


def evolve(state: ReplicationState, event: ReplicationEvent) -> ReplicationState:
    new = _apply(state, event)
    return msgspec.structs.replace(new, version=state.version + 1, updated_at=event.occurred_at)


def _apply(state: ReplicationState, event: ReplicationEvent) -> ReplicationState:
    replace = msgspec.structs.replace
    match event:
        case ReplicationRequested():
            return replace(
                state, replication_id=event.replication_id, owner=event.owner,
                dids=event.dids, copies=event.copies, lifetime_seconds=event.lifetime_seconds,
                deployment_id=event.deployment_id, requirement_index=event.requirement_index,
                wait=event.wait, created_at=event.occurred_at,
                generations=(Generation(number=0, rse_expression=event.rse_expression),),
                current=0)
        case ReplicationRuleCreated():
            return replace(state, generations=_with_generation(
                state, event.generation, rule_ids=event.rule_ids,
                state=RuleState.REPLICATING))
        case ReplicationStateObserved():
            return replace(state, generations=_with_generation(
                state, event.generation, state=event.state, locks_ok=event.locks_ok,
                locks_replicating=event.locks_replicating, locks_stuck=event.locks_stuck))
        case ReplicationMigrationRequested():
            generation = Generation(number=event.generation, rse_expression=event.rse_expression)
            return replace(state, generations=(*state.generations, generation),
                           migrating_to=event.generation)
        case ReplicationMigrationCompleted():
            return replace(state, current=event.generation, migrating_to=None)
        case ReplicationMigrationFailed():
            return replace(state, migrating_to=None, generations=_with_generation(
                state, event.generation, abandoned=True, failure_reason=event.reason))
        case ReplicationCancelled():
            return replace(state, cancelled=True, cancel_reason=event.reason, migrating_to=None)
        case ReplicationRuleRemoved():
            return replace(state, generations=_with_generation(state, event.generation,
                                                               removed=True))
        case ReplicationFailed():
            return replace(state, failed=True, failure_reason=event.reason)
    raise TypeError(f"unknown replication event {type(event).__name__}")


# --- decide --------------------------------------------------------------------------------


def may_manage(state: ReplicationState, actor: Actor, *, is_admin: bool) -> bool:
    """Owner, an admin of the owner's issuer, or the orchestrator itself."""
    if actor.is_system or actor == state.owner:
        return True
    return is_admin and state.owner is not None and actor.issuer == state.owner.issuer


def decide(command: ReplicationCommand, state: ReplicationState, *,
           now: datetime) -> list[ReplicationEvent]:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(command, RequestReplication):
        return _request(command, state, now)
    if not state.exists:
        raise ReplicationNotFound(command.replication_id)
    if isinstance(command, UserCommand) and not may_manage(
            state, command.actor, is_admin=command.actor_is_admin):
        raise NotPermitted()
    base: dict[str, Any] = {"replication_id": command.replication_id, "occurred_at": now,
            "actor": command.actor}
    match command:
        case RequestMigration():
            return _migrate(command, state, base)
        case CancelReplication():
            if state.cancelled:
                return []
            return [ReplicationCancelled(**base, reason=command.reason)]
        case RecordRuleCreated():
            return _rule_created(command, state, base)
        case ObserveRuleState():
            return _observe(command, state, base)
        case CompleteMigration():
            return _complete_migration(command, state, base)
        case FailMigration():
            pending = state.pending_migration
            if pending is None or pending.number != command.generation:
                return []  # already failed, completed or cancelled
            return [ReplicationMigrationFailed(**base, generation=command.generation,
                                               reason=command.reason)]
        case RecordRulesRemoved():
            generation = state.generation(command.generation)
            if generation is None:
                raise InvalidTransition(f"Generation {command.generation} does not exist")
            if generation.removed or not generation.has_rules:
                return []
            if generation not in state.rules_to_remove:
                raise InvalidTransition(
                    f"The rules of generation {command.generation} are still wanted")
            return [ReplicationRuleRemoved(**base, generation=command.generation,
                                           rule_ids=generation.rule_ids, kept=command.kept)]
        case FailReplication():
            if state.failed or state.cancelled:
                return []
            if state.current_generation.has_rules:
                raise InvalidTransition("The replication already has its rules")
            return [ReplicationFailed(**base, reason=command.reason)]
    raise TypeError(f"unknown replication command {type(command).__name__}")


def _request(command: RequestReplication, state: ReplicationState,
             now: datetime) -> list[ReplicationEvent]:
    if not command.replication_id:
        raise InvalidRequest("a replication id is required")
    owner = command.owner if command.owner is not None else command.actor
    if owner != command.actor and not command.actor.is_system:
        raise NotPermitted()
    validate_request(command.dids, command.rse_expression, command.copies,
                     command.lifetime_seconds)
    event = ReplicationRequested(
        replication_id=command.replication_id, occurred_at=now, actor=command.actor,
        owner=owner, dids=tuple(command.dids), rse_expression=command.rse_expression.strip(),
        copies=command.copies, lifetime_seconds=command.lifetime_seconds,
        deployment_id=command.deployment_id, requirement_index=command.requirement_index,
        wait=command.wait)
    if state.exists:
        first = state.generations[0]
        same = (state.owner == owner and state.dids == event.dids
                and first.rse_expression == event.rse_expression
                and state.copies == event.copies
                and state.lifetime_seconds == event.lifetime_seconds
                and state.deployment_id == event.deployment_id
                and state.requirement_index == event.requirement_index
                and state.wait == event.wait)
        if same:
            return []  # a redelivered request
        raise AlreadyExists(command.replication_id)
    return [event]


def _migrate(command: RequestMigration, state: ReplicationState,
             base: dict[str, Any]) -> list[ReplicationEvent]:
    if not state.active:
        raise InvalidTransition(
            f"The replication is {state.status.value if state.status else 'unknown'}: "
            "nothing to migrate")
    expression = command.rse_expression.strip() if command.rse_expression else ""
    validate_request(state.dids, expression, state.copies, state.lifetime_seconds)
    pending = state.pending_migration
    if pending is not None:
        if pending.rse_expression == expression:
            return []
        raise InvalidTransition(
            f"A migration to {pending.rse_expression!r} is in progress; cancel the replication "
            "or wait for it to end")
    if not state.current_generation.has_rules:
        raise InvalidTransition("The replication has no rule yet; migrate once it has one")
    if state.current_generation.rse_expression == expression:
        raise InvalidRequest(f"rseExpression: the data already goes to {expression!r}")
    return [ReplicationMigrationRequested(**base,
                                          generation=len(state.generations),
                                          rse_expression=expression)]


def _rule_created(command: RecordRuleCreated, state: ReplicationState,
                  base: dict[str, Any]) -> list[ReplicationEvent]:
    generation = state.generation(command.generation)
    if generation is None:
        raise InvalidTransition(f"Generation {command.generation} does not exist")
    if generation.has_rules:
        if generation.rule_ids == command.rule_ids:
            return []
        raise InvalidTransition(
            f"Generation {command.generation} already has rules {list(generation.rule_ids)}")
    if len(command.rule_ids) != len(state.dids) or not all(command.rule_ids):
        raise InvalidRequest(f"expected one rule id per DID ({len(state.dids)})")
    if command.rse_expression != generation.rse_expression:
        raise InvalidRequest(
            f"generation {command.generation} goes to {generation.rse_expression!r}, "
            f"not {command.rse_expression!r}")
    return [ReplicationRuleCreated(**base,
                                   generation=command.generation,
                                   rse_expression=command.rse_expression,
                                   rule_ids=command.rule_ids, adopted=command.adopted)]


def _observe(command: ObserveRuleState, state: ReplicationState,
             base: dict[str, Any]) -> list[ReplicationEvent]:
    generation = state.generation(command.generation)
    if generation is None or not generation.has_rules:
        raise InvalidTransition(f"Generation {command.generation} has no rules to observe")
    if generation.removed:
        return []
    observed = (command.state, command.locks_ok, command.locks_replicating, command.locks_stuck)
    recorded = (generation.state, generation.locks_ok, generation.locks_replicating,
                generation.locks_stuck)
    if observed == recorded:
        return []
    return [ReplicationStateObserved(**base,
                                     generation=command.generation, state=command.state,
                                     locks_ok=command.locks_ok,
                                     locks_replicating=command.locks_replicating,
                                     locks_stuck=command.locks_stuck)]


def _complete_migration(command: CompleteMigration, state: ReplicationState,
                        base: dict[str, Any]) -> list[ReplicationEvent]:
    if state.current == command.generation:
        return []
    pending = state.pending_migration
    if pending is None or pending.number != command.generation:
        raise InvalidTransition(f"Generation {command.generation} is not being migrated to")
    if pending.state is not RuleState.OK:
        raise InvalidTransition(f"Generation {command.generation} is not OK yet")
    previous = state.current_generation
    return [
        ReplicationRuleRemoved(**base,
                               generation=previous.number, rule_ids=previous.rule_ids,
                               kept=command.kept),
        ReplicationMigrationCompleted(**base,
                                      generation=command.generation,
                                      previous_generation=previous.number),
    ]
