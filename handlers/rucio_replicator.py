"""The Rucio replicator: turns replication requests into Rucio rules and follows them.

It is two things sharing one object:

- a side-effect handler (run by ``HandlerRunner``, at-least-once) for
  ``deployment.requested`` (one replication per data requirement, with a deterministic
  id), ``deployment.deletion_requested`` / ``deployment.deleted`` (cancel them: their rules
  are removed), and every ``replication.*`` event (make sure the replication is driven; tell
  the linked deployment when its data is ready, or fail it when a rule is STUCK);
- background *drivers*, one task per replication that still needs work, that bring Rucio in
  line with the replication's state one step at a time: create the rules of a generation,
  follow their state with a growing poll interval, complete a migration, remove rules that
  are no longer wanted. Each step reads the stream, calls Rucio, records the outcome.
  ``run`` resumes every unsettled replication (from the read model) after a restart.

Crash safety. A step is idempotent on (replication, generation): before creating rules the
driver looks in Rucio for rules of the same DID, account, RSE expression and copies (an
earlier try whose answer was lost, or a soft-deleted rule) and adopts them, so a crash
between Rucio's answer and the record never makes a second rule; a 409 ``DuplicateRule``
(a concurrent creator) sends it back to that lookup. Rucio down or 5xx: the step is retried
with backoff, forever, nothing recorded meanwhile. Unknown DID, an RSE expression that
selects nothing, missing quota: the request fails with Rucio's reason.

Rules are made with the configured Rucio account (its credentials live in the client, never
in events or logs). Two replications asking for the same DIDs on the same expression share
one Rucio rule (Rucio allows one per DID/account/expression/copies); a rule still held by
another live replication is left in place when one of them lets go of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from domain import deployments as dep
from domain import replications as rep
from domain.identity import Actor, system_actor
from eventstore.command_service import CommandService, Decider
from eventstore.records import Metadata, RecordedEvent

from .drivers import Drivers, sleep_or_woken
from .ranking import DEPLOYMENTS
from .rucio_client import (
    Did,
    ReplicationRule,
    RucioDuplicateRule,
    RucioError,
    RucioInvalidExpression,
    RucioNotFound,
    RucioRejected,
    RuleState,
)

log = logging.getLogger(__name__)

REPLICATION_DECIDER: Decider[Any, rep.ReplicationState, rep.ReplicationEvent] = Decider(
    rep.initial_state, rep.evolve, rep.decide)


class RucioRules(Protocol):
    """What the replicator needs of ``RucioClient``."""

    account: str

    async def add_replication_rule(self, dids: Sequence[Did], *, copies: int,
                                   rse_expression: str, lifetime: int | None = None,
                                   comment: str | None = None) -> list[str]: ...

    async def get_replication_rule(self, rule_id: str) -> ReplicationRule: ...

    async def list_did_rules(self, did: Did) -> list[ReplicationRule]: ...

    async def delete_replication_rule(self, rule_id: str) -> None: ...

    async def set_rule_lifetime(self, rule_id: str, seconds: int | None) -> None: ...


class ReplicationIndex(Protocol):
    """Read-model queries (the bootstrap implements them over projections/replications)."""

    async def unsettled(self) -> list[str]:
        """Ids of replications that may still need work in Rucio."""
        ...

    async def rule_holders(self, rule_id: str, *, excluding: str) -> list[str]:
        """Other replications, not cancelled or failed, whose wanted rules include this one."""
        ...


@dataclass(frozen=True)
class FollowPolicy:
    """Poll intervals: ``initial`` after a change, times ``factor`` while nothing changes,
    at most ``maximum``; the same growth for retries while Rucio is unavailable."""

    initial: float = 2.0
    factor: float = 2.0
    maximum: float = 60.0

    def next(self, delay: float | None) -> float:
        return self.initial if delay is None else min(self.maximum, delay * self.factor)


class _Failed(Exception):
    """Rucio refused the request for good (not retryable): the reason to record."""


def _did(text: str) -> Did:
    scope, _, name = text.partition(":")
    return Did(scope, name)


def summarize(rules: Sequence[ReplicationRule]) -> tuple[rep.RuleState, int, int, int]:
    """A generation's state over its rules: any STUCK -> STUCK, all OK -> OK, else
    REPLICATING (Rucio's SUSPENDED, WAITING_APPROVAL, INJECT count as not there yet)."""
    ok = sum(r.locks_ok_cnt for r in rules)
    replicating = sum(r.locks_replicating_cnt for r in rules)
    stuck = sum(r.locks_stuck_cnt for r in rules)
    if any(r.state is RuleState.STUCK for r in rules):
        state = rep.RuleState.STUCK
    elif rules and all(r.state is RuleState.OK for r in rules):
        state = rep.RuleState.OK
    else:
        state = rep.RuleState.REPLICATING
    return state, ok, replicating, stuck


class RucioReplicator:
    NAME = "rucio-replicator"
    HANDLES = frozenset({
        dep.event_tag(dep.DeploymentRequested),
        dep.event_tag(dep.DeploymentDeletionRequested),
        dep.event_tag(dep.DeploymentDeleted),
        dep.event_tag(dep.DeploymentRetryRequested),
        *rep.EVENT_TYPES_BY_TAG,
    })

    def __init__(self, commands: CommandService, rucio: RucioRules, index: ReplicationIndex, *,
                 follow: FollowPolicy | None = None,
                 actor: Actor | None = None) -> None:
        self.commands = commands
        self.rucio = rucio
        self.index = index
        self.follow = follow or FollowPolicy()
        self.actor = actor or system_actor(self.NAME)
        self._drivers = Drivers(self.NAME, self._drive)

    # ------------------------------------------------------------ background drivers
    async def run_background(self, stop: asyncio.Event) -> None:
        """Resume every unsettled replication, then drive until ``stop``."""
        for replication_id in await self.index.unsettled():
            self.ensure_driven(replication_id)
        await stop.wait()
        await self.close()

    async def close(self) -> None:
        await self._drivers.close()

    def ensure_driven(self, replication_id: str) -> None:
        """Start a driver for the replication, or wake the one that sleeps."""
        self._drivers.wake(replication_id)

    def driving(self) -> list[str]:
        return self._drivers.running()

    async def _drive(self, replication_id: str, nudge: asyncio.Event) -> None:
        delay: float | None = None
        while True:
            nudge.clear()
            try:
                state, _ = await self.commands.load(rep.replication_stream(replication_id),
                                                    REPLICATION_DECIDER)
                if state.settled:
                    if nudge.is_set():
                        continue  # an event arrived while we were reading: look again
                    return
                progressed = await self._step(state)
            except asyncio.CancelledError:
                raise
            except RucioError as error:  # unavailable, or an account/config problem
                delay = self.follow.next(delay)
                log.warning("replication %s: Rucio step failed, retrying in %.1f s: %s",
                            replication_id, delay, error.message)
            except Exception:
                delay = self.follow.next(delay)
                log.exception("replication %s: step failed, retrying in %.1f s",
                              replication_id, delay)
            else:
                if progressed:
                    delay = None
                    continue
                delay = self.follow.next(delay)
            if await sleep_or_woken(nudge, delay):
                delay = None  # woken by a new event: look again at once

    async def _step(self, state: rep.ReplicationState) -> bool:
        """One step towards the wanted state; True if something was recorded."""
        for generation in state.rules_to_remove:
            kept = await self._remove_rules(state, generation)
            await self._execute(rep.RecordRulesRemoved(
                replication_id=state.replication_id, actor=self.actor,
                generation=generation.number, kept=kept))
            return True
        if not state.active:
            return False
        current = state.current_generation
        if not current.has_rules:
            return await self._create_rules(state, current)
        pending = state.pending_migration
        if pending is not None and not pending.has_rules:
            return await self._create_rules(state, pending)
        changed = False
        for followed in (current, pending):
            if followed is None or followed.state is rep.RuleState.OK:
                continue
            changed |= await self._observe(state, followed)
        if pending is not None and changed:
            return True
        if pending is not None and pending.state is rep.RuleState.OK:
            kept = await self._remove_rules(state, current)
            await self._execute(rep.CompleteMigration(
                replication_id=state.replication_id, actor=self.actor,
                generation=pending.number, kept=kept))
            return True
        return changed

    async def _create_rules(self, state: rep.ReplicationState,
                            generation: rep.Generation) -> bool:
        try:
            rule_ids, adopted = await self._find_or_create(state, generation)
        except _Failed as failure:
            reason = str(failure)
            log.info("replication %s generation %d failed: %s", state.replication_id,
                     generation.number, reason)
            command: rep.ReplicationCommand
            if generation.number == 0:
                command = rep.FailReplication(replication_id=state.replication_id,
                                              actor=self.actor, reason=reason)
            else:
                command = rep.FailMigration(replication_id=state.replication_id,
                                            actor=self.actor, generation=generation.number,
                                            reason=reason)
            await self._execute(command)
            return True
        await self._execute(rep.RecordRuleCreated(
            replication_id=state.replication_id, actor=self.actor, generation=generation.number,
            rse_expression=generation.rse_expression, rule_ids=rule_ids, adopted=adopted))
        return True

    async def _find_or_create(self, state: rep.ReplicationState,
                              generation: rep.Generation) -> tuple[tuple[str, ...], bool]:
        dids = [_did(text) for text in state.dids]
        expression = generation.rse_expression
        for _ in range(3):
            try:
                found = [await self._existing_rule(did, expression, state.copies)
                         for did in dids]
                missing = [did for did, rule in zip(dids, found, strict=True) if rule is None]
                created: list[str] = []
                if missing:
                    created = await self.rucio.add_replication_rule(
                        missing, copies=state.copies, rse_expression=expression,
                        lifetime=state.lifetime_seconds,
                        comment=f"orchestrator replication {state.replication_id} "
                                f"generation {generation.number}")
            except RucioDuplicateRule:
                continue  # someone made one meanwhile: look again, then adopt it
            except RucioNotFound as error:
                raise _Failed(f"Rucio does not know a DID of {list(state.dids)}: "
                              f"{error.message}") from None
            except RucioInvalidExpression as error:
                raise _Failed(f"Rucio found no RSE for the expression {expression!r}: "
                              f"{error.message}") from None
            except RucioRejected as error:
                raise _Failed(f"Rucio refused the rule: {error.message}") from None
            adopted_ids = [rule.id for rule in found if rule is not None]
            for rule_id in adopted_ids:
                # A soft-deleted rule (expiring within the hour) is revived this way.
                await self.rucio.set_rule_lifetime(rule_id, state.lifetime_seconds)
            new_ids = iter(created)
            rule_ids = tuple(rule.id if rule is not None else next(new_ids) for rule in found)
            return rule_ids, bool(adopted_ids)
        raise _Failed(f"Rucio keeps answering DuplicateRule for {list(state.dids)} on "
                      f"{expression!r} but lists no such rule of account {self.rucio.account}")

    async def _existing_rule(self, did: Did, expression: str,
                             copies: int) -> ReplicationRule | None:
        for rule in await self.rucio.list_did_rules(did):
            if (rule.account == self.rucio.account and rule.rse_expression == expression
                    and rule.copies == copies):
                return rule
        return None

    async def _observe(self, state: rep.ReplicationState, generation: rep.Generation) -> bool:
        try:
            rules = [await self.rucio.get_replication_rule(rule_id)
                     for rule_id in generation.rule_ids]
        except RucioNotFound as error:
            # Expired and cleaned by Rucio: nothing more will change.
            log.warning("replication %s: a rule of generation %d is gone: %s",
                        state.replication_id, generation.number, error.message)
            return False
        rule_state, ok, replicating, stuck = summarize(rules)
        result = await self._execute(rep.ObserveRuleState(
            replication_id=state.replication_id, actor=self.actor, generation=generation.number,
            state=rule_state, locks_ok=ok, locks_replicating=replicating, locks_stuck=stuck))
        return bool(result)

    async def _remove_rules(self, state: rep.ReplicationState,
                            generation: rep.Generation) -> tuple[str, ...]:
        kept: list[str] = []
        for rule_id in generation.rule_ids:
            if await self.index.rule_holders(rule_id, excluding=state.replication_id):
                kept.append(rule_id)
                continue
            try:
                await self.rucio.delete_replication_rule(rule_id)
            except RucioNotFound:
                pass  # already removed (and cleaned) by Rucio
        return tuple(kept)

    async def _execute(self, command: rep.ReplicationCommand,
                       causation_id: str | None = None) -> list[rep.ReplicationEvent]:
        metadata = Metadata(actor_issuer=command.actor.issuer,
                            actor_subject=command.actor.subject, causation_id=causation_id)
        result = await self.commands.execute(rep.replication_stream(command.replication_id),
                                             REPLICATION_DECIDER, command, metadata,
                                             conflict_retries=5)
        return result.events

    # ------------------------------------------------------------ the handler
    async def handle(self, event: RecordedEvent, decoded: Any) -> None:
        match decoded:
            case dep.DeploymentRequested():
                await self._request_for_deployment(event, decoded)
            case dep.DeploymentDeletionRequested() | dep.DeploymentDeleted():
                await self._cancel_for_deployment(event, decoded.deployment_id)
            case dep.DeploymentRetryRequested():
                # A retried create still waits for its data: tell it where the data stands.
                await self._report_deployment(event, decoded.deployment_id)
            case rep.ReplicationEvent():
                self.ensure_driven(decoded.replication_id)
                if isinstance(decoded, rep.ReplicationStateObserved | rep.ReplicationFailed
                              | rep.ReplicationCancelled | rep.ReplicationRequested):
                    await self._report_to_deployment(event, decoded.replication_id)

    async def _request_for_deployment(self, event: RecordedEvent,
                                      requested: dep.DeploymentRequested) -> None:
        for index, requirement in enumerate(requested.data_requirements):
            replication_id = rep.requirement_replication_id(requested.deployment_id, index)
            command = rep.RequestReplication(
                replication_id=replication_id, actor=self.actor, owner=requested.owner,
                dids=requirement.dids, rse_expression=requirement.rse_expression,
                copies=requirement.copies, lifetime_seconds=requirement.lifetime_seconds,
                deployment_id=requested.deployment_id, requirement_index=index,
                wait=requirement.wait)
            try:
                await self._execute(command, causation_id=event.event_id)
            except rep.InvalidRequest as refused:
                # The deployment's own validation should have caught it; fail it openly.
                await self._fail_deployment(event, requested.deployment_id,
                                            requested.operation,
                                            f"Data requirement {index}: {refused.message}")
                return
            self.ensure_driven(replication_id)

    async def _cancel_for_deployment(self, event: RecordedEvent, deployment_id: str) -> None:
        state, _ = await self.commands.load(dep.stream_id(deployment_id), DEPLOYMENTS)
        for index in range(len(state.data_requirements)):
            replication_id = rep.requirement_replication_id(deployment_id, index)
            try:
                await self._execute(rep.CancelReplication(
                    replication_id=replication_id, actor=self.actor,
                    reason=f"deployment {deployment_id} is being deleted"),
                    causation_id=event.event_id)
            except rep.ReplicationNotFound:
                continue  # its request failed validation: nothing was ever made
            self.ensure_driven(replication_id)

    async def _report_to_deployment(self, event: RecordedEvent, replication_id: str) -> None:
        replication, _ = await self.commands.load(rep.replication_stream(replication_id),
                                                  REPLICATION_DECIDER)
        if replication.deployment_id is None or not replication.wait:
            return
        await self._report_deployment(event, replication.deployment_id)

    async def _report_deployment(self, event: RecordedEvent, deployment_id: str) -> None:
        """Data ready (every waited-for replication OK) or failed (one of them STUCK, failed
        or cancelled): tell the deployment, if it still waits."""
        deployment, _ = await self.commands.load(dep.stream_id(deployment_id),
                                                 DEPLOYMENTS)
        if (not deployment.awaiting_data
                or deployment.status != dep.DeploymentStatus.CREATE_IN_PROGRESS):
            return
        waited: list[rep.ReplicationState] = []
        for index, requirement in enumerate(deployment.data_requirements):
            if not requirement.wait:
                continue
            other_id = rep.requirement_replication_id(deployment_id, index)
            other, _ = await self.commands.load(rep.replication_stream(other_id),
                                                REPLICATION_DECIDER)
            if not other.exists:
                return  # not requested yet; its own event will report
            waited.append(other)
        for other in waited:
            reason = _data_failure(other)
            if reason is not None:
                await self._fail_deployment(event, deployment_id, deployment.operation, reason)
                return
        if all(other.status is rep.ReplicationStatus.OK for other in waited):
            command = dep.MarkDataReady(
                deployment_id=deployment_id, actor=self.actor, operation=deployment.operation,
                replication_ids=tuple(other.replication_id for other in waited))
            await self._execute_deployment(command, event)

    async def _fail_deployment(self, event: RecordedEvent, deployment_id: str, operation: int,
                               reason: str) -> None:
        command = dep.FailDeployment(deployment_id=deployment_id, actor=self.actor,
                                     operation=operation, reason=reason)
        await self._execute_deployment(command, event)

    async def _execute_deployment(self, command: dep.DeploymentCommand,
                                  event: RecordedEvent) -> None:
        metadata = Metadata(actor_issuer=self.actor.issuer, actor_subject=self.actor.subject,
                            causation_id=event.event_id)
        try:
            await self.commands.execute(dep.stream_id(command.deployment_id),
                                        DEPLOYMENTS, command, metadata,
                                        conflict_retries=5)
        except dep.DeploymentError as refused:
            # The deployment moved on meanwhile (deleted, reset, failed): nothing to report.
            log.info("deployment %s: %s not applied: %s", command.deployment_id,
                     type(command).__name__, refused.message)


def _data_failure(replication: rep.ReplicationState) -> str | None:
    """Why a deployment waiting for this replication cannot get its data (None: it still may)."""
    status = replication.status
    target = replication.rse_expression
    if status is rep.ReplicationStatus.FAILED:
        return (f"Input data could not be staged (replication {replication.replication_id}): "
                f"{replication.failure_reason}")
    if status is rep.ReplicationStatus.STUCK:
        generation = replication.current_generation
        return (f"Input data could not be staged: the Rucio rule(s) "
                f"{', '.join(generation.rule_ids)} of replication {replication.replication_id} "
                f"to {target!r} are STUCK ({generation.locks_stuck} stuck, "
                f"{generation.locks_ok} ok, {generation.locks_replicating} replicating)")
    if status in (rep.ReplicationStatus.CANCELLING, rep.ReplicationStatus.CANCELLED):
        return (f"Input data will not be staged: replication {replication.replication_id} "
                f"was cancelled")
    return None
