"""Helpers for the TOSCA tests: where the shared corpus is, template builders.

The corpus (real INDIGO/INFN templates and type files) is test data kept outside
the repository: `$ORCH_TOSCA_CORPUS`, or `../shared/tosca` next to the repo.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


CORPUS = Path(os.environ.get("ORCH_TOSCA_CORPUS") or (REPO / ".." / "shared" / "tosca")).resolve()

INFN_BASIC = (
    "https://baltig.infn.it/infn-cloud/tosca-types/raw/v3.4.0/tosca_types/base/basic_types.yaml"
)
INDIGO_CUSTOM = "https://raw.githubusercontent.com/indigo-dc/tosca-types/master/custom_types.yaml"


def corpus_path(relative: str) -> Path:
    return CORPUS / relative


def read_corpus(relative: str) -> str:
    return corpus_path(relative).read_text(encoding="utf-8")


SAMPLE_VALUES = {
    "string": "sample",
    "integer": 1,
    "float": 1.0,
    "number": 1,
    "boolean": False,
    "version": "1.0",
    "scalar-unit.size": "1 GB",
    "scalar-unit.time": "1 s",
    "scalar-unit.frequency": "1 GHz",
    "list": [],
    "map": {},
    "timestamp": "2020-01-01T00:00:00Z",
}


def required_inputs(template_text: str) -> dict:
    """Plausible values for the inputs a client must send (required, no default):
    the first valid value when there is one, else a sample of the declared type."""
    tpl = yaml.safe_load(template_text) or {}
    declared = (tpl.get("topology_template") or {}).get("inputs") or {}
    values = {}
    for name, schema in declared.items():
        if not isinstance(schema, dict) or schema.get("default") is not None:
            continue
        if schema.get("required", True) is False:
            continue
        constraints = schema.get("constraints") or []
        if isinstance(constraints, dict):
            constraints = [constraints]
        valid = [
            c["valid_values"] for c in constraints if isinstance(c, dict) and "valid_values" in c
        ]
        values[name] = (
            valid[0][0] if valid and valid[0] else SAMPLE_VALUES.get(schema.get("type"), {})
        )
    return values


def infn_vm_template(
    *,
    extra_inputs: str = "",
    extra_outputs: str = "",
    metadata: str = "  display_name: Test VM\n",
    node_type: str = "tosca.nodes.indigo.Compute",
    import_url: str = INFN_BASIC,
) -> str:
    """An INFN Cloud-style single VM: the patterns of the 32 INFN templates, written for tests."""
    return f"""\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - indigo_custom_types: {import_url}
description: Test virtual machine
metadata:
{metadata}
topology_template:
  inputs:
    num_cpus:
      type: integer
      default: 1
      constraints:
        - valid_values: [ 1, 2, 4, 8 ]
    mem_size:
      type: scalar-unit.size
      default: 2 GB
      constraints:
        - valid_values: [ 2 GB, 4 GB, 8 GB, 16 GB ]
    os_distribution:
      type: string
      default: ubuntu
      constraints:
        - valid_values: [ ubuntu, centos ]
    os_version:
      type: version
      default: 20.04
      constraints:
        - valid_values: [ 18.04, 20.04, 22.04, 7, 9 ]
    users:
      type: list
      required: false
      default: []
      entry_schema:
        type: tosca.datatypes.indigo.User
{extra_inputs}
  node_templates:
    pub_network:
      type: tosca.nodes.network.Network
      properties:
        network_type: public
    server_pub_port:
      type: tosca.nodes.network.Port
      properties:
        order: 1
      requirements:
        - binding: simple_node
        - link: pub_network
    priv_network:
      type: tosca.nodes.indigo.network.Network
      properties:
        network_type: private
    server_priv_port:
      type: tosca.nodes.network.Port
      properties:
        order: 0
      requirements:
        - binding: simple_node
        - link: priv_network
    simple_node:
      type: {node_type}
      properties:
        os_users: {{ get_input: users }}
      capabilities:
        endpoint:
          properties:
            ports:
              ssh: {{ protocol: tcp, source: 22 }}
        scalable:
          properties:
            count: 1
        host:
          properties:
            num_cpus: {{ get_input: num_cpus }}
            mem_size: {{ get_input: mem_size }}
        os:
          properties:
            distribution: {{ get_input: os_distribution }}
            version: {{ get_input: os_version }}
  outputs:
    node_ip:
      value: {{ get_attribute: [ simple_node, public_address, 0 ] }}
    os_users:
      value: {{ get_property: [ simple_node, os_users, 0 ] }}
    proxy_host:
      value: {{ get_property: [ priv_network, proxy_host ] }}
{extra_outputs}
"""
