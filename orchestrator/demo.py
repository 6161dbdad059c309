"""Demo data for `orchestrator run --demo-data`: one provider the demo groups may use,
deployed through the local IM's Dummy connector, and a few deployments of a small template,
all appended through the same command paths the API uses. Loaded once (idempotency keys
make reruns a no-op; an identical provider observation appends nothing).

`python -m orchestrator.demo sites-file PATH` writes the IM deployer's sites file for that
provider from the local IM's generated users (`scripts/run.sh` does it).
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import domain.providers as providers
from domain.deployments import AlreadyExists, CreateDeployment
from domain.deployments.decider import decide, evolve, initial_state
from domain.deployments.values import RequestedResources, TemplateIdentity, template_sha256
from domain.identity import Actor, system_actor
from domain.providers import (
    Flavor,
    Image,
    ObservedProvider,
    ObserveProvider,
    Project,
    ProviderStatus,
    ProviderType,
    QuotaKind,
    QuotaRecord,
    QuotaValues,
    Region,
    ScanScope,
    ServiceType,
    Sla,
    TrustedIdentityProvider,
    UserGroup,
)
from domain.providers.naming import canonical_provider_id
from domain.providers.naming import stream_id as provider_stream_id
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
DEMO_GROUPS = ("demo-group", "other-group", "g1")
DEMO_PROVIDER = canonical_provider_id("demo-cloud", ProviderType.OPENSTACK)
DEMO_REGION = "demo-region"
DEMO_PROJECT = "demo-project"
DEPLOYMENTS: Decider[Any, Any, Any] = Decider(initial_state=initial_state, evolve=evolve,
                                              decide=decide)
PROVIDERS: Decider[Any, Any, Any] = Decider(initial_state=providers.initial_state,
                                            evolve=providers.evolve, decide=providers.decide)


def demo_provider(issuers: list[str]) -> ObserveProvider:
    """One OpenStack-shaped site whose SLA covers the demo groups of every trusted issuer
    (the deployer reaches it through IM's Dummy connector, see :func:`sites_document`)."""
    groups = [UserGroup(issuer=i, name=g) for i in issuers for g in DEMO_GROUPS]
    snapshot = ObservedProvider(
        name="demo-cloud", type=ProviderType.OPENSTACK, status=ProviderStatus.ACTIVE,
        description="Demo site (IM Dummy connector on loopback)", is_public=False,
        support_emails=(), regions=(Region(name=DEMO_REGION),),
        projects=(Project(project_id=DEMO_PROJECT, name=DEMO_PROJECT),),
        identity_providers=tuple(TrustedIdentityProvider(issuer=i, group_claim="groups")
                                 for i in issuers),
        user_groups=tuple(groups),
        slas=tuple(Sla(sla_id=f"demo-sla-{n}", issuer=g.issuer, user_group=g.name,
                       start_date=date(2025, 1, 1), end_date=None, projects=(DEMO_PROJECT,))
                   for n, g in enumerate(groups)),
        flavors=tuple(Flavor(region=DEMO_REGION, uuid=f"demo-{name}", name=name, vcpus=cpus,
                             ram_mib=ram, disk_gib=disk)
                      for name, cpus, ram, disk in (("small", 2, 4096, 20),
                                                    ("medium", 4, 8192, 40),
                                                    ("large", 8, 16384, 80))),
        images=(Image(region=DEMO_REGION, uuid="demo-ubuntu-22.04", name="ubuntu-22.04",
                      os_type="Linux", os_distro="ubuntu", os_version="22.04"),),
        quotas=(QuotaRecord(region=DEMO_REGION, project_id=DEMO_PROJECT,
                            service_type=ServiceType.COMPUTE, kind=QuotaKind.LIMIT,
                            values=QuotaValues(cores=200, ram_mib=409600, instances=100)),),
        complete=True)
    return ObserveProvider(
        provider_id=DEMO_PROVIDER, actor=system_actor("demo-data"), snapshot=snapshot,
        scopes_scanned_ok=(ScanScope(region=DEMO_REGION, project_id=DEMO_PROJECT),))


def sites_document(im_url: str, username: str, password: str) -> dict[str, Any]:
    """The IM deployer's sites file for the demo provider: IM's Dummy connector (it makes
    no VM and contacts nothing; templates are sent with contextualization stripped)."""
    return {"sites": [{
        "provider_id": DEMO_PROVIDER, "region": DEMO_REGION, "iaas_type": "OPENSTACK",
        "endpoint": "https://demo-cloud.invalid:5000/v3", "im_url": im_url,
        "im": {"username": username, "password": password}, "clouds": [{"kind": "dummy"}]}]}


async def load(system: System) -> None:
    issuers = sorted({DEMO_OWNER.issuer, *(i.issuer for i in system.settings.auth.issuers)})
    await system.commands.execute(
        provider_stream_id(DEMO_PROVIDER), PROVIDERS, demo_provider(issuers),
        Metadata(actor_subject="demo-data", reason="demo data"))
    for index, group in enumerate(["demo-group", "demo-group", "other-group"]):
        deployment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo-deployment-{index}"))
        command = CreateDeployment(
            deployment_id=deployment_id, actor=DEMO_OWNER, user_group=group,
            template=DEMO_TEMPLATE,
            template_identity=TemplateIdentity(name="Demo VM", type="vm",
                                               hash=template_sha256(DEMO_TEMPLATE)),
            requested_resources=RequestedResources(vms=1, vcpus=2, ram_mb=4096))
        try:
            await system.commands.execute(
                f"deployment-{deployment_id}", DEPLOYMENTS, command,
                Metadata(actor_issuer=DEMO_OWNER.issuer, actor_subject=DEMO_OWNER.subject,
                         reason="demo data"),
                idempotency_key=f"demo-{deployment_id}")
        except AlreadyExists:
            continue  # loaded by an earlier run


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "sites-file":
        print("usage: python -m orchestrator.demo sites-file PATH", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[1]
    users = json.loads((root / ".run" / "im" / "users.json").read_text())["users"]
    user = next(u for u in users if u["username"] == "orchestrator")
    port = 18899
    for line in (root / ".run" / "env").read_text().splitlines() if (
            root / ".run" / "env").exists() else []:
        if line.startswith("ORCH_IM_PORT="):
            port = int(line.split("=", 1)[1])
    target = Path(argv[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(mode=0o600)  # it holds the IM password
    target.write_text(json.dumps(sites_document(f"http://127.0.0.1:{port}", user["username"],
                                                user["password"]), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
