"""Our input checks (what tosca-parser 2.15.0 does not check, reference section 6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tosca_helpers import infn_vm_template

from tosca import Limits, TemplateError
from tosca.inputs import InputError, check_constraint, coerce, pattern_problem, scalar_magnitude

EXTRA = """\
    admin_token:
      type: string
    nickname:
      type: string
      required: false
    workers:
      type: integer
      default: 2
      constraints:
        - in_range: [ 0, 10 ]
    ratio:
      type: float
      default: 0.5
      constraints:
        - greater_than: 0
        - less_or_equal: 1
    project:
      type: string
      default: abc
      constraints:
        - min_length: 3
        - max_length: 8
        - pattern: "[a-z]+$"
    pin:
      type: string
      default: "1234"
      constraints:
        - length: 4
    disk:
      type: scalar-unit.size
      default: 20 GB
      constraints: { in_range: [ 1 GB, 100 GB ] }
    gpu:
      type: boolean
      default: false
    tags:
      type: list
      default: [ a ]
      entry_schema:
        type: string
        constraints:
          - max_length: 5
"""


def _template(extra: str = EXTRA) -> str:
    return infn_vm_template(extra_inputs=extra)


def _problems(check, inputs: dict, text: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(TemplateError) as caught:
        check(text or _template(), inputs)
    return [(p.type, p.message) for p in caught.value.problems]


def test_valid_inputs_are_normalised_with_defaults_applied(check) -> None:
    facts = check(
        _template(),
        {
            "admin_token": "t0k",
            "num_cpus": "4",
            "mem_size": "8GB",
            "os_version": "22.04",
            "gpu": "TRUE",
            "ratio": 1,
            "users": [{"os_user_name": "alice", "os_user_add_to_sudoers": True}],
        },
    )
    values = facts.normalized_inputs
    assert values["num_cpus"] == 4
    assert values["mem_size"] == "8 GB"
    assert values["os_version"] == "22.04"
    assert values["os_distribution"] == "ubuntu"  # default
    assert values["gpu"] is True
    assert values["ratio"] == 1.0
    assert values["disk"] == "20 GB"
    assert "nickname" not in values  # optional, no default, not sent
    assert facts.resources.vcpus == 4
    assert facts.resources.ram_mb == 8000.0


def test_missing_required_input(check) -> None:
    problems = _problems(check, {})
    assert problems == [("MissingRequiredInputError", 'required input "admin_token" is missing')]


def test_undeclared_input(check) -> None:
    problems = _problems(check, {"admin_token": "x", "flavour": "large"})
    assert problems == [("UnknownInputError", 'input "flavour" is not declared by the template')]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("num_cpus", "four", "is not an integer"),
        ("num_cpus", 2.5, "is not an integer"),
        ("num_cpus", True, "is not an integer"),
        ("mem_size", "lots", "is not a valid scalar-unit.size"),
        ("mem_size", 4, "is not a valid scalar-unit.size"),
        ("users", "alice", "is not a list"),
        ("gpu", "maybe", "is not a boolean"),
        ("ratio", "half", "is not a number"),
        ("os_version", "twenty", "is not a valid version"),
        ("admin_token", ["x"], "is not a string"),
    ],
)
def test_wrong_type(check, name, value, fragment) -> None:
    inputs = {"admin_token": "x", name: value}
    problems = _problems(check, inputs)
    assert len(problems) == 1
    assert problems[0][0] == "InvalidInputError"
    assert f'input "{name}"' in problems[0][1]
    assert fragment in problems[0][1]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("os_distribution", "windows", "not one of the valid values: ubuntu, centos"),
        ("num_cpus", 3, "not one of the valid values"),
        ("mem_size", "8 GiB", "not one of the valid values"),  # GiB is binary, GB decimal
        ("mem_size", "8192 MB", "not one of the valid values"),
        ("os_version", "21.04", "not one of the valid values"),
        ("workers", 11, "is not in the range [0, 10]"),
        ("ratio", 0, "must be greater than 0"),
        ("ratio", 1.5, "must be less or equal to 1"),
        ("project", "ab", "at least 3"),
        ("project", "abcdefghi", "at most 8"),
        ("project", "ABC", "does not match the pattern"),
        ("pin", "12345", "exactly 4"),
        ("disk", "200 GB", "is not in the range"),
        ("tags", ["toolong"], "at most 5"),
    ],
)
def test_constraint_violation(check, name, value, fragment) -> None:
    problems = _problems(check, {"admin_token": "x", name: value})
    assert len(problems) == 1, problems
    assert problems[0][0] == "InvalidInputError"
    assert fragment in problems[0][1]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("os_version", "20.04"),
        ("os_version", 20.04),
        ("os_version", "9"),
        ("os_version", 7),
        ("mem_size", "16 GB"),
        ("mem_size", "16GB"),
        ("num_cpus", 8.0),
        ("workers", 0),
        ("disk", "100 GB"),
    ],
)
def test_yaml_numbers_in_valid_values_match_client_strings(check, name, value) -> None:
    check(_template(), {"admin_token": "x", name: value})


def test_entry_schema_of_a_data_type_is_checked(check) -> None:
    problems = _problems(check, {"admin_token": "x", "users": [{"os_user_nam": "alice"}]})
    assert len(problems) >= 1
    assert all(kind == "InvalidInputError" for kind, _ in problems)
    assert any("os_user_nam" in message for _, message in problems)


def test_a_default_that_breaks_its_own_constraint(check) -> None:
    extra = (
        "    color:\n      type: string\n      default: pink\n"
        "      constraints:\n        - valid_values: [ red ]\n"
    )
    problems = _problems(check, {}, _template(extra))
    assert problems == [
        (
            "InvalidDefaultError",
            'the default of input "color": "pink" is not one of the valid values: red',
        )
    ]


def test_a_default_of_the_wrong_type(check) -> None:
    extra = "    mem:\n      type: scalar-unit.size\n      default: two gigs\n"
    problems = _problems(check, {}, _template(extra))
    assert len(problems) == 1
    assert problems[0][0] == "InvalidDefaultError"
    assert "two gigs" in problems[0][1]


def test_a_falsy_default_is_left_unchecked_like_tosca_parser(check) -> None:
    # INDIGO templates declare `docker_privileged: {type: string, default: false}`.
    extra = "    privileged:\n      type: string\n      default: false\n"
    facts = check(_template(extra), {})
    assert facts.normalized_inputs["privileged"] is False
    # A value the client sends is checked.
    problems = _problems(check, {"privileged": True}, _template(extra))
    assert problems[0][0] == "InvalidInputError"


def test_declared_inputs_are_reported(check) -> None:
    facts = check(_template(), {"admin_token": "x"})
    declared = {i.name: i for i in facts.inputs}
    assert declared["admin_token"].required is True
    assert declared["num_cpus"].required is False
    assert declared["num_cpus"].default == 1
    assert declared["disk"].constraints == ({"in_range": ["1 GB", "100 GB"]},)
    assert declared["nickname"].required is False


# ---- the pure functions ----------------------------------------------------------------------


def test_pattern_guard() -> None:
    limits = Limits()
    assert pattern_problem("[a-z0-9-]+$", limits) is None
    assert pattern_problem("^(foo|bar)-[0-9]{1,3}$", limits) is None
    assert "nested quantifier" in pattern_problem("(a+)+$", limits)
    assert "nested quantifier" in pattern_problem("(a*)*b", limits)
    assert "nested quantifier" in pattern_problem("((ab)+c?)+", limits)
    assert "back-references" in pattern_problem(r"(a)\1", limits)
    assert "not a valid regular expression" in pattern_problem("(", limits)
    assert "longer than" in pattern_problem("a" * 300, limits)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integer_strings_coerce_to_integers(number: int) -> None:
    assert coerce("integer", str(number)) == number
    assert coerce("integer", number) == number


@given(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(["B", "kB", "KiB", "MB", "MiB", "GB", "GiB", "TB", "TiB"]),
)
def test_scalar_units_normalise_without_changing_magnitude(number: int, unit: str) -> None:
    for written in (f"{number} {unit}", f"{number}{unit}", f" {number}  {unit} "):
        normalised = coerce("scalar-unit.size", written)
        assert normalised == f"{number} {unit}"
        assert scalar_magnitude("scalar-unit.size", normalised) == scalar_magnitude(
            "scalar-unit.size", written
        )


def test_malformed_constraints_are_reported_not_crashing() -> None:
    limits = Limits()
    for constraint in ({"in_range": [1]}, {"valid_values": 3}, {"a": 1, "b": 2}, {"nope": 1}):
        with pytest.raises(InputError):
            check_constraint("integer", constraint, 1, limits)
    with pytest.raises(InputError):
        check_constraint("string", {"greater_than": 1}, "abc", limits)
