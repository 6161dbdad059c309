"""One test per tosca-parser 2.15.0 work-around (reference section 4).

Each shows the defect with the plain parser (run in a separate interpreter, so
no patch is loaded) and the behaviour with the work-arounds, through the validator.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from tosca_helpers import infn_vm_template

from tosca import TemplateError

PLAIN_PARSER = r"""
import copy, json, sys, yaml
from toscaparser.tosca_template import ToscaTemplate
from toscaparser.common.exception import ValidationError, ExceptionCollector
job = json.load(sys.stdin)
tpl = yaml.safe_load(job["text"])
try:
    ToscaTemplate(yaml_dict_tpl=tpl, local_defs=job["local_defs"])
    print(json.dumps(["ok", ""]))
except ValidationError:
    print(json.dumps(["invalid", [str(e) for e in ExceptionCollector.getExceptions()]]))
except Exception as exc:
    print(json.dumps(["crash", f"{type(exc).__name__}: {exc}"]))
"""


def plain_parser(text: str, resolver) -> tuple[str, object]:
    local_defs = dict(resolver.resolve(yaml.safe_load(text)["imports"]).local_defs)
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_PARSER],
        input=json.dumps({"text": text, "local_defs": local_defs}),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    kind, detail = json.loads(done.stdout.strip().splitlines()[-1])
    return kind, detail


def _without_output(text: str, name: str) -> str:
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line == f"    {name}:\n")
    return "".join(lines[:start] + lines[start + 2 :])


@pytest.fixture(scope="module")
def only_a() -> str:
    """`get_property: [simple_node, os_users, 0]` where os_users is a get_input."""
    return _without_output(infn_vm_template(), "proxy_host")


@pytest.fixture(scope="module")
def only_b() -> str:
    """`get_property: [priv_network, proxy_host]`: declared, optional, not set."""
    return _without_output(infn_vm_template(), "os_users")


def test_a_indexing_a_get_input_property_no_longer_crashes(only_a, resolver, check) -> None:
    kind, detail = plain_parser(only_a, resolver)
    assert kind == "crash" and "'list' object has no attribute 'name'" in detail
    assert check(only_a, {}).outputs == ("node_ip", "os_users")


def test_b_declared_but_unset_property_is_not_an_error(only_b, resolver, check) -> None:
    kind, detail = plain_parser(only_b, resolver)
    assert kind == "invalid"
    assert any('Property "proxy_host" was not found' in message for message in detail)
    assert check(only_b, {}).outputs == ("node_ip", "proxy_host")


def test_b_an_undeclared_property_is_still_an_error(only_b, check) -> None:
    text = only_b.replace("[ priv_network, proxy_host ]", "[ priv_network, no_such_property ]")
    with pytest.raises(TemplateError, match='Property "no_such_property" was not found'):
        check(text, {})


def test_c_the_real_error_is_reported_instead_of_a_crash(resolver, check) -> None:
    text = infn_vm_template(node_type="tosca.nodes.indigo.DoesNotExist")
    kind, detail = plain_parser(text, resolver)
    assert kind == "crash" and "'list' object has no attribute 'name'" in detail
    with pytest.raises(TemplateError) as caught:
        check(text, {})
    first = caught.value.problems[0]
    assert (first.type, first.message) == (
        "InvalidTypeError",
        'Type "tosca.nodes.indigo.DoesNotExist" is not a valid type.',
    )
