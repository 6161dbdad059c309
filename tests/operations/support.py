"""Helpers shared by the operations tests."""

from __future__ import annotations

from domain.deployments import CreateDeployment
from domain.deployments.values import RequestedResources, TemplateIdentity, template_sha256
from eventstore.records import Metadata
from orchestrator import bootstrap
from orchestrator.demo import DEMO_OWNER, DEMO_TEMPLATE, DEPLOYMENTS


def deployment_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


async def create_deployment(system: bootstrap.System, index: int) -> None:
    command = CreateDeployment(
        deployment_id=deployment_id(index), actor=DEMO_OWNER, user_group="g",
        template=DEMO_TEMPLATE,
        template_identity=TemplateIdentity(name="Demo VM", type="vm",
                                           hash=template_sha256(DEMO_TEMPLATE)),
        requested_resources=RequestedResources(vms=1))
    await system.commands.execute(f"deployment-{deployment_id(index)}", DEPLOYMENTS, command,
                                  Metadata(actor_subject=DEMO_OWNER.subject))
