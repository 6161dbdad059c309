"""Provider selection and ranking: the handler that schedules a create operation.

On ``deployment.requested`` and ``deployment.retry_requested`` it builds the selection
request from the deployment (user group, owner's issuer, requested resources and operating
systems, the pinned site, the sites near the input data), reads the catalogue through the
:class:`SchedulingCatalogue` port, runs :func:`domain.providers.selection.select_sites`
(candidates, rejections with reasons, the built-in ranking), optionally asks an external
ranker (:class:`ExternalRanker`, e.g. the INFN ai-ranker over Kafka) and records ONE
``deployment.scheduled`` event with the ranked candidates, their scores and features as seen
now, and the rejected sites with readable messages. When no site is left (a pinned site that
cannot run the deployment, or nothing feasible) the operation then fails with the reason
(``FailDeployment`` -> ``CREATE_FAILED``).

Ranking always answers: an external ranker that is late, silent, unreachable or answers
nonsense gives way to the built-in ranking (``ranking_method = builtin-v1-fallback`` and a
``ranking_note`` saying why); a data locator that fails only loses the locality bonus.

Idempotent: the deployment's own state says whether this operation was scheduled already
(a redelivery then only completes a failure left half-done), and both commands carry an
idempotency key derived from the deployment id and operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from domain.deployments import (
    DeploymentScheduled,
    DeploymentState,
    FailDeployment,
    InvalidTransition,
    decide,
    evolve,
    initial_state,
)
from domain.deployments.values import (
    DeploymentStatus,
    OperationKind,
    PreferredSite,
    SiteRejection,
)
from domain.identity import Actor, system_actor
from domain.providers.airanker import (
    ProvidersToRank,
    RankedProviders,
    apply_ranker_answer,
    ranking_fallback,
    to_providers_to_rank,
)
from domain.providers.errors import InvalidRankerAnswer
from domain.providers.selection import (
    RankingWeights,
    Rejection,
    RejectionReason,
    SelectionRequest,
    SelectionResult,
    SuccessStats,
    data_sites_for,
    failure_message,
    select_sites,
    to_record_scheduling,
)
from domain.providers.state import ProviderState
from domain.providers.usage import QuotaUsageState
from eventstore.command_service import CommandService, Decider, utc_now
from eventstore.records import Metadata, RecordedEvent

log = logging.getLogger(__name__)

DEPLOYMENTS: Final[Decider[Any, Any, Any]] = Decider(
    initial_state=initial_state, evolve=evolve, decide=decide
)
RANKING_ACTOR: Final = system_actor("ranking")


# --- ports -----------------------------------------------------------------------------------


class SchedulingCatalogue(Protocol):
    """What selection reads: the federation as folded from the provider streams (kept by a
    projection; the bootstrap implements this port)."""

    async def providers(self) -> Sequence[ProviderState]:
        """Every known provider's current state."""
        ...

    async def usage(self) -> Sequence[QuotaUsageState]:
        """The latest quota usage samples of every provider."""
        ...

    async def success_stats(self, template_type: str | None) -> Sequence[SuccessStats]:
        """Recent attempts and successes of ``template_type`` per site."""
        ...


class DataLocator(Protocol):
    """Where the requested data already is (implemented over Rucio in
    ``handlers/rucio_locator.py``)."""

    async def rses_holding(self, dids: Sequence[str]) -> set[str]:
        """The RSEs holding a replica of the data identifiers ``dids`` (``scope:name``)."""
        ...


class NoDataLocator:
    """The locator used without Rucio: no data is anywhere, so no site is closer."""

    async def rses_holding(self, dids: Sequence[str]) -> set[str]:
        return set()


class ExternalRanker(Protocol):
    """A ranker outside the orchestrator (INFN's ai-ranker speaks these messages)."""

    @property
    def deadline_seconds(self) -> float: ...

    async def rank(self, request: ProvidersToRank) -> RankedProviders | None:
        """The answer to ``request``, or ``None`` when none came within the deadline;
        raises when the ranker cannot be reached."""
        ...


# --- the handler -----------------------------------------------------------------------------


class RankingHandler:
    """Schedules create operations (see the module doc)."""

    NAME = "ranking"
    HANDLES = frozenset({"deployment.requested", "deployment.retry_requested"})

    def __init__(
        self,
        commands: CommandService,
        catalogue: SchedulingCatalogue,
        *,
        locator: DataLocator | None = None,
        rse_sites: Mapping[str, PreferredSite] | None = None,
        external: ExternalRanker | None = None,
        weights: RankingWeights | None = None,
        clock: Callable[[], datetime] = utc_now,
        actor: Actor = RANKING_ACTOR,
    ) -> None:
        self.commands = commands
        self.catalogue = catalogue
        self.locator: DataLocator = locator or NoDataLocator()
        self.rse_sites = dict(rse_sites or {})
        self.external = external
        self.weights = weights or RankingWeights()
        self.clock = clock
        self.actor = actor

    async def handle(self, event: RecordedEvent, decoded: Any) -> None:
        deployment_id: str = decoded.deployment_id
        operation: int = decoded.operation
        stream = f"deployment-{deployment_id}"
        state, _ = await self.commands.load(stream, DEPLOYMENTS)
        if state.operation != operation or state.operation_kind != OperationKind.CREATE:
            return  # superseded by a later operation (deleted, retried again...)
        metadata = Metadata(
            actor_issuer=self.actor.issuer,
            actor_subject=self.actor.subject,
            correlation_id=event.metadata.correlation_id or deployment_id,
            causation_id=event.event_id,
            reason="scheduling",
        )
        failure: str | None = None
        if state.candidates is None:
            if state.status != DeploymentStatus.CREATE_IN_PROGRESS:
                return  # reset or deleted before it was scheduled
            result = await self.select(state, submitted_at=decoded.occurred_at)
            command = to_record_scheduling(result, operation=operation, actor=self.actor)
            try:
                outcome = await self.commands.execute(
                    stream,
                    DEPLOYMENTS,
                    command,
                    metadata,
                    idempotency_key=f"ranking/{deployment_id}/{operation}/scheduled",
                )
            except InvalidTransition as refused:
                # the operation ended or was scheduled by someone else meanwhile
                log.info("not scheduling %s operation %s: %s", deployment_id, operation, refused)
                return
            state = outcome.state
            failure = result.failure
            log.info(
                "scheduled %s operation %s: %d candidates, %d rejected (%s)",
                deployment_id,
                operation,
                len(result.candidates),
                len(result.rejected),
                result.ranking_method,
            )
        if state.candidates or state.status != DeploymentStatus.CREATE_IN_PROGRESS:
            return
        # No site can run it: fail the operation with the reason (also after a crash
        # between the two appends: the reason is rebuilt from the recorded rejections).
        reason = failure or _failure_from_recorded(
            state, await self._recorded_rejections(stream, operation)
        )
        await self.commands.execute(
            stream,
            DEPLOYMENTS,
            FailDeployment(
                deployment_id=deployment_id, actor=self.actor, operation=operation, reason=reason
            ),
            metadata,
            idempotency_key=f"ranking/{deployment_id}/{operation}/failed",
        )

    async def select(
        self, state: DeploymentState, *, submitted_at: datetime | None = None
    ) -> SelectionResult:
        """The selection (and ranking) for the current create operation of ``state``."""
        identity = state.template_identity
        request = SelectionRequest(
            deployment_id=state.deployment_id,
            user_group=state.user_group or "",
            issuer=state.owner.issuer if state.owner is not None else "",
            requested=state.requested_resources,
            template_name=identity.name if identity is not None else "",
            template_type=identity.type if identity is not None else None,
            pinned_site=state.preferred_site,
            submitted_at=submitted_at,
            data_sites=await self._data_sites(state),
        )
        providers, usage, stats = await asyncio.gather(
            self.catalogue.providers(),
            self.catalogue.usage(),
            self.catalogue.success_stats(request.template_type),
        )
        result = select_sites(
            request, providers, now=self.clock(), usage=usage, stats=stats, weights=self.weights
        )
        if self.external is not None and len(result.candidates) > 1:
            result = await self._rank_externally(result, self.external)
        return result

    async def _data_sites(self, state: DeploymentState) -> tuple[PreferredSite, ...]:
        dids = sorted({did for r in state.data_requirements for did in r.dids})
        if not dids or not self.rse_sites:
            return ()
        try:
            rses = await self.locator.rses_holding(dids)
        except Exception as error:  # locality is a bonus, never a blocker
            log.warning(
                "data locator failed for %s, ranking without locality: %s",
                state.deployment_id,
                error,
            )
            return ()
        return data_sites_for(rses, self.rse_sites)

    async def _rank_externally(
        self, result: SelectionResult, external: ExternalRanker
    ) -> SelectionResult:
        try:
            answer = await external.rank(to_providers_to_rank(result))
        except Exception as error:  # ranking always answers
            log.warning("external ranker unreachable for %s: %s", result.request.deployment_id,
                        error)
            return ranking_fallback(result, f"external ranker unreachable: {error}")
        if answer is None:
            return ranking_fallback(
                result, f"no answer from the external ranker within {external.deadline_seconds:g} s"
            )
        try:
            return apply_ranker_answer(result, answer, model_version=answer.model_version)
        except InvalidRankerAnswer as error:
            log.warning("unusable external ranking for %s: %s", result.request.deployment_id,
                        error)
            return ranking_fallback(result, f"unusable answer from the external ranker: {error}")

    async def _recorded_rejections(
        self, stream: str, operation: int
    ) -> tuple[SiteRejection, ...]:
        for recorded in reversed(await self.commands.store.read_stream(stream)):
            if recorded.type == "deployment.scheduled":
                scheduled = self.commands.registry.decode_recorded(recorded)
                if isinstance(scheduled, DeploymentScheduled) and scheduled.operation == operation:
                    return scheduled.rejected
        return ()


def _failure_from_recorded(state: DeploymentState, rejected: Sequence[SiteRejection]) -> str:
    """The failure reason, rebuilt from the rejections the scheduled event recorded."""
    rejections = []
    for r in rejected:
        try:
            reason = RejectionReason(r.reason)
        except ValueError:
            continue
        rejections.append(Rejection(site=r.site, reason=reason, message=r.message or r.reason))
    request_view = SelectionRequest(
        deployment_id=state.deployment_id,
        user_group=state.user_group or "",
        issuer="",
        requested=state.requested_resources,
        pinned_site=state.preferred_site,
    )
    return failure_message(request_view, rejections)
