"""Random deployment histories driven through the real command path, and a from-scratch
oracle that counts the statistics over the log with the domain's own fold.

The oracle never looks at event types: it compares the domain state (``evolve``) before
and after each event, which is exactly how docs/statistics.md defines every number.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from api.legacy.common import DECIDER
from domain.deployments import (
    CompleteDeletion,
    CompleteDeployment,
    CreateDeployment,
    DeleteDeployment,
    DeploymentError,
    DeploymentEvent,
    DeploymentState,
    DeploymentStatus,
    FailAttempt,
    FailDeletion,
    FailDeployment,
    RankedSite,
    RecordScheduling,
    RequestedResources,
    ResetDeployment,
    RetryDeployment,
    Site,
    StartAttempt,
    TemplateIdentity,
    UpdateDeployment,
    evolve,
    initial_state,
    stream_id,
)
from domain.identity import Actor, system_actor
from eventstore.command_service import CommandService
from eventstore.records import Metadata

S = DeploymentStatus
T0 = datetime(2026, 2, 24, 8, 0, tzinfo=UTC)
"""Histories start within five days of T0 and run up to three weeks: they cross the end of
February (the statistics keep monthly rollups next to the daily rows)."""
SITES = [Site(provider_id="prov-a", provider_name="BACKBONE", region="cnaf"),
         Site(provider_id="prov-b", provider_name="CLOUD-VENETO", region=None),
         Site(provider_id="prov-c", provider_name="RECAS", region="ba")]
TYPES = ["vm", "kubernetes", "jupyter"]
GROUPS = ["g1", "g2", None]
REASONS = ["quota exceeded", "image not found", "timeout"]
ACTIONS = ["start", "start", "complete", "complete", "fail", "fail_attempt", "update",
           "delete", "delete_done", "delete_done", "delete_fail", "reset", "retry"]
DEPLOYER = system_actor("statistics-test")
FAILED_OF = {S.CREATE_IN_PROGRESS: S.CREATE_FAILED, S.UPDATE_IN_PROGRESS: S.UPDATE_FAILED,
             S.DELETE_IN_PROGRESS: S.DELETE_FAILED}


@dataclass(frozen=True)
class Plan:
    """One deployment's random plan: who, what, when, and the steps tried in order."""

    owner: int
    group: str | None
    template_type: str
    vcpus: int
    ram_mb: int
    gpus: int
    start_minutes: int
    steps: tuple[tuple[str, int, int], ...]
    """(action, choice, minutes since the previous step)."""


def plans(issuer_count: int = 2) -> st.SearchStrategy[list[Plan]]:
    step = st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2), st.integers(1, 36 * 60))
    plan = st.builds(
        Plan, owner=st.integers(0, 2 * issuer_count - 1), group=st.sampled_from(GROUPS),
        template_type=st.sampled_from(TYPES), vcpus=st.integers(0, 8),
        ram_mb=st.sampled_from([0, 2048, 4096]), gpus=st.integers(0, 2),
        start_minutes=st.integers(0, 5 * 24 * 60),
        steps=st.lists(step, max_size=10).map(tuple))
    return st.lists(plan, min_size=1, max_size=6)


def owners(tag: str, issuer_count: int = 2) -> list[Actor]:
    """Two subjects per issuer; issuers unique per example (statistics scope by issuer)."""
    return [Actor(issuer=f"https://iss{i}-{tag}.example/", subject=f"user{j}")
            for i in range(issuer_count) for j in range(2)]


def _command(action: str, choice: int, state: DeploymentState, owner: Actor,
             plan: Plan) -> list[Any]:
    d = state.deployment_id
    op = state.operation
    match action:
        case "start":
            site = SITES[choice]
            return [RecordScheduling(deployment_id=d, actor=DEPLOYER, operation=op,
                                     candidates=(RankedSite(site=site, score=0.5),),
                                     ranking_method="test"),
                    StartAttempt(deployment_id=d, actor=DEPLOYER, operation=op,
                                 attempt=state.last_attempt_number + 1, site=site)]
        case "complete":
            return [CompleteDeployment(deployment_id=d, actor=DEPLOYER, operation=op)]
        case "fail":
            return [FailDeployment(deployment_id=d, actor=DEPLOYER, operation=op,
                                   reason=REASONS[choice])]
        case "fail_attempt":
            return [FailAttempt(deployment_id=d, actor=DEPLOYER,
                                attempt=max(state.last_attempt_number, 1),
                                reason=REASONS[choice])]
        case "update":
            return [UpdateDeployment(
                deployment_id=d, actor=owner, template=f"tosca: {choice}",
                template_identity=TemplateIdentity(name="t", type=TYPES[choice], hash="h"),
                requested_resources=RequestedResources(vcpus=plan.vcpus + choice,
                                                       ram_mb=plan.ram_mb, gpus=choice))]
        case "delete":
            return [DeleteDeployment(deployment_id=d, actor=owner)]
        case "delete_done":
            return [CompleteDeletion(deployment_id=d, actor=DEPLOYER, operation=op)]
        case "delete_fail":
            return [FailDeletion(deployment_id=d, actor=DEPLOYER, operation=op,
                                 reason=REASONS[choice])]
        case "reset":
            target = FAILED_OF.get(state.status) if state.status else None
            return [] if target is None else [
                ResetDeployment(deployment_id=d, actor=owner, status=target)]
        case "retry":
            return [RetryDeployment(deployment_id=d, actor=owner)]
    raise AssertionError(action)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


async def run_plans(commands: CommandService, clock: Clock, plans_: Sequence[Plan],
                    people: Sequence[Actor]) -> list[str]:
    """Execute every plan through the command service (refused steps are skipped)."""
    ids = []
    for plan in plans_:
        owner = people[plan.owner]
        deployment_id = str(uuid.uuid4())
        ids.append(deployment_id)
        clock.now = T0 + timedelta(minutes=plan.start_minutes)
        stream = stream_id(deployment_id)
        metadata = Metadata(actor_issuer=owner.issuer, actor_subject=owner.subject)
        result = await commands.execute(stream, DECIDER, CreateDeployment(
            deployment_id=deployment_id, actor=owner, user_group=plan.group,
            template="tosca: 0",
            template_identity=TemplateIdentity(name="t", type=plan.template_type, hash="h"),
            requested_resources=RequestedResources(vcpus=plan.vcpus, ram_mb=plan.ram_mb,
                                                   gpus=plan.gpus)), metadata)
        state = result.state
        for action, choice, minutes in plan.steps:
            clock.now += timedelta(minutes=minutes)
            for command in _command(action, choice, state, owner, plan):
                try:
                    state = (await commands.execute(stream, DECIDER, command, metadata)).state
                except DeploymentError:
                    break
    return ids


# ---------------------------------------------------------------- the oracle


def _dims(state: DeploymentState) -> tuple[str, ...]:
    assert state.owner is not None and state.template_identity is not None
    site = state.site
    return (state.owner.issuer, state.owner.subject, state.user_group or "",
            state.template_identity.type, site.provider_id if site else "",
            site.provider_name if site else "", (site.region or "") if site else "")


def _resources(state: DeploymentState) -> tuple[int, int, int]:
    r = state.requested_resources
    return (r.vcpus, r.ram_mb, r.gpus)


@dataclass
class Oracle:
    """Every statistic, counted from the decoded log of the example's deployments."""

    created: dict[tuple[Any, ...], list[int]] = field(default_factory=dict)
    # dims -> list of (instant, active?, resources) after each event
    timelines: dict[str, list[tuple[datetime, tuple[str, ...], bool, tuple[int, int, int]]]] = (
        field(default_factory=dict))
    outcomes: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)
    failures: dict[tuple[Any, ...], int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def count(cls, streams: dict[str, list[DeploymentEvent]]) -> Oracle:
        oracle = cls()
        for deployment_id, events in streams.items():
            state = initial_state()
            ever_completed = False
            op_start: datetime | None = None
            line = oracle.timelines.setdefault(deployment_id, [])
            for event in events:
                before, state = state, evolve(state, event)
                at = event.occurred_at
                day = at.astimezone(UTC).date()
                if state.status == S.CREATE_IN_PROGRESS and before.status != S.CREATE_IN_PROGRESS:
                    op_start = at
                if state.status == S.CREATE_COMPLETE:
                    ever_completed = True
                active = ever_completed and state.status != S.DELETE_COMPLETE
                line.append((at, _dims(state), active, _resources(state)))
                if before.status != state.status:
                    if before.status == S.CREATE_IN_PROGRESS and state.status in (
                            S.CREATE_COMPLETE, S.CREATE_FAILED):
                        row = oracle.outcomes.setdefault((*_dims(state), day),
                                                         [0, 0, 0, None, None])
                        if state.status == S.CREATE_COMPLETE:
                            assert op_start is not None
                            took = (at - op_start) // timedelta(microseconds=1)
                            row[0] += 1
                            row[2] += took
                            row[3] = took if row[3] is None else min(row[3], took)
                            row[4] = took if row[4] is None else max(row[4], took)
                        else:
                            row[1] += 1
                    if state.status in (S.CREATE_FAILED, S.UPDATE_FAILED, S.DELETE_FAILED):
                        oracle.failures[(*_dims(state), day, state.status.value,
                                         state.status_reason or "")] += 1
            assert state.created_at is not None and state.status is not None
            key = (*_dims(state), state.created_at.astimezone(UTC).date(), state.status.value)
            row = oracle.created.setdefault(key, [0, 0, 0, 0])
            for index, value in enumerate((1, *_resources(state))):
                row[index] += value
        return oracle

    def active_at(self, day: date) -> dict[tuple[str, ...], list[int]]:
        """Active deployments and their resources at the end of ``day``, per dims."""
        out: dict[tuple[str, ...], list[int]] = {}
        for line in self.timelines.values():
            last = None
            for at, dims, active, resources in line:
                if at.astimezone(UTC).date() <= day:
                    last = (dims, active, resources)
            if last is not None and last[1]:
                row = out.setdefault(last[0], [0, 0, 0, 0])
                for index, value in enumerate((1, *last[2])):
                    row[index] += value
        return out

    def held_micros(self, start: datetime, end: datetime) -> dict[tuple[str, ...], list[int]]:
        """Resource-µs held by active deployments within [start, end), per dims."""
        out: dict[tuple[str, ...], list[int]] = {}
        for line in self.timelines.values():
            for index, (at, dims, active, resources) in enumerate(line):
                if not active:
                    continue
                until = line[index + 1][0] if index + 1 < len(line) else end
                low, high = max(at, start), min(until, end)
                if high <= low:
                    continue
                span = (high - low) // timedelta(microseconds=1)
                row = out.setdefault(dims, [0, 0, 0])
                for k, value in enumerate(resources):
                    row[k] += value * span
        return out
