"""The external ranker over the real Kafka (INFN's ``providers-to-rank`` v1.1.0 request and
``ranked_providers`` answer): answers in time, answers late, never answers, answers nonsense,
cannot be reached. Ranking always answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

import domain.deployments as deployments
from domain.deployments import CreateDeployment, DeploymentState
from domain.deployments.values import (
    OsRequest,
    RequestedResources,
    TemplateIdentity,
    template_sha256,
)
from domain.providers.airanker import ProvidersToRank
from domain.providers.selection import RANKING_BUILTIN, RANKING_EXTERNAL, RANKING_FALLBACK
from eventstore.command_service import CommandService
from eventstore.store import EventStore
from handlers.external_ranker import KafkaExternalRanker
from handlers.ranking import RankingHandler
from orchestrator.bootstrap import event_registry
from tests.consumers.support import create_topics
from tests.domain.providers.support import NOW
from tests.domain.providers.test_selection import provider
from tests.ranking.support import (
    OPEN_SLA,
    OWNER,
    TEMPLATE,
    InMemoryCatalogue,
    TestRanker,
    wait_for,
)

BUILT_IN_ORDER = ["alpha.openstack", "beta.openstack"]  # equal scores: by site key


def requested_state(deployment_id: str) -> DeploymentState:
    command = CreateDeployment(
        deployment_id=deployment_id, actor=OWNER, owner=OWNER, user_group="g1",
        template=TEMPLATE,
        template_identity=TemplateIdentity(name="single-vm", type="vm",
                                           hash=template_sha256(TEMPLATE)),
        requested_resources=RequestedResources(
            vms=1, vcpus=2, ram_mb=4096, disk_gb=20.0,
            os=(OsRequest(distribution="ubuntu", version="22.04"),)))
    state = deployments.initial_state()
    return deployments.fold(deployments.decide(command, state, now=NOW), state)


@pytest.fixture(name="fx_topics")
async def fixture_topics(fx_kafka_bootstrap: str, fx_topic_prefix: str) -> tuple[str, str]:
    topics = (f"{fx_topic_prefix}.providers-to-rank", f"{fx_topic_prefix}.ranked_providers")
    await create_topics(fx_kafka_bootstrap, list(topics), 1)
    return topics


@pytest.fixture(name="fx_commands")
async def fixture_commands(fx_store: EventStore) -> AsyncIterator[CommandService]:
    yield CommandService(fx_store, event_registry())


def handler(commands: CommandService, bootstrap: str, topics: tuple[str, str], *,
            deadline: float) -> RankingHandler:
    request_topic, answer_topic = topics
    return RankingHandler(
        commands,
        InMemoryCatalogue([provider("ALPHA", sla_dates=OPEN_SLA),
                           provider("BETA", sla_dates=OPEN_SLA)]),
        external=KafkaExternalRanker(bootstrap_servers=bootstrap, request_topic=request_topic,
                                     answer_topic=answer_topic, deadline_seconds=deadline),
        clock=lambda: NOW)


async def test_an_answer_in_time_ranks(fx_commands: CommandService, fx_kafka_bootstrap: str,
                                       fx_topics: tuple[str, str]) -> None:
    deployment_id = str(uuid.uuid4())
    async with TestRanker(fx_kafka_bootstrap, *fx_topics, delay=0.0) as ranker:
        result = await handler(fx_commands, fx_kafka_bootstrap, fx_topics,
                               deadline=20.0).select(requested_state(deployment_id))
    assert result.ranking_method == RANKING_EXTERNAL
    assert result.model_version == "test-model-7"
    assert [c.site.provider_id for c in result.candidates] == BUILT_IN_ORDER[::-1]
    assert result.candidates[0].explanation.startswith("ai-ranker rank 1")
    [request] = ranker.requests
    assert request.uuid == deployment_id and request.msg_version == "1.1.0"
    assert [p.provider_name for p in request.providers] == ["ALPHA", "BETA"]
    assert request.providers[0].vcpus_requ == 2.0


async def test_a_late_answer_falls_back_and_is_ignored_afterwards(
        fx_commands: CommandService, fx_kafka_bootstrap: str,
        fx_topics: tuple[str, str]) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    async with TestRanker(fx_kafka_bootstrap, *fx_topics, delay=3.0) as ranker:
        late = await handler(fx_commands, fx_kafka_bootstrap, fx_topics,
                             deadline=1.0).select(requested_state(first))
        assert late.ranking_method == RANKING_FALLBACK
        assert late.ranking_note == "no answer from the external ranker within 1 s"
        assert [c.site.provider_id for c in late.candidates] == BUILT_IN_ORDER
        # the next ranking waits long enough; the first one's late answer arrives while it
        # waits and is skipped (another deployment), never fatal
        patient = await handler(fx_commands, fx_kafka_bootstrap, fx_topics,
                                deadline=30.0).select(requested_state(second))
    assert patient.ranking_method == RANKING_EXTERNAL
    assert [r.uuid for r in ranker.requests] == [first, second]


async def test_no_answer_falls_back_to_the_built_in_ranking(
        fx_commands: CommandService, fx_kafka_bootstrap: str,
        fx_topics: tuple[str, str]) -> None:
    deployment_id = str(uuid.uuid4())
    async with TestRanker(fx_kafka_bootstrap, *fx_topics, delay=None) as ranker:
        result = await handler(fx_commands, fx_kafka_bootstrap, fx_topics,
                               deadline=1.5).select(requested_state(deployment_id))
        await wait_for(lambda: asyncio.sleep(0, ranker.requests), what="the request seen")
    assert result.ranking_method == RANKING_FALLBACK
    assert result.ranking_note == "no answer from the external ranker within 1.5 s"
    assert [c.site.provider_id for c in result.candidates] == BUILT_IN_ORDER
    assert [r.uuid for r in ranker.requests] == [deployment_id]


async def test_malformed_answers_are_skipped(fx_commands: CommandService,
                                            fx_kafka_bootstrap: str,
                                            fx_topics: tuple[str, str]) -> None:
    noise = [b"not json", b'{"uuid": 42}', b'{"uuid": "other", "ranked_providers": []}',
             b'{"ranked_providers": [{"provider_name": "ALPHA"}]}']
    async with TestRanker(fx_kafka_bootstrap, *fx_topics, delay=0.0, noise=noise):
        result = await handler(fx_commands, fx_kafka_bootstrap, fx_topics,
                               deadline=20.0).select(requested_state(str(uuid.uuid4())))
    assert result.ranking_method == RANKING_EXTERNAL
    assert [c.site.provider_id for c in result.candidates] == BUILT_IN_ORDER[::-1]


async def test_an_answer_naming_no_candidate_falls_back(
        fx_commands: CommandService, fx_kafka_bootstrap: str,
        fx_topics: tuple[str, str]) -> None:
    def nonsense(request: ProvidersToRank) -> bytes:
        return (b'{"uuid": "%s", "ranked_providers": [{"provider_name": "NOWHERE", '
                b'"region_name": "x", "classification": 0.7, "regression": 0.2}]}'
                % request.uuid.encode())

    async with TestRanker(fx_kafka_bootstrap, *fx_topics, respond=nonsense):
        result = await handler(fx_commands, fx_kafka_bootstrap, fx_topics,
                               deadline=20.0).select(requested_state(str(uuid.uuid4())))
    assert result.ranking_method == RANKING_FALLBACK
    assert (result.ranking_note or "").startswith("unusable answer from the external ranker")
    assert [c.site.provider_id for c in result.candidates] == BUILT_IN_ORDER


async def test_an_unreachable_ranker_falls_back(fx_commands: CommandService) -> None:
    ranking = RankingHandler(
        fx_commands,
        InMemoryCatalogue([provider("ALPHA", sla_dates=OPEN_SLA),
                           provider("BETA", sla_dates=OPEN_SLA)]),
        external=KafkaExternalRanker(bootstrap_servers="127.0.0.1:9", request_topic="req",
                                     answer_topic="ans", deadline_seconds=1.0),
        clock=lambda: NOW)
    result = await ranking.select(requested_state(str(uuid.uuid4())))
    assert result.ranking_method == RANKING_FALLBACK
    assert (result.ranking_note or "").startswith("external ranker unreachable")
    assert [c.site.provider_id for c in result.candidates] == BUILT_IN_ORDER


async def test_a_single_candidate_is_not_sent_to_the_ranker(
        fx_commands: CommandService, fx_kafka_bootstrap: str,
        fx_topics: tuple[str, str]) -> None:
    request_topic, answer_topic = fx_topics
    ranking = RankingHandler(
        fx_commands, InMemoryCatalogue([provider("ALPHA", sla_dates=OPEN_SLA)]),
        external=KafkaExternalRanker(bootstrap_servers=fx_kafka_bootstrap,
                                     request_topic=request_topic, answer_topic=answer_topic,
                                     deadline_seconds=1.0),
        clock=lambda: NOW)
    result = await ranking.select(requested_state(str(uuid.uuid4())))
    assert result.ranking_method == RANKING_BUILTIN
