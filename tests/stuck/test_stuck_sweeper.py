"""The stuck-deployment sweep against a real system: candidates from the deployments view
(the bootstrap's port), the stream re-checked, failed through the domain's decider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from api.legacy.common import DECIDER
from domain.deployments import (
    AttemptFailureCause,
    AttemptOutcome,
    DeploymentStatus,
    stream_id,
)
from handlers.stuck_sweeper import SWEEPER, StuckSweeper
from orchestrator.bootstrap import StuckCandidatesReader
from tests.api.support import Harness
from tests.callbacks.support import api_harness, wait_for_status
from tests.databases import TestDatabases
from tests.oidc_issuer import LocalIssuer
from tosca import TemplateValidator


@pytest.fixture(name="api")
async def fixture_api(fx_databases: TestDatabases, fx_kafka_bootstrap: str,
                      fx_issuers: tuple[LocalIssuer, LocalIssuer],
                      fx_validator: TemplateValidator) -> AsyncIterator[Harness]:
    async with api_harness(fx_databases, fx_kafka_bootstrap, fx_issuers, fx_validator,
                           stuck_sweep_interval_s=3600.0) as harness:
        yield harness


def sweeper_at(api: Harness, now: datetime) -> StuckSweeper:
    system = api.system
    return StuckSweeper(StuckCandidatesReader(system.engine), system.store, system.registry,
                        default_timeout_mins=1440, clock=lambda: now)


async def test_in_progress_deployments_past_their_timeout_are_failed(api: Harness) -> None:
    user = api.user()
    short = (await api.create(user, timeoutMins=10))["uuid"]
    await api.start_attempt(short)  # an attempt is running at a site
    default = (await api.create(user))["uuid"]  # no timeoutMins: the default (1440)
    done = (await api.create(user, timeoutMins=10))["uuid"]
    await api.complete_create(done)
    deleting = (await api.create(user, timeoutMins=10))["uuid"]
    await api.complete_create(deleting)
    await wait_for_status(api, user, deleting, "CREATE_COMPLETE")
    response = await api.request("DELETE", f"/deployments/{deleting}", user)
    assert response.status_code == 204, response.text
    await wait_for_status(api, user, deleting, "DELETE_IN_PROGRESS")
    await wait_for_status(api, user, short, "CREATE_IN_PROGRESS")
    await wait_for_status(api, user, done, "CREATE_COMPLETE")
    start = datetime.now(UTC)

    # Nothing is stuck yet.
    assert await sweeper_at(api, start + timedelta(minutes=5)).sweep_once() == []

    # Past 10 minutes: the two 10-minute deployments still in progress.
    failed = await sweeper_at(api, start + timedelta(minutes=11)).sweep_once()
    assert sorted(failed) == sorted([short, deleting])
    state = await api.state(short)
    assert state.status == DeploymentStatus.CREATE_FAILED
    assert state.status_reason is not None
    assert state.status_reason.startswith("No progress for 10 minutes (last change at ")
    [attempt] = state.attempts
    assert attempt.outcome == AttemptOutcome.FAILED
    assert attempt.failure_cause == AttemptFailureCause.TIMEOUT
    state = await api.state(deleting)
    assert state.status == DeploymentStatus.DELETE_FAILED
    assert state.status_reason is not None and "No progress for 10 minutes" in state.status_reason
    recorded = await api.system.store.read_stream(stream_id(deleting))
    assert recorded[-1].metadata.actor_subject == SWEEPER.subject
    # The view follows; the legacy API shows the reason.
    shown = await wait_for_status(api, user, short, "CREATE_FAILED")
    assert shown["statusReason"] == (await api.state(short)).status_reason

    # Past the default: the one without timeoutMins; the completed one is never touched.
    later = sweeper_at(api, start + timedelta(minutes=1441))
    assert await later.sweep_once() == [default]
    assert (await api.state(default)).status == DeploymentStatus.CREATE_FAILED
    assert "No progress for 1440 minutes" in ((await api.state(default)).status_reason or "")
    assert (await api.state(done)).status == DeploymentStatus.CREATE_COMPLETE

    # A second pass finds nothing (the view caught up or the stream says not stuck).
    assert await later.sweep_once() == []


async def test_the_stream_decides_not_a_stale_view(api: Harness) -> None:
    user = api.user()
    deployment_id = (await api.create(user, timeoutMins=10))["uuid"]
    start = datetime.now(UTC)
    sweeper = sweeper_at(api, start + timedelta(minutes=5))
    # Asked directly (as if a stale view named it): the stream shows recent progress.
    assert await sweeper.fail_if_stuck(deployment_id) is False
    assert await sweeper.fail_if_stuck("00000000-0000-4000-8000-00000000dead") is False
    state, _ = await api.system.commands.load(stream_id(deployment_id), DECIDER)
    assert state.status == DeploymentStatus.CREATE_IN_PROGRESS


async def test_the_bootstrap_runs_the_sweep(api: Harness) -> None:
    assert api.system.sweeper is not None
    assert api.system.sweeper.interval_s == 3600.0
    assert any(task.get_name() == "stuck-sweeper" and not task.done()
               for task in api.system.tasks)
