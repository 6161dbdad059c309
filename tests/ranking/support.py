"""What the ranking tests share: a running system with the scheduler, catalogue seeding
through the real command path, a test ranker on Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import domain.providers as providers
from domain.deployments import CreateDeployment, DeploymentEvent, DeploymentState
from domain.deployments.values import (
    DataRequirement,
    PreferredSite,
    RequestedResources,
    TemplateIdentity,
    template_sha256,
)
from domain.identity import Actor
from domain.providers.airanker import (
    ProvidersToRank,
    RankedProvider,
    RankedProviders,
    encode_ranked_providers,
    parse_providers_to_rank,
)
from domain.providers.naming import stream_id, usage_stream_id
from domain.providers.selection import SuccessStats
from domain.providers.state import ProviderState
from domain.providers.usage import QuotaUsageState, RecordQuotaUsage, decide_usage, fold_usage
from eventstore.command_service import CommandService, Decider
from eventstore.records import Metadata
from handlers.ranking import DEPLOYMENTS
from tests.domain.providers.support import IAM, catalogue_provider

T = TypeVar("T")

OWNER = Actor(issuer=IAM, subject="owner-sub")
TEMPLATE = "tosca_definitions_version: tosca_simple_yaml_1_0\ntopology_template: {}\n"
OPEN_SLA = (date(2025, 1, 1), None)
"""SLA dates valid whatever day the tests run."""

PROVIDERS: Decider[Any, Any, Any] = Decider(
    initial_state=providers.initial_state, evolve=providers.evolve, decide=providers.decide)
USAGE: Decider[Any, Any, Any] = Decider(
    initial_state=QuotaUsageState, evolve=lambda s, e: fold_usage((e,), s), decide=decide_usage)
WRITER = Metadata(actor_subject="ranking-tests")


async def wait_for(check: Callable[[], Awaitable[T | None]], *, within: float = 240.0,
                   what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (deterministic wait, no bare sleep)."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def observe(commands: CommandService, name: str, **catalogue: Any) -> str:
    """Observe a provider through the real command path; its canonical id."""
    catalogue.setdefault("sla_dates", OPEN_SLA)
    command = catalogue_provider(name, **catalogue)
    await commands.execute(stream_id(command.provider_id), PROVIDERS, command, WRITER)
    return command.provider_id


async def record_usage(commands: CommandService, command: RecordQuotaUsage) -> None:
    await commands.execute(usage_stream_id(command.provider_id), USAGE, command, WRITER)


async def create_deployment(commands: CommandService, deployment_id: str, *,
                            group: str = "g1", owner: Actor = OWNER,
                            resources: RequestedResources | None = None,
                            preferred_site: PreferredSite | None = None,
                            data: Sequence[DataRequirement] = (),
                            template_type: str = "vm") -> None:
    from domain.deployments.values import OsRequest

    command = CreateDeployment(
        deployment_id=deployment_id, actor=owner, owner=owner, user_group=group,
        template=TEMPLATE,
        template_identity=TemplateIdentity(name="single-vm", type=template_type,
                                           hash=template_sha256(TEMPLATE)),
        requested_resources=resources or RequestedResources(
            vms=1, vcpus=2, ram_mb=4096, disk_gb=20.0,
            os=(OsRequest(distribution="ubuntu", version="22.04"),)),
        preferred_site=preferred_site, data_requirements=tuple(data))
    await commands.execute(f"deployment-{deployment_id}", DEPLOYMENTS, command,
                           Metadata(actor_issuer=owner.issuer, actor_subject=owner.subject))


async def deployment_events(commands: CommandService, deployment_id: str
                            ) -> list[DeploymentEvent]:
    return [commands.registry.decode_recorded(r)  # type: ignore[misc]
            for r in await commands.store.read_stream(f"deployment-{deployment_id}")]


async def deployment_state(commands: CommandService, deployment_id: str) -> DeploymentState:
    state, _ = await commands.load(f"deployment-{deployment_id}", DEPLOYMENTS)
    return state  # type: ignore[no-any-return]


class InMemoryCatalogue:
    """handlers.ranking.SchedulingCatalogue over given states (for the Kafka ranker tests,
    where the catalogue's projections are not what is under test)."""

    def __init__(self, states: Sequence[ProviderState]) -> None:
        self.states = list(states)

    async def providers(self) -> Sequence[ProviderState]:
        return self.states

    async def usage(self) -> Sequence[QuotaUsageState]:
        return []

    async def success_stats(self, template_type: str | None) -> Sequence[SuccessStats]:
        return []


class TestRanker:
    """A small stand-in for INFN's ai-ranker on the real Kafka: consumes the request topic
    and answers on the answer topic after ``delay`` seconds (``None``: never answers), in
    reverse built-in order, optionally preceded by ``noise`` (raw messages, e.g. malformed
    answers or answers for other deployments); ``respond`` replaces the answer."""

    __test__ = False  # not a pytest class

    def __init__(self, bootstrap: str, request_topic: str, answer_topic: str, *,
                 delay: float | None = 0.0, noise: Sequence[bytes] = (),
                 model_version: str | None = "test-model-7",
                 respond: Callable[[ProvidersToRank], bytes] | None = None) -> None:
        self.bootstrap = bootstrap
        self.request_topic = request_topic
        self.answer_topic = answer_topic
        self.delay = delay
        self.noise = list(noise)
        self.model_version = model_version
        self.respond = respond
        self.requests: list[Any] = []
        self.answered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TestRanker:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await producer.start()
        try:
            consumer.assign([TopicPartition(self.request_topic, 0)])
            await consumer.seek_to_beginning()
            async for record in consumer:
                request = parse_providers_to_rank(record.value)
                self.requests.append(request)
                if self.delay is None:
                    continue
                await asyncio.sleep(self.delay)
                for raw in self.noise:
                    await producer.send_and_wait(self.answer_topic, raw)
                if self.respond is not None:
                    await producer.send_and_wait(self.answer_topic, self.respond(request))
                    self.answered.set()
                    continue
                answer = RankedProviders(
                    uuid=request.uuid, model_version=self.model_version,
                    ranked_providers=tuple(
                        RankedProvider(provider_name=row.provider_name,
                                       region_name=row.region_name,
                                       classification=0.75 * (i + 1) / len(request.providers),
                                       regression=0.1)
                        for i, row in reversed(list(enumerate(request.providers)))))
                await producer.send_and_wait(self.answer_topic, encode_ranked_providers(answer),
                                             key=request.uuid.encode())
                self.answered.set()
        finally:
            await consumer.stop()
            await producer.stop()
