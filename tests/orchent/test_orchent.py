"""The real orchent CLI (Go, built by scripts/orchent.sh) against a running server, with a
token from the development issuer: every command orchent has, as its users run them.

orchent prints errors on standard output and exits 0, so the tests read what it prints.
The deployer's side of the lifecycle (scheduled, created, completed) is driven with the
handler commands, as in tests/api (the IM deployer is tested in its own issue).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.support import TEMPLATE, TEMPLATE_V2
from tests.orchent.conftest import Server, run_orchent


@pytest.fixture(name="template_file")
def fixture_template_file(tmp_path: Path) -> Path:
    path = tmp_path / "single_vm.yaml"
    path.write_text(TEMPLATE)
    return path


class Orchent:
    def __init__(self, binary: str, server: Server, token: str | None) -> None:
        self.binary = binary
        self.server = server
        self.token = token

    async def __call__(self, *args: str) -> str:
        return await run_orchent(self.binary, self.server.url, self.token, *args)

    async def create(self, template: Path, parameters: str = "{}") -> dict[str, Any]:
        output = await self("depcreate", "--ojson", "-g", "g1", str(template), parameters)
        created: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
        return created

    async def show(self, deployment_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(await self("depshow", "--ojson", deployment_id))
        return shown


def user(orchent: str, server: Server, subject: str, *groups: str) -> Orchent:
    return Orchent(orchent, server, server.issuer.mint(subject, groups=list(groups or ["g1"])))


async def test_depcreate_then_depshow_and_depls_see_it_at_once(
        orchent: str, server: Server, template_file: Path) -> None:
    alice = user(orchent, server, "alice-create")
    created = await alice.create(template_file, '{"num_cpus": 2}')
    assert created["status"] == "CREATE_IN_PROGRESS"
    assert created["createdBy"]["subject"] == "alice-create"
    assert created["createdBy"]["issuer"] == server.issuer.issuer
    assert created["userGroup"] == "g1"
    shown = await alice.show(created["uuid"])  # read-your-writes: no 404 right after
    assert shown["uuid"] == created["uuid"] and shown["status"] == "CREATE_IN_PROGRESS"
    listed = await alice("depls", "-c", "me")
    assert f"Deployment [{created['uuid']}]:" in listed
    assert "#Elements: 1," in listed
    assert "error" not in listed.lower()
    assert (await alice("deptemplate", created["uuid"])).strip() == TEMPLATE.strip()


async def test_depls_follows_the_next_links_over_several_pages(
        orchent: str, server: Server, template_file: Path) -> None:
    bob = user(orchent, server, "bob-pages")
    ids = {(await bob.create(template_file))["uuid"] for _ in range(12)}  # page size 10
    listed = await bob("depls")
    assert set(re.findall(r"Deployment \[([0-9a-f-]+)\]:", listed)) == ids
    assert "page: 0/2 [ #Elements: 12, size: 10 ]" in listed
    assert "page: 1/2 [ #Elements: 12, size: 10 ]" in listed


async def test_the_whole_lifecycle_with_orchent(orchent: str, server: Server,
                                                template_file: Path, tmp_path: Path) -> None:
    carol = user(orchent, server, "carol-life")
    deployment_id = (await carol.create(template_file))["uuid"]
    await server.harness.complete_create(deployment_id, outputs={"node_ip": "192.0.2.10"})
    await server.harness.record_log(deployment_id, "contextualisation finished\n")
    shown = await carol.show(deployment_id)
    assert shown["status"] == "CREATE_COMPLETE"
    assert shown["outputs"] == {"node_ip": "192.0.2.10"}
    assert shown["cloudProviderName"] == "BACKBONE"

    resources = await carol("resls", deployment_id)
    assert "Resource [vm-1]:" in resources and "state: STARTED" in resources
    resource = await carol("resshow", deployment_id, "vm-1")
    assert "toscaNodeName: server" in resource
    assert "toscaNodeType: tosca.nodes.indigo.Compute" in resource
    assert "contextualisation finished" in await carol("deplog", deployment_id)

    scaled = tmp_path / "scaled.yaml"
    scaled.write_text(TEMPLATE_V2)
    updated = await carol("depupdate", deployment_id, str(scaled), '{"num_cpus": 4}')
    assert f"update of deployment {deployment_id} successfully triggered" in updated
    assert (await carol.show(deployment_id))["status"] == "UPDATE_IN_PROGRESS"
    assert (await carol("deptemplate", deployment_id)).strip() == TEMPLATE_V2.strip()
    await server.harness.complete_update(deployment_id)

    deleted = await carol("depdel", deployment_id)
    assert f"deletion of deployment {deployment_id} successfully triggered" in deleted
    assert (await carol.show(deployment_id))["status"] == "DELETE_IN_PROGRESS"
    reset = await carol("depreset", deployment_id)  # a stuck deletion -> DELETE_FAILED
    assert f"reset of deployment {deployment_id} successfully triggered" in reset
    assert (await carol.show(deployment_id))["status"] == "DELETE_FAILED"
    forced = await carol("depdel", "--force", deployment_id)
    assert "successfully triggered" in forced
    assert (await carol.show(deployment_id))["status"] == "DELETE_IN_PROGRESS"


async def test_errors_reach_orchent_in_the_legacy_shape(
        orchent: str, server: Server, template_file: Path) -> None:
    dave = user(orchent, server, "dave-errors")
    erin = user(orchent, server, "erin-errors", "g9")
    deployment_id = (await dave.create(template_file))["uuid"]
    # Another user's deployment does not exist for her (404, ids do not leak).
    hidden = await erin("depshow", deployment_id)
    assert f"Error 'Not Found' [404]: The deployment {deployment_id} doesn't exist" in hidden
    # Update from CREATE_IN_PROGRESS is refused by the legacy guard.
    refused = await dave("depupdate", deployment_id, str(template_file), "{}")
    assert "error updating deployment" in refused and "[409]" in refused
    bad = template_file.with_name("bad.yaml")
    bad.write_text("tosca_definitions_version: tosca_simple_yaml_1_0\n"
                   "topology_template:\n  node_templates:\n    x:\n      type: No.Such.Type\n")
    invalid = await dave("depcreate", "-g", "g1", str(bad), "{}")
    assert "error creating deployment" in invalid and "[400]" in invalid
    anonymous = Orchent(orchent, server, None)
    refused_anonymous = await anonymous("depls")
    assert "no access token" in refused_anonymous and "[401]" in refused_anonymous


async def test_test_and_showconf(orchent: str, server: Server) -> None:
    frank = user(orchent, server, "frank-conf")
    assert "looks like the orchent url is valid" in await frank("test")
    configuration = await frank("showconf")
    assert "retrieving orchestrator configuration:" in configuration
    assert "orchestrator_url:" in configuration
