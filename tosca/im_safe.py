"""Templates the Infrastructure Manager deploys without contextualization (no SSH).

IM turns contextualization on as soon as any node (through its template, its
type or any ancestor type) or relationship has `interfaces` operations or
`artifacts`, and then opens SSH connections to the VMs it created. Every stock
INDIGO/INFN node type has them (even `tosca.nodes.indigo.Compute` carries a
`Standard.configure` implemented by an https URL, which IM also tries to
download). See reference/im-and-rucio-test-peers.md, part 1, 1.4 and pitfall 3.

`strip_contextualization` returns a self-contained template that IM can
deploy with contextualization disabled ("Contextualization disabled by the
RADL/TOSCA template"):

- the import closure is resolved offline with the same resolver as
  validation, and the type definitions are inlined, so `imports` is gone and
  IM fetches nothing (no URL imports, no type file on IM's disk);
- `interfaces` and `artifacts` are removed from every node and relationship
  type and template (including inline relationships in requirements);
- nodes IM configures whatever their interfaces (containers, functions,
  Ansible hosts) are refused, as is anything left that could carry an
  operation;
- optionally, input values are written as the inputs' defaults (IM takes no
  separate parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from .errors import TemplateError
from .imports import ImportResolver, shared_resolver
from .limits import DEFAULT_LIMITS, Limits
from .yamlsafe import load_checked

TYPE_SECTIONS = (
    "data_types",
    "artifact_types",
    "capability_types",
    "interface_types",
    "relationship_types",
    "node_types",
    "group_types",
    "policy_types",
)
_OPERATION_KEYS = ("interfaces", "artifacts")
# IM generates a configuration step for these whatever their interfaces say.
CONTEXTUALIZING_TYPES = (
    "tosca.nodes.Container.Application",
    "tosca.nodes.aisprint.FaaS.Function",
    "tosca.nodes.im.AnsibleHost",
)


def _strip(definition: object) -> None:
    if isinstance(definition, dict):
        for key in _OPERATION_KEYS:
            definition.pop(key, None)


def _strip_requirements(requirements: object) -> None:
    if not isinstance(requirements, list):
        return
    for requirement in requirements:
        if not isinstance(requirement, dict):
            continue
        for target in requirement.values():
            if isinstance(target, dict):
                _strip(target.get("relationship"))


def _normative_types() -> Mapping[str, Any]:
    from toscaparser.elements.entity_type import EntityType  # data only; no parsing here

    definitions: Mapping[str, Any] = EntityType.TOSCA_DEF
    return definitions


def _type_chain(type_name: str, node_types: Mapping[str, Any]) -> list[str]:
    normative = _normative_types()
    chain = [type_name]
    current = type_name
    while len(chain) < 64:
        definition = node_types.get(current) or normative.get(current)
        if not isinstance(definition, Mapping):
            break
        parent = definition.get("derived_from")
        if not isinstance(parent, str) or parent in chain:
            break
        chain.append(parent)
        current = parent
    return chain


def _leftovers(tree: object, where: str, found: list[str]) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in _OPERATION_KEYS and value:
                found.append(f"{where}.{key}")
            _leftovers(value, f"{where}.{key}", found)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            _leftovers(value, f"{where}[{index}]", found)


def strip_contextualization(
    template_text: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    resolver: ImportResolver | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> str:
    """A self-contained copy of the template that IM deploys without contextualizing (no SSH)."""
    tpl = load_checked(
        template_text,
        max_depth=limits.max_depth,
        max_nodes=limits.max_yaml_nodes,
        strict_keys=limits.reject_duplicate_keys,
    )
    if not isinstance(tpl, dict):
        raise TemplateError("the template must be a YAML mapping")
    topology = tpl.get("topology_template")
    if not isinstance(topology, dict):
        raise TemplateError('the template has no "topology_template" mapping')
    resolver = resolver or shared_resolver()

    merged: dict[str, dict[str, Any]] = {section: {} for section in TYPE_SECTIONS}
    imports = tpl.pop("imports", None)
    if imports:
        closure = resolver.resolve(imports)
        for path in sorted(closure.files):
            library = resolver.load_type_file(path)
            if not isinstance(library, dict):
                continue
            for section in TYPE_SECTIONS:
                definitions = library.get(section)
                if isinstance(definitions, dict):
                    merged[section].update(definitions)
    for section in TYPE_SECTIONS:  # the template's own definitions win
        definitions = tpl.pop(section, None)
        if isinstance(definitions, dict):
            merged[section].update(definitions)

    for section in ("node_types", "relationship_types", "group_types", "policy_types"):
        for definition in merged[section].values():
            _strip(definition)
            if isinstance(definition, dict):
                _strip_requirements(definition.get("requirements"))

    node_templates = topology.get("node_templates") or {}
    if not isinstance(node_templates, dict):
        raise TemplateError('"node_templates" must be a mapping')
    for name, node in node_templates.items():
        if not isinstance(node, dict):
            continue
        _strip(node)
        _strip_requirements(node.get("requirements"))
        node_type = node.get("type")
        if isinstance(node_type, str):
            chain = _type_chain(node_type, merged["node_types"])
            hit = next((t for t in chain if t in CONTEXTUALIZING_TYPES), None)
            if hit:
                raise TemplateError(
                    f'node "{name}" is a {hit}, which IM always configures over SSH; '
                    "it cannot be deployed without contextualization"
                )
    for relationship in (topology.get("relationship_templates") or {}).values():
        _strip(relationship)

    if inputs:
        declared = topology.get("inputs") or {}
        for input_name, value in inputs.items():
            if input_name not in declared or not isinstance(declared[input_name], dict):
                raise TemplateError(f'input "{input_name}" is not declared by the template')
            declared[input_name]["default"] = value

    leftovers: list[str] = []
    for section in ("node_types", "relationship_types"):
        _leftovers(merged[section], section, leftovers)
    _leftovers(node_templates, "node_templates", leftovers)
    _leftovers(topology.get("relationship_templates") or {}, "relationship_templates", leftovers)
    if leftovers:  # pragma: no cover - a guard on the code above
        raise TemplateError(f"operations remain after stripping: {', '.join(leftovers[:5])}")

    out: dict[str, Any] = {}
    for key in ("tosca_definitions_version", "description", "metadata"):
        if key in tpl:
            out[key] = tpl.pop(key)
    for section in TYPE_SECTIONS:
        if merged[section]:
            out[section] = merged[section]
    topology = tpl.pop("topology_template")
    out.update(tpl)
    out["topology_template"] = topology
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=120)
