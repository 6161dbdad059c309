"""Templates and waiting helpers for the tests against a real IM.

Every template sent to IM passes `assert_safe_for_im` first: no `interfaces`, no
`artifacts`, no `imports` (pitfall 3: with contextualization on, IM would open SSH
connections to the Dummy VM's private address 10.0.0.1; these tests only ever talk to
loopback). INDIGO templates come from the shared corpus, made self-contained and stripped
by `tosca.strip_contextualization` at test time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from handlers.im_client import FINAL_STATES, ImAuthorization, ImClient, InfrastructureState
from tosca import ImportResolver, default_resolver_config, strip_contextualization

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("ORCH_TOSCA_CORPUS") or (ROOT / ".." / "shared" / "tosca")).resolve()
SIMPLE_NODE = CORPUS / "indigo-dc" / "tosca-templates" / "simple-node.yml"

T = TypeVar("T")


def compute_template(*, count: int = 1, cpus: int = 1, max_instances: int = 5) -> str:
    """Standard-types Compute nodes the Dummy connector deploys with no network activity
    (the recipe's template; tosca-parser wants min and max with default_instances)."""
    template = {
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "description": "dummy compute nodes, no configuration (contextualization disabled)",
        "topology_template": {
            "inputs": {"cpus": {"type": "integer", "default": cpus}},
            "node_templates": {
                "server": {
                    "type": "tosca.nodes.Compute",
                    "capabilities": {
                        "host": {
                            "properties": {"num_cpus": {"get_input": "cpus"}, "mem_size": "1 GB"}
                        },
                        "os": {"properties": {"type": "linux", "distribution": "ubuntu"}},
                        "scalable": {
                            "properties": {
                                "min_instances": 1,
                                "max_instances": max_instances,
                                "default_instances": count,
                            }
                        },
                    },
                }
            },
            "outputs": {
                "server_ip": {"value": {"get_attribute": ["server", "private_address"]}},
                "server_id": {"value": {"get_attribute": ["server", "tosca_id"]}},
            },
        },
    }
    return assert_safe_for_im(yaml.safe_dump(template, sort_keys=False))


def indigo_simple_node(*, count: int = 1) -> str:
    """indigo-dc/tosca-templates simple-node.yml, self-contained and without operations.

    Two changes: the network goes from PUBLIC to PRIVATE (the Dummy connector never assigns
    a public IP, so IM would turn the state to `unconfigured` after WAIT_PUBLIC_IP_TIMEOUT,
    pitfall 4), and the `zabbix_server*` properties go: the corpus's custom_types.yaml
    (template_version 5.0.0) no longer declares them on tosca.nodes.indigo.Compute, and an
    IM that still validates rejects them (UnknownFieldError).
    """
    resolver = ImportResolver(default_resolver_config(types_dir=str(CORPUS)))
    template = yaml.safe_load(SIMPLE_NODE.read_text(encoding="utf-8"))
    node = template["topology_template"]["node_templates"]["simple_node"]
    for name in ("zabbix_server", "zabbix_server_metadata"):
        node["properties"].pop(name)
    for name in ("zabbix_server", "zabbix_metadata"):
        template["topology_template"]["inputs"].pop(name)
    node["capabilities"]["endpoint"]["properties"]["network_name"] = "PRIVATE"
    text = yaml.safe_dump(template, sort_keys=False)
    stripped = strip_contextualization(text, inputs={"num_instances": count}, resolver=resolver)
    return assert_safe_for_im(stripped)


def _operations(tree: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("interfaces", "artifacts", "implementation", "imports") and value:
                found.append(f"{where}.{key}")
            found.extend(_operations(value, f"{where}.{key}"))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found.extend(_operations(value, f"{where}[{index}]"))
    return found


def assert_safe_for_im(template: str) -> str:
    """The template, if IM would deploy it without contextualizing or fetching anything."""
    found = _operations(yaml.safe_load(template))
    assert not found, f"refusing to send IM a template with operations or imports: {found[:5]}"
    return template


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    what: str,
    deadline_s: float = 60.0,
    interval: float = 0.05,
) -> T:
    """Poll `probe` until `done(value)`, with a deadline (no timing assertion: the
    deadline only bounds a hang)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {deadline_s} s, last value {value!r}")
        await asyncio.sleep(interval)


async def wait_final(
    im: ImClient, auth: ImAuthorization, inf_id: str, *, deadline_s: float = 60.0
) -> InfrastructureState:
    """The infrastructure's state once IM has finished with it (configured, unconfigured
    or failed)."""
    return await wait_for(
        lambda: im.state(auth, inf_id),
        lambda s: s.state in FINAL_STATES,
        what=f"infrastructure {inf_id} in a final state",
        deadline_s=deadline_s,
    )
