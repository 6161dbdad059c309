"""Stuck deployments: ``*_IN_PROGRESS`` with no progress past their timeout are failed.

The deployer enforces ``timeoutMins`` while it runs; this sweep is the safety net for work
nobody is doing any more (a handler that lost the deployment, a bug, an outage longer than
the timeout). Every ``interval_s`` it asks the :class:`StuckCandidates` port (the bootstrap
implements it over the deployments read model) for in-progress deployments whose last
change is older than their ``timeoutMins`` (``default_timeout_mins`` when unset), then for
each one re-reads the stream (the read model may lag) and checks that the *last event of
any kind* (log and resource updates count as progress) is older than the timeout. It then
decides ``FailDeployment`` (cause ``timeout``; a running attempt fails with it) or
``FailDeletion`` with the domain's decider and appends at the version it read: if anything
happened meanwhile the append conflicts and the deployment is left for the next sweep.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec

from domain.deployments import (
    IN_PROGRESS_STATUSES,
    AttemptFailureCause,
    DeploymentCommand,
    DeploymentError,
    DeploymentState,
    DeploymentStatus,
    FailDeletion,
    FailDeployment,
    decide,
    fold,
    stream_id,
)
from domain.identity import system_actor
from eventstore.records import ConcurrencyError, Metadata
from eventstore.registry import EventRegistry
from eventstore.store import EventStore
from handlers.drivers import sleep_or_woken

log = logging.getLogger("orchestrator.stuck")

SWEEPER = system_actor("stuck-sweeper")


class StuckCandidate(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: str
    status: str
    updated_at: datetime
    timeout_mins: int | None = None


class StuckCandidates(Protocol):
    async def stuck(self, *, now: datetime, default_timeout_mins: int,
                    limit: int) -> Sequence[StuckCandidate]:
        """In-progress deployments last changed more than their timeout before ``now``."""
        ...


class StuckSweeper:
    def __init__(self, candidates: StuckCandidates, store: EventStore,
                 registry: EventRegistry, *, default_timeout_mins: int = 1440,
                 interval_s: float = 60.0, batch: int = 200,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.candidates = candidates
        self.store = store
        self.registry = registry
        self.default_timeout_mins = default_timeout_mins
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock

    def _timeout(self, state: DeploymentState) -> timedelta:
        return timedelta(minutes=state.timeout_mins or self.default_timeout_mins)

    async def fail_if_stuck(self, deployment_id: str) -> bool:
        """Fail one deployment if it is stuck now; True when it was failed."""
        stream = stream_id(deployment_id)
        recorded = await self.store.read_stream(stream)
        if not recorded:
            return False
        state = fold(self.registry.decode_recorded(r) for r in recorded)  # type: ignore[misc]
        now = self.clock()
        last_progress = recorded[-1].recorded_at
        timeout = self._timeout(state)
        if state.status not in IN_PROGRESS_STATUSES or now - last_progress < timeout:
            return False
        minutes = int(timeout.total_seconds() // 60)
        reason = (f"No progress for {minutes} minutes (last change at "
                  f"{last_progress.astimezone(UTC).isoformat(timespec='seconds')}): the "
                  f"operation was stuck and the orchestrator failed it")
        command: DeploymentCommand
        if state.status == DeploymentStatus.DELETE_IN_PROGRESS:
            command = FailDeletion(deployment_id=deployment_id, actor=SWEEPER,
                                   operation=state.operation, reason=reason)
        else:
            command = FailDeployment(deployment_id=deployment_id, actor=SWEEPER,
                                     operation=state.operation, reason=reason,
                                     cause=AttemptFailureCause.TIMEOUT)
        try:
            events = decide(command, state, now=now)
        except DeploymentError as refusal:
            log.warning("stuck deployment %s not failed: %s", deployment_id, refusal)
            return False
        if not events:
            return False
        try:
            await self.store.append(
                stream, recorded[-1].version,
                [self.registry.encode(e, str(uuid.uuid4())) for e in events],
                Metadata(actor_issuer=SWEEPER.issuer, actor_subject=SWEEPER.subject,
                         reason="stuck"))
        except ConcurrencyError:
            return False  # it moved meanwhile: not stuck, or the next sweep sees it again
        log.warning("deployment %s was stuck in %s and was failed: %s", deployment_id,
                    state.status, reason)
        return True

    async def sweep_once(self) -> list[str]:
        """One pass; the ids of the deployments it failed."""
        failed: list[str] = []
        candidates = await self.candidates.stuck(
            now=self.clock(), default_timeout_mins=self.default_timeout_mins, limit=self.batch)
        for candidate in candidates:
            try:
                if await self.fail_if_stuck(candidate.deployment_id):
                    failed.append(candidate.deployment_id)
            except Exception:  # one unreadable stream must not stop the others
                log.exception("stuck check of deployment %s failed", candidate.deployment_id)
        return failed

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
            except Exception:  # an outage must not end the sweeps
                log.exception("stuck-deployment sweep failed")
            await sleep_or_woken(stop, self.interval_s)
