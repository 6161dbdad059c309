"""strip_contextualization: templates IM deploys without contextualization (no SSH).

IM enables contextualization (and SSH to the VMs) when any node or relationship,
through its template or type chain, has interface operations or artifacts
(reference/im-and-rucio-test-peers.md part 1, pitfall 3).
"""

from __future__ import annotations

import pytest
import yaml
from tosca_helpers import infn_vm_template, read_corpus

from tosca import Limits, TemplateError, strip_contextualization


def _operations(tree, path="") -> list[str]:
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("interfaces", "artifacts", "implementation") and value:
                found.append(f"{path}.{key}")
            found.extend(_operations(value, f"{path}.{key}"))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found.extend(_operations(value, f"{path}[{index}]"))
    return found


@pytest.mark.parametrize(
    "relative",
    [
        "indigo-dc/tosca-types/examples/node_with_image.yaml",
        "indigo-dc/tosca-types/examples/disvis.yaml",
        "indigo-dc/tosca-types/examples/cellar_webapp_mem.yaml",
        "indigo-paas/tosca-templates/single-vm/single_vm_with_volume.yaml",
        "indigo-paas/tosca-templates/docker/run_docker.yaml",
    ],
)
def test_corpus_templates_lose_every_operation_and_import(
    relative, resolver, check, limits
) -> None:
    original = read_corpus(relative)
    assert _operations(yaml.safe_load(original)) or "indigo" in original  # types carry them
    stripped = strip_contextualization(original, resolver=resolver)
    tpl = yaml.safe_load(stripped)
    assert "imports" not in tpl
    assert _operations(tpl) == []
    assert "tosca.nodes.indigo.Compute" in tpl["node_types"]
    # Still a valid, self-contained TOSCA template (no imports to resolve).
    inline_ok = Limits(timeout_seconds=limits.timeout_seconds, allow_inline_types=True)
    facts = check(stripped, {}, limits=inline_ok)
    assert facts.imports == ()
    assert facts.resources.vms >= 1


def test_infn_style_template(resolver, check, limits) -> None:
    stripped = strip_contextualization(infn_vm_template(), resolver=resolver)
    tpl = yaml.safe_load(stripped)
    assert _operations(tpl) == []
    assert "tosca.datatypes.indigo.User" in tpl["data_types"]
    inline_ok = Limits(timeout_seconds=limits.timeout_seconds, allow_inline_types=True)
    assert check(stripped, {}, limits=inline_ok).template_name == "Test VM"


def test_input_values_become_defaults(resolver) -> None:
    stripped = strip_contextualization(
        infn_vm_template(), inputs={"num_cpus": 4, "mem_size": "8 GB"}, resolver=resolver
    )
    inputs = yaml.safe_load(stripped)["topology_template"]["inputs"]
    assert (inputs["num_cpus"]["default"], inputs["mem_size"]["default"]) == (4, "8 GB")
    with pytest.raises(TemplateError, match='input "nope" is not declared'):
        strip_contextualization(infn_vm_template(), inputs={"nope": 1}, resolver=resolver)


def test_nodes_im_always_configures_are_refused(resolver) -> None:
    text = read_corpus("indigo-dc/tosca-types/examples/indigo_marathon_app.yaml")
    with pytest.raises(TemplateError, match=r"tosca\.nodes\.Container\.Application"):
        strip_contextualization(text, resolver=resolver)


def test_unknown_imports_and_hostile_yaml_are_refused(resolver) -> None:
    with pytest.raises(TemplateError, match="not one of the known"):
        strip_contextualization(
            infn_vm_template(import_url="https://evil.example.org/t.yaml"), resolver=resolver
        )
    with pytest.raises(TemplateError, match="anchor"):
        strip_contextualization(infn_vm_template() + "x: &a [1]\ny: *a\n", resolver=resolver)
