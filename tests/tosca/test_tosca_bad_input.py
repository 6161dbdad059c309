"""The bad-input matrix of reference/tosca-parser-offline.md section 7.

Every case must end in a clear error (no stack trace, no server path) within the
limits, and the worker pool must still validate a good template afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from tosca_helpers import CORPUS, INDIGO_CUSTOM, REPO, infn_vm_template, read_corpus

from tosca import (
    ImportRejected,
    Limits,
    TemplateError,
    TemplateTooComplex,
    ValidationTimeout,
    ValidatorUnavailable,
    WorkerPool,
    validate,
)

GOOD = "indigo-paas/tosca-templates/single-vm/single_vm.yaml"

MINIMAL = """\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - indigo_custom_types: {url}
{extra_top}
topology_template:
{inputs}
  node_templates:
    simple_node:
      type: {node_type}
{node_extra}
      capabilities:
        host:
          properties:
            num_cpus: 1
            mem_size: 1 GB
"""


def minimal(
    *,
    extra_top: str = "",
    inputs: str = "",
    node_type: str = "tosca.nodes.indigo.Compute",
    node_extra: str = "",
    url: str = INDIGO_CUSTOM,
) -> str:
    return MINIMAL.format(
        extra_top=extra_top, inputs=inputs, node_type=node_type, node_extra=node_extra, url=url
    )


def pattern_input(pattern: str) -> str:
    return (
        "  inputs:\n    name:\n      type: string\n"
        f'      constraints: [ {{ pattern: "{pattern}" }} ]'
    )


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    lines = ['  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"  a{level}: &a{level} [{refs}]")
    return "metadata:\n" + "\n".join(lines)


def assert_clear(error: TemplateError) -> None:
    text = error.message + " ".join(p.message for p in error.problems)
    assert "Traceback" not in text
    assert 'File "' not in text
    assert str(REPO) not in text
    assert str(CORPUS) not in text
    assert "site-packages" not in text


@pytest.fixture
def healthy(check):
    """After the case, the pool still validates a good template."""
    yield
    facts = check(read_corpus(GOOD), {})
    assert facts.template_name == "Virtual machine"


CASES = [
    # (id, template text, inputs, error class, text in the message)
    (
        "yaml-syntax",
        "tosca_definitions_version: [tosca_simple_yaml_1_0\n",
        {},
        TemplateError,
        "line 2",
    ),
    (
        "tab-indent",
        "topology_template:\n\tnode_templates: {}\n",
        {},
        TemplateError,
        "not valid YAML",
    ),
    ("list-document", "- a\n- b\n", {}, TemplateError, "must be a YAML mapping, not a list"),
    ("scalar-document", "hello\n", {}, TemplateError, "must be a YAML mapping, not a str"),
    ("empty-document", "", {}, TemplateError, "must be a YAML mapping, not empty"),
    (
        "version-only",
        "tosca_definitions_version: tosca_simple_yaml_1_0\n",
        {},
        TemplateError,
        'no "topology_template"',
    ),
    (
        "no-version",
        "topology_template:\n  node_templates:\n    a: {type: tosca.nodes.Compute}\n",
        {},
        TemplateError,
        'no "tosca_definitions_version"',
    ),
    (
        "unsupported-version",
        "tosca_definitions_version: tosca_simple_profile_for_nfv_1_0_0\n",
        {},
        TemplateError,
        "is not supported",
    ),
    (
        "unknown-top-level-key",
        minimal(extra_top="foo_section: 1"),
        {},
        TemplateError,
        '"foo_section"',
    ),
    (
        "unknown-node-type",
        minimal(node_type="tosca.nodes.indigo.DoesNotExist"),
        {},
        TemplateError,
        'Type "tosca.nodes.indigo.DoesNotExist" is not a valid type',
    ),
    (
        "unknown-property",
        minimal(node_extra="      properties:\n        flavour: large"),
        {},
        TemplateError,
        'unknown field "flavour"',
    ),
    (
        "get-input-undeclared",
        minimal(node_extra="      properties:\n        os_users: { get_input: no_such_input }"),
        {},
        TemplateError,
        'Unknown input "no_such_input"',
    ),
    (
        "python-tag",
        "tosca_definitions_version: !!python/object/apply:os.system [ls]\n",
        {},
        TemplateError,
        "tag",
    ),
    (
        "unmapped-import",
        minimal(url="https://evil.example.org/types.yaml"),
        {},
        ImportRejected,
        "not one of the known INDIGO/INFN type libraries",
    ),
    (
        "loopback-import",
        minimal(url="http://127.0.0.1:1/custom_types.yaml"),
        {},
        ImportRejected,
        "not one of the known",
    ),
    ("file-url-import", minimal(url="file:///etc/passwd"), {}, ImportRejected, "no local files"),
    ("absolute-path-import", minimal(url="/etc/hostname"), {}, ImportRejected, "no local files"),
    (
        "inline-types-with-redos-pattern",
        minimal(
            extra_top=(
                "node_types:\n  my.Node:\n    derived_from: tosca.nodes.Compute\n"
                "    properties:\n      name:\n        type: string\n"
                '        constraints: [ { pattern: "(a+)+$" } ]'
            ),
            node_type="my.Node",
            node_extra="      properties:\n        name: " + "a" * 24 + "!",
        ),
        {},
        TemplateError,
        "defines node_types",
    ),
    (
        "repositories",
        minimal(extra_top="repositories:\n  r: {url: 'https://x.org'}"),
        {},
        TemplateError,
        "repositories",
    ),
    (
        "billion-laughs-metadata",
        minimal(extra_top=billion_laughs()),
        {},
        TemplateTooComplex,
        "anchor",
    ),
    (
        "billion-laughs-string-default",
        minimal(
            extra_top=billion_laughs(),
            inputs="  inputs:\n    boom:\n      type: string\n      default: *a8",
        ),
        {},
        TemplateTooComplex,
        "anchor",
    ),
    (
        "merge-key",
        minimal(extra_top="metadata:\n  <<: {a: 1}"),
        {},
        TemplateTooComplex,
        "merge key",
    ),
    (
        "deep-flow-nesting",
        minimal(extra_top="metadata:\n  x: " + "[" * 100_000 + "]" * 100_000),
        {},
        TemplateTooComplex,
        "nests more than 32 levels",
    ),
    (
        "deep-block-nesting",
        minimal(extra_top="metadata:\n  x:\n" + "    " + "- " * 100_000 + "x"),
        {},
        TemplateTooComplex,
        "nests more than 32 levels",
    ),
    (
        "huge-body",
        minimal(extra_top="description: " + "x" * (300 * 1024)),
        {},
        TemplateTooComplex,
        "the limit is 262144 bytes",
    ),
    (
        "5mb-description",
        minimal(extra_top="description: " + "x" * (5 * 1024 * 1024)),
        {},
        TemplateTooComplex,
        "the limit is 262144 bytes",
    ),
    (
        "nested-quantifier-pattern",
        minimal(inputs=pattern_input("(a+)+$")),
        {"name": "a" * 24 + "!"},
        TemplateError,
        "nested quantifier",
    ),
    ("nul-character", "tosca_definitions_version: x\x00\n", {}, TemplateError, "NUL"),
]


@pytest.mark.parametrize(
    ("text", "inputs", "error_class", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_rejected_clearly(check, healthy, text, inputs, error_class, fragment) -> None:
    with pytest.raises(error_class) as caught:
        check(text, inputs)
    assert fragment in caught.value.message or any(
        fragment in p.message for p in caught.value.problems
    ), (caught.value.message, caught.value.problems)
    assert_clear(caught.value)


def test_duplicate_keys_are_accepted_by_default_and_refused_in_strict_mode(check, healthy, limits):
    text = read_corpus(GOOD).replace("description: ", "description: first\ndescription: ", 1)
    check(text, {})
    strict = Limits(timeout_seconds=limits.timeout_seconds, reject_duplicate_keys=True)
    with pytest.raises(TemplateError, match="duplicate key 'description'"):
        check(text, {}, limits=strict)


def test_catastrophic_pattern_is_stopped_by_the_wall_clock(pool, check, healthy) -> None:
    # `(a|aa)+$` passes the static guard, but backtracks exponentially on 60 a's.
    text = minimal(inputs=pattern_input("(a|aa)+$"))
    replaced = pool.replaced
    with pytest.raises(ValidationTimeout) as caught:
        check(text, {"name": "a" * 60 + "!"}, limits=Limits(timeout_seconds=3.0))
    assert "longer than 3 s" in caught.value.message
    assert pool.replaced == replaced + 1


def test_memory_cap_is_enforced_and_the_worker_replaced(pool, check, healthy, limits) -> None:
    replaced = pool.replaced
    tiny = Limits(timeout_seconds=limits.timeout_seconds, memory_bytes=16 * 1024 * 1024)
    with pytest.raises(TemplateTooComplex) as caught:
        check(infn_vm_template(), {}, limits=tiny)
    assert_clear(caught.value)
    assert pool.replaced == replaced + 1


def test_a_worker_killed_mid_validation_is_replaced(pool, check, healthy) -> None:
    text = minimal(inputs=pattern_input("(a|aa)+$"))
    outcome: list[BaseException] = []

    def slow() -> None:
        try:
            check(text, {"name": "a" * 80 + "!"}, limits=Limits(timeout_seconds=600.0))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 60
    while not pool.busy_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = pool.busy_pids()
    assert busy
    os.kill(busy[0], signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], TemplateTooComplex)
    assert "validator process stopped" in outcome[0].message


def _dead(pid: int) -> bool:
    """Gone, or a zombie: the kernel has ended it (a kill is delivered asynchronously)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_worker_that_died_while_idle_is_replaced(pool, check, healthy) -> None:
    pids = pool.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not all(_dead(pid) for pid in pids):
        assert time.monotonic() < deadline, "SIGKILL did not end the workers"
        time.sleep(0.01)
    check(read_corpus(GOOD), {})


def test_a_closed_pool_refuses_work(resolver) -> None:
    closed = WorkerPool(1)
    closed.close()
    with pytest.raises(ValidatorUnavailable):
        validate(read_corpus(GOOD), {}, resolver=resolver, pool=closed, cache=None)


def test_inputs_that_are_not_json_are_refused(check) -> None:
    with pytest.raises(TemplateError, match="plain JSON values"):
        check(read_corpus(GOOD), {"num_cpus": object()})
    with pytest.raises(TemplateTooComplex, match="inputs are"):
        check(read_corpus(GOOD), {"x": "y" * (70 * 1024)})


def test_deeply_nested_inputs_are_refused(check) -> None:
    nested: object = "x"
    for _ in range(10_000):
        nested = [nested]
    with pytest.raises(TemplateTooComplex, match="inputs nest more than"):
        check(read_corpus(GOOD), {"users": nested})
