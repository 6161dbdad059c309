"""Demo data for `orchestrator run --demo-data`: a few deployments of a small
template, appended through the same command path the API uses. Loaded once
(an idempotency key per demo deployment makes reruns a no-op)."""

from __future__ import annotations

import uuid
from typing import Any

from domain.deployments import CreateDeployment
from domain.deployments.decider import decide, evolve, initial_state
from domain.deployments.values import RequestedResources, TemplateIdentity, template_sha256
from domain.identity import Actor
from eventstore.command_service import Decider
from eventstore.records import Metadata
from orchestrator.bootstrap import System

DEMO_TEMPLATE = """\
tosca_definitions_version: tosca_simple_yaml_1_0
description: Demo single VM
metadata:
  display_name: Demo VM
  template_type: vm
topology_template:
  node_templates:
    server:
      type: tosca.nodes.Compute
      capabilities:
        host:
          properties: {num_cpus: 2, mem_size: 4 GB}
"""

DEMO_OWNER = Actor(issuer="https://iam.demo.invalid/", subject="demo-user")
DEPLOYMENTS: Decider[Any, Any, Any] = Decider(initial_state=initial_state, evolve=evolve,
                                              decide=decide)


async def load(system: System) -> None:
    for index, group in enumerate(["demo-group", "demo-group", "other-group"]):
        deployment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo-deployment-{index}"))
        command = CreateDeployment(
            deployment_id=deployment_id, actor=DEMO_OWNER, user_group=group,
            template=DEMO_TEMPLATE,
            template_identity=TemplateIdentity(name="Demo VM", type="vm",
                                               hash=template_sha256(DEMO_TEMPLATE)),
            requested_resources=RequestedResources(vms=1, vcpus=2, ram_mb=4096),
            parameters={"index": index})
        await system.commands.execute(
            f"deployment-{deployment_id}", DEPLOYMENTS, command,
            Metadata(actor_issuer=DEMO_OWNER.issuer, actor_subject=DEMO_OWNER.subject,
                     reason="demo data"),
            idempotency_key=f"demo-{deployment_id}")
