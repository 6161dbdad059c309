"""The ranking handler end to end over the real Postgres and Kafka, wired by the bootstrap:
a create request -> one deployment.scheduled event with ranked candidates (scores, features)
and rejections (reasons, messages); redelivery appends nothing; a pinned site that cannot
run the deployment -> CREATE_FAILED with the reason; outcomes feed the success rates and the
AI ranker's training rows."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest

from domain.deployments import (
    CompleteDeployment,
    DeploymentFailed,
    DeploymentScheduled,
    FailAttempt,
    RetryDeployment,
    StartAttempt,
)
from domain.deployments.values import DataRequirement, DeploymentStatus, PreferredSite
from domain.providers import QuotaValues
from domain.providers.airanker import DatasetRow
from domain.providers.selection import (
    RANKING_BUILTIN,
    RejectionReason,
    SiteFeatures,
    parse_rse_sites,
)
from eventstore.projection import live_version
from eventstore.records import Metadata
from handlers.ranking import DEPLOYMENTS, RANKING_ACTOR, RankingHandler
from handlers.rucio_client import RucioClient
from handlers.rucio_locator import RucioDataLocator
from orchestrator import bootstrap, cli
from orchestrator.settings import Settings
from projections import airanker_dataset, site_success
from tests.consumers.support import consumer_settings
from tests.domain.providers.support import usage_of
from tests.ranking.support import (
    OWNER,
    create_deployment,
    deployment_events,
    deployment_state,
    observe,
    record_usage,
    wait_for,
)
from tests.rucio.conftest import (  # the real Rucio peer's fixtures
    Scenario,
    fixture_rucio,  # noqa: F401
    fixture_rucio_peer,  # noqa: F401
    fixture_scenario,  # noqa: F401
)

OTHER_IAM = "https://other-iam.example.org/"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(name="fx_system")
async def fixture_system(fx_database_url: str, fx_kafka_bootstrap: str,
                         fx_topic_prefix: str) -> AsyncIterator[bootstrap.System]:
    settings = Settings(database_url=fx_database_url, kafka_bootstrap=fx_kafka_bootstrap,
                        topic_prefix=fx_topic_prefix, topic_partitions=2, ranking_enabled=True)
    system = await bootstrap.build(settings)
    stop = asyncio.Event()
    try:
        await bootstrap.start_components(system, stop, consumer_settings(fx_topic_prefix))
        yield system
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()


async def catalogue_sees(system: bootstrap.System, count: int) -> None:
    catalogue = bootstrap.SchedulingCatalogueReader(system.engine)

    async def check() -> bool:
        return len(await catalogue.providers()) == count

    await wait_for(check, what=f"{count} providers in the catalogue projection")


async def scheduled(system: bootstrap.System, deployment_id: str) -> DeploymentScheduled:
    async def check() -> DeploymentScheduled | None:
        found = [e for e in await deployment_events(system.commands, deployment_id)
                 if isinstance(e, DeploymentScheduled)]
        return found[-1] if found else None

    return await wait_for(check, what=f"deployment.scheduled of {deployment_id}")


async def test_a_request_is_scheduled_once_with_candidates_and_explained_rejections(
        fx_system: bootstrap.System) -> None:
    # given a federation: one feasible provider, and one per reason to reject
    commands = fx_system.commands
    await observe(commands, "ALPHA")
    await observe(commands, "BETA", images=[])
    await observe(commands, "GAMMA", issuer=OTHER_IAM)
    await observe(commands, "DELTA", sla_dates=(date(2024, 1, 1), date(2024, 12, 31)))
    await observe(commands, "EPSILON")
    await record_usage(commands, usage_of("epsilon.openstack", "r1", "p1",
                                          QuotaValues(cores=99, ram_mib=0, instances=1)))
    await catalogue_sees(fx_system, 5)
    # when a deployment is requested
    deployment_id = str(uuid.uuid4())
    await create_deployment(commands, deployment_id)
    event = await scheduled(fx_system, deployment_id)
    # then one event ranks the feasible site, with its features at decision time
    assert event.ranking_method == RANKING_BUILTIN
    assert event.actor == RANKING_ACTOR
    [candidate] = event.candidates
    assert candidate.site.provider_id == "alpha.openstack"
    assert candidate.site.region == "r1" and candidate.site.project == "p1"
    features = SiteFeatures.__struct_fields__
    assert set(candidate.features) >= {"headroom", "success_rate", "flavours", "resources"}
    assert set(candidate.features) <= set(features)
    assert candidate.features["flavours"][0]["flavor_name"] == "small"
    assert candidate.explanation and candidate.explanation.startswith("score ")
    # and every infeasible site says why, readably
    reasons = {r.site.provider_id: (r.reason, r.message) for r in event.rejected}
    assert reasons["beta.openstack"][0] == RejectionReason.NO_IMAGE
    assert "No image for ubuntu 22.04" in (reasons["beta.openstack"][1] or "")
    assert reasons["gamma.openstack"][0] == RejectionReason.IDENTITY_PROVIDER_NOT_TRUSTED
    assert reasons["delta.openstack"][0] == RejectionReason.SLA_EXPIRED
    assert reasons["epsilon.openstack"][0] == RejectionReason.QUOTA_EXHAUSTED
    assert "cores: needs 2, 1 of 100 left" in (reasons["epsilon.openstack"][1] or "")
    state = await deployment_state(commands, deployment_id)
    assert state.status == DeploymentStatus.CREATE_IN_PROGRESS
    assert state.candidates == event.candidates

    # when the request is delivered again, then nothing is appended
    handler = fx_system.handler("ranking")
    records = await commands.store.read_stream(f"deployment-{deployment_id}")
    requested = records[0]
    await handler.handle(requested, commands.registry.decode_recorded(requested))
    assert len(await commands.store.read_stream(f"deployment-{deployment_id}")) == len(records)


async def test_a_pinned_site_that_cannot_run_the_deployment_fails_it_with_the_reason(
        fx_system: bootstrap.System) -> None:
    commands = fx_system.commands
    await observe(commands, "ALPHA")
    await observe(commands, "BETA", flavors=[])
    await catalogue_sees(fx_system, 2)
    deployment_id = str(uuid.uuid4())
    await create_deployment(commands, deployment_id,
                            preferred_site=PreferredSite(provider_id="beta.openstack"))

    async def failed() -> DeploymentFailed | None:
        events = await deployment_events(commands, deployment_id)
        return next((e for e in events if isinstance(e, DeploymentFailed)), None)

    failure = await wait_for(failed, what="CREATE_FAILED")
    assert failure.status == DeploymentStatus.CREATE_FAILED
    assert failure.reason.startswith("The chosen site beta.openstack cannot run this deployment")
    assert "No flavour fits vm (2 vCPUs, 4096 MB RAM, 20 GB disk)" in failure.reason
    events = await deployment_events(commands, deployment_id)
    [schedule] = [e for e in events if isinstance(e, DeploymentScheduled)]
    assert schedule.candidates == ()
    assert {(r.site.provider_id, r.reason) for r in schedule.rejected} == {
        ("alpha.openstack", RejectionReason.PINNED_ELSEWHERE),
        ("beta.openstack", RejectionReason.NO_FLAVOR)}
    # a redelivery changes nothing
    handler = fx_system.handler("ranking")
    first = (await commands.store.read_stream(f"deployment-{deployment_id}"))[0]
    await handler.handle(first, commands.registry.decode_recorded(first))
    assert len(await deployment_events(commands, deployment_id)) == len(events)

    # once the pinned site offers flavours, a retry is scheduled there
    await observe(commands, "BETA")
    catalogue = bootstrap.SchedulingCatalogueReader(fx_system.engine)

    async def beta_has_flavours() -> bool:
        states = {s.provider_id: s for s in await catalogue.providers()}
        return bool(states["beta.openstack"].flavors)

    await wait_for(beta_has_flavours, what="BETA's new flavours in the catalogue")
    await commands.execute(f"deployment-{deployment_id}", DEPLOYMENTS,
                           RetryDeployment(deployment_id=deployment_id, actor=OWNER),
                           Metadata(actor_issuer=OWNER.issuer, actor_subject=OWNER.subject))

    async def rescheduled() -> DeploymentScheduled | None:
        found = [e for e in await deployment_events(commands, deployment_id)
                 if isinstance(e, DeploymentScheduled) and e.operation == 2]
        return found[0] if found else None

    retry = await wait_for(rescheduled, what="the retry's deployment.scheduled")
    assert [c.site.provider_id for c in retry.candidates] == ["beta.openstack"]
    assert (await deployment_state(commands, deployment_id)).status == (
        DeploymentStatus.CREATE_IN_PROGRESS)


async def test_a_site_close_to_the_data_ranks_higher(
        fx_system: bootstrap.System, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    commands = fx_system.commands
    await observe(commands, "ALPHA")
    await observe(commands, "BETA")
    await catalogue_sees(fx_system, 2)
    deployment_id = str(uuid.uuid4())
    dataset = str(fx_scenario.dataset)  # its files are AVAILABLE on the source RSE only
    await create_deployment(commands, deployment_id, data=[
        DataRequirement(dids=(dataset,), rse_expression=fx_scenario.target)])
    await scheduled(fx_system, deployment_id)  # the wired handler (no Rucio): no locality
    state = await deployment_state(commands, deployment_id)
    assert [c.site.provider_id for c in state.candidates or ()] == [
        "alpha.openstack", "beta.openstack"]  # equal scores: by site key

    # The real Rucio peer answers where the data is: the source RSE, beta's.
    handler = RankingHandler(
        commands, bootstrap.SchedulingCatalogueReader(fx_system.engine),
        locator=RucioDataLocator(fx_rucio),
        rse_sites=parse_rse_sites({fx_scenario.source: "beta.openstack/r1",
                                   fx_scenario.target: "alpha"}))
    result = await handler.select(state)
    assert [c.site.provider_id for c in result.candidates] == [
        "beta.openstack", "alpha.openstack"]
    assert result.candidates[0].features.data_local is True
    assert result.candidates[1].features.data_local is False
    assert "close to the data" in result.candidates[0].explanation


async def test_outcomes_feed_the_success_rate_and_the_training_rows(
        fx_system: bootstrap.System, capsys: pytest.CaptureFixture[str]) -> None:
    commands = fx_system.commands
    await observe(commands, "ALPHA")
    await observe(commands, "BETA")
    await catalogue_sees(fx_system, 2)
    deployment_id = str(uuid.uuid4())
    await create_deployment(commands, deployment_id)
    event = await scheduled(fx_system, deployment_id)
    alpha, beta = (c.site for c in event.candidates)
    stream = f"deployment-{deployment_id}"
    deployer = Metadata(actor_subject="test-deployer")
    # the first site fails, the second succeeds
    for command in (
        StartAttempt(deployment_id=deployment_id, actor=RANKING_ACTOR, operation=1, attempt=1,
                     site=alpha),
        FailAttempt(deployment_id=deployment_id, actor=RANKING_ACTOR, attempt=1,
                    reason="quota exceeded at the site"),
        StartAttempt(deployment_id=deployment_id, actor=RANKING_ACTOR, operation=1, attempt=2,
                     site=beta),
        CompleteDeployment(deployment_id=deployment_id, actor=RANKING_ACTOR, operation=1),
    ):
        await commands.execute(stream, DEPLOYMENTS, command, deployer)

    async def dataset_rows() -> list[tuple[str, str, int]] | None:
        async with fx_system.engine.connect() as conn:
            build = await live_version(conn, airanker_dataset.NAME)
            rows = await airanker_dataset.dataset(conn, build) if build else []
        found = [(row.provider_name, row.status, row.n_failures) for _, _, row in rows]
        return found if len(found) == 2 else None

    assert await wait_for(dataset_rows, what="two training rows") == [
        ("ALPHA", "CREATE_FAILED", 1), ("BETA", "CREATE_COMPLETE", 0)]
    async with fx_system.engine.connect() as conn:
        build = await live_version(conn, airanker_dataset.NAME)
        assert build is not None
        [(_, key, row), _] = await airanker_dataset.dataset(conn, build)
    assert key == f"alpha_r1_{deployment_id}"
    assert row.msg_version == "1.1.0" and row.template_name == "single-vm"
    assert row.status_reason == "quota exceeded at the site"
    assert row.vcpus_requ == 2.0 and row.vcpus_quota == 100.0
    # the operator's export: JSON Lines, pageable by log position
    assert await cli._airanker_dataset(argparse.Namespace(after=0, limit=10),
                                       fx_system.settings) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["key"] for line in lines] == [key, f"beta_r1_{deployment_id}"]
    assert lines[0]["row"]["status"] == "CREATE_FAILED"
    assert set(lines[0]["row"]) == set(DatasetRow.__struct_fields__)
    assert await cli._airanker_dataset(argparse.Namespace(after=lines[-1]["position"], limit=10),
                                       fx_system.settings) == 0
    assert capsys.readouterr().out == ""

    async def stats() -> dict[str, tuple[int, int]] | None:
        async with fx_system.engine.connect() as conn:
            build = await live_version(conn, site_success.NAME)
            found = (await site_success.success_stats(conn, build, "vm", since=EPOCH)
                     if build else [])
        by_site = {s.provider_id: (s.attempts, s.successes) for s in found}
        return by_site if len(by_site) == 2 else None

    assert await wait_for(stats, what="success stats") == {
        "alpha.openstack": (1, 0), "beta.openstack": (1, 1)}
    # the next request of the same template type ranks the site that worked first
    second = str(uuid.uuid4())
    await create_deployment(commands, second)
    ranked = await scheduled(fx_system, second)
    assert [c.site.provider_id for c in ranked.candidates] == ["beta.openstack",
                                                               "alpha.openstack"]
    assert ranked.candidates[0].features["recent_successes"] == 1
