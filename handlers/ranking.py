"""Provider selection and ranking: the handler that schedules a create operation.

On ``deployment.requested`` and ``deployment.retry_requested`` it builds the selection
request from the deployment (user group, owner's issuer, requested resources and operating
systems, the pinned site, the sites near the input data), reads the catalogue through the
:class:`SchedulingCatalogue` port, runs :func:`domain.providers.selection.select_sites`
(candidates, rejections with reasons, the built-in ranking), optionally asks an external
ranker (:class:`ExternalRanker`, e.g. the INFN ai-ranker over Kafka) and records ONE
``deployment.scheduled`` event with the ranked candidates, their scores and features as seen
now, and the rejected sites with readable messages. When no site is left (a pinned site that
cannot run the deployment, or nothing feasible) the operation fails with the reason
(``FailDeployment`` -> ``CREATE_FAILED``) in the same append.

Ranking always answers: an external ranker that is late, silent, unreachable or answers
nonsense gives way to the built-in ranking (``ranking_method = builtin-v1-fallback`` and a
``ranking_note`` saying why); a data locator that fails only loses the locality bonus.

Idempotent: the deployment's own state says whether this operation was scheduled already
(a redelivery then appends nothing), and the append carries the idempotency key
``ranking/<deployment id>/<operation>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from domain.deployments import (
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
    SelectionRequest,
    SelectionResult,
    SuccessStats,
    data_sites_for,
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


def _decide_in_order(commands: Sequence[Any], state: DeploymentState, *,
                     now: datetime) -> list[Any]:
    """The events of several commands decided one after the other (appended together)."""
    events: list[Any] = []
    for command in commands:
        decided = decide(command, state, now=now)
        events.extend(decided)
        for event in decided:
            state = evolve(state, event)
    return events


SCHEDULING: Final[Decider[Any, Any, Any]] = Decider(
    initial_state=initial_state, evolve=evolve, decide=_decide_in_order
)
"""The deployment decider over a batch of commands: the schedule and, when no site is
left, the failure, in one append."""


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
        if state.candidates is not None or state.status != DeploymentStatus.CREATE_IN_PROGRESS:
            return  # scheduled already (a redelivery), or reset/deleted before it was
        result = await self.select(state, submitted_at=decoded.occurred_at)
        batch: list[Any] = [to_record_scheduling(result, operation=operation, actor=self.actor)]
        if not result.candidates:
            # No site can run it: the operation fails with the reason, in the same append,
            # so that no deployer ever sees a schedule without candidates and no failure.
            batch.append(FailDeployment(
                deployment_id=deployment_id, actor=self.actor, operation=operation,
                reason=result.failure or "No site can run this deployment"))
        try:
            await self.commands.execute(
                stream, SCHEDULING, batch, metadata,
                idempotency_key=f"ranking/{deployment_id}/{operation}",
            )
        except InvalidTransition as refused:
            # the operation ended, or was scheduled by someone else, meanwhile
            log.info("not scheduling %s operation %s: %s", deployment_id, operation, refused)
            return
        log.info(
            "scheduled %s operation %s: %d candidates, %d rejected (%s)%s",
            deployment_id,
            operation,
            len(result.candidates),
            len(result.rejected),
            result.ranking_method,
            "" if result.candidates else f"; failed: {result.failure}",
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
