"""The monitoring log lines INFN's paas-mon parses (legacy API reference 8.4), exact format,
from real events in the real event store."""

from __future__ import annotations

import json
import logging
import re

from domain.deployments import (
    CompleteDeployment,
    CreateDeployment,
    DeleteDeployment,
    DeploymentCommand,
    FailDeletion,
    FailDeployment,
    RankedSite,
    RecordScheduling,
    RequestedResources,
    Site,
    StartAttempt,
    TemplateIdentity,
    stream_id,
    template_sha256,
)
from domain.identity import Actor, system_actor
from eventstore.command_service import CommandService
from eventstore.records import Metadata
from eventstore.store import EventStore
from handlers.monitoring_log import MONITORING_LOGGER, MonitoringLog
from orchestrator.bootstrap import event_registry
from orchestrator.logs import JsonLinesFormatter
from tests.api.support import TEMPLATE

OWNER = Actor(issuer="https://iam.example/", subject="alice")
DEPLOYER = system_actor("test-deployer")
SITE = Site(provider_id="prov-1", provider_name="RECAS-BARI", region="RegionOne",
            project="proj")
FIRST = "0190f0f0-0000-7000-8000-00000000aaa1"
SECOND = "0190f0f0-0000-7000-8000-00000000aaa2"

# paas-mon's loganalyzer: the text, then one JSON object up to the end of the line.
PAAS_MON = re.compile(r"^(Submission of deployment request to the IM\.|Deployment completed "
                      r"successfully\.|Deployment in error\.) (\{.*\})$")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def run(commands: CommandService, *steps: DeploymentCommand) -> None:
    from api.legacy.common import DECIDER
    for command in steps:
        await commands.execute(stream_id(command.deployment_id), DECIDER, command,
                               Metadata(actor_subject=command.actor.subject))


async def replay_through(handler: MonitoringLog, store: EventStore, deployment_id: str) -> None:
    for recorded in await store.read_stream(stream_id(deployment_id)):
        if recorded.type in handler.HANDLES:
            await handler.handle(recorded, handler.registry.decode_recorded(recorded))


async def test_the_lines_of_a_create_that_completes_and_one_that_fails(
        fx_store: EventStore) -> None:
    registry = event_registry()
    commands = CommandService(fx_store, registry)
    identity = TemplateIdentity(name="Test VM", type="vm", hash=template_sha256(TEMPLATE))
    for deployment_id in (FIRST, SECOND):
        await run(commands, CreateDeployment(
            deployment_id=deployment_id, actor=OWNER, user_group="g1", template=TEMPLATE,
            template_identity=identity, requested_resources=RequestedResources(vms=1),
            parameters={"num_cpus": 2, "admin_password": "hunter2", "mem_size": "4 GB"}),
            RecordScheduling(deployment_id=deployment_id, actor=DEPLOYER, operation=1,
                             candidates=(RankedSite(site=SITE, score=1.0),),
                             ranking_method="test"),
            StartAttempt(deployment_id=deployment_id, actor=DEPLOYER, operation=1, attempt=1,
                         site=SITE))
    await run(commands, CompleteDeployment(deployment_id=FIRST, actor=DEPLOYER, operation=1))
    await run(commands, FailDeployment(deployment_id=SECOND, actor=DEPLOYER, operation=1,
                                       reason='IM said: "quota exceeded"'))
    await run(commands,
              DeleteDeployment(deployment_id=FIRST, actor=OWNER),
              FailDeletion(deployment_id=FIRST, actor=DEPLOYER, operation=2,
                           reason="the site did not answer"))

    logger = logging.getLogger(f"{MONITORING_LOGGER}.test")
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = MonitoringLog(fx_store, registry, logger)
    await replay_through(handler, fx_store, FIRST)
    await replay_through(handler, fx_store, SECOND)

    messages = [r.getMessage() for r in lines.records]
    assert messages == [
        f"Creating deployment with template\n{TEMPLATE}",
        f'{{"uuid":"{FIRST}","user_group":"g1","user_parameters":{{'
        f'"admin_password":"[redacted]","mem_size":"4 GB","num_cpus":2}}}}',
        f'Submission of deployment request to the IM. {{"uuid":"{FIRST}","deployment_type":'
        f'"vm","provider_name":"RECAS-BARI","provider_region":"RegionOne","user_group":"g1"}}',
        f'Deployment completed successfully. {{"uuid":"{FIRST}","status":"CREATE_COMPLETE"}}',
        f'Deployment in error. {{"uuid":"{FIRST}","status":"DELETE_FAILED",'
        f'"status_reason":"the site did not answer"}}',
        f"Creating deployment with template\n{TEMPLATE}",
        f'{{"uuid":"{SECOND}","user_group":"g1","user_parameters":{{'
        f'"admin_password":"[redacted]","mem_size":"4 GB","num_cpus":2}}}}',
        f'Submission of deployment request to the IM. {{"uuid":"{SECOND}","deployment_type":'
        f'"vm","provider_name":"RECAS-BARI","provider_region":"RegionOne","user_group":"g1"}}',
        f'Deployment in error. {{"uuid":"{SECOND}","status":"CREATE_FAILED",'
        f'"status_reason":"IM said: \\"quota exceeded\\""}}',
    ]
    # What paas-mon extracts: the JSON after the fixed text parses, with the legacy keys.
    parsed = [json.loads(m.group(2)) for m in map(PAAS_MON.match, messages) if m]
    assert [p.get("status") for p in parsed] == [
        None, "CREATE_COMPLETE", "DELETE_FAILED", None, "CREATE_FAILED"]
    assert parsed[4]["status_reason"] == 'IM said: "quota exceeded"'
    assert "hunter2" not in "".join(messages)

    # With JSON logging the line is the record's message, plus the fragment as an object.
    entry = json.loads(JsonLinesFormatter().format(lines.records[2]))
    assert entry["message"] == messages[2]
    assert entry["monitoring_event"] == "submitted"
    assert entry["monitoring"]["provider_name"] == "RECAS-BARI"
