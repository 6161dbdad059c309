"""Input checks that tosca-parser 2.15.0 does not make (reference section 6).

The parser checks a supplied value only against the input's base type. It
ignores constraints, entry schemas, missing required inputs (a log warning) and
undeclared inputs. Here, before the parser runs:

- undeclared inputs are refused;
- a required input (TOSCA: `required` defaults to true) with no value and no
  default is refused;
- values (and defaults) are checked and coerced to the declared primitive type,
  leniently where JSON clients and YAML differ (`"4"` for an integer, `2` for a
  float, `20.04` for a version);
- constraints are evaluated with clear messages. `valid_values`/`equal` on
  string, version, integer, float and boolean inputs compare normalised
  strings, because YAML turns `[18.04, 20.04, 7]` into numbers while clients
  send `"20.04"`; scalar units compare by magnitude (GB = 10^9, GiB = 2^30);
  `pattern` goes through a static guard against catastrophic backtracking.

After the parser has loaded the types, `check_complex_inputs` validates values
of data types and entry schemas against them (a misspelt field of
`tosca.datatypes.indigo.User`, a PortSpec with a text port, ...).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

from .errors import Problem, exception_text
from .limits import Limits

PRIMITIVE_TYPES = frozenset(
    {
        "string",
        "integer",
        "float",
        "number",
        "boolean",
        "version",
        "timestamp",
        "range",
        "list",
        "map",
        "scalar-unit.size",
        "scalar-unit.time",
        "scalar-unit.frequency",
    }
)
_SCALAR_TYPES = ("scalar-unit.size", "scalar-unit.time", "scalar-unit.frequency")
_INT_RE = re.compile(r"^\s*[+-]?\d{1,30}\s*$")
_VERSION_RE = re.compile(
    r"^(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:\.(?P<fix>\d+))?"
    r"(?:\.(?P<qualifier>\w+))?(?:-(?P<build>\d+))?$"
)
_SCALAR_RE = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*(?P<unit>[A-Za-z]+)\s*$")
_SCALAR_UNITS: dict[str, dict[str, float]] = {
    "scalar-unit.size": {
        "B": 1,
        "kB": 1000,
        "KiB": 1024,
        "MB": 1000**2,
        "MiB": 1024**2,
        "GB": 1000**3,
        "GiB": 1024**3,
        "TB": 1000**4,
        "TiB": 1024**4,
    },
    "scalar-unit.time": {
        "d": 86400,
        "h": 3600,
        "m": 60,
        "s": 1,
        "ms": 0.001,
        "us": 0.000001,
        "ns": 0.000000001,
    },
    "scalar-unit.frequency": {"Hz": 1, "kHz": 1000, "MHz": 1000**2, "GHz": 1000**3},
}


class InputError(Exception):
    """One problem with one input; collected, never escapes this module."""


def _show(value: object, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= limit else text[:limit] + "…"


# ---- scalar units and versions -------------------------------------------------------------


def _scalar_parts(kind: str, value: object) -> tuple[str, float, str]:
    """A scalar-unit value as (number as written, number, canonical unit); units are
    case-tolerant."""
    found = _SCALAR_RE.match(value) if isinstance(value, str) else None
    if not found:
        raise InputError(f"{_show(value)} is not a valid {kind} (expected e.g. 8 GB)")
    units = _SCALAR_UNITS[kind]
    unit = found["unit"]
    if unit not in units:
        folded = {u.upper(): u for u in units}
        if unit.upper() not in folded:
            raise InputError(
                f'{_show(value)} has an unknown unit "{unit}" (valid: {", ".join(units)})'
            )
        unit = folded[unit.upper()]
    number = float(found["num"])
    if not math.isfinite(number):
        raise InputError(f"{_show(value)} is not a valid {kind}")
    return found["num"], number, unit


def scalar_magnitude(kind: str, value: object) -> float:
    """Value of a scalar-unit in the base unit (bytes, seconds, Hz). Units are case-tolerant."""
    _text, number, unit = _scalar_parts(kind, value)
    return float(number * _SCALAR_UNITS[kind][unit])


def _normalise_scalar(kind: str, value: object) -> str:
    text, _number, unit = _scalar_parts(kind, value)
    return f"{text} {unit}"


def _version_key(text: str) -> tuple[int, int, int, str, int]:
    found = _VERSION_RE.match(text)
    if not found:
        raise InputError(f"{_show(text)} is not a valid version (expected e.g. 20.04 or 1.2.3)")
    return (
        int(found["major"]),
        int(found["minor"] or 0),
        int(found["fix"] or 0),
        found["qualifier"] or "",
        int(found["build"] or 0),
    )


def _number_text(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


# ---- coercion ------------------------------------------------------------------------------


def coerce(kind: str, value: object) -> object:
    """Check `value` against a primitive TOSCA type and return it in canonical form."""
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _number_text(value)
        raise InputError(f"{_show(value)} is not a string")
    if kind == "integer":
        if isinstance(value, bool):
            raise InputError(f"{_show(value)} is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_RE.match(value):
            return int(value)
        raise InputError(f"{_show(value)} is not an integer")
    if kind in ("float", "number"):
        if isinstance(value, bool):
            raise InputError(f"{_show(value)} is not a number")
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str) and len(value) <= 64:
            try:
                number = float(value)
            except ValueError:
                raise InputError(f"{_show(value)} is not a number") from None
        else:
            raise InputError(f"{_show(value)} is not a number")
        if not math.isfinite(number):
            raise InputError(f"{_show(value)} is not a finite number")
        if kind == "number" and isinstance(value, int):
            return value
        return number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise InputError(f"{_show(value)} is not a boolean (true or false)")
    if kind == "version":
        if isinstance(value, bool):
            raise InputError(f"{_show(value)} is not a valid version")
        text = _number_text(value) if isinstance(value, (int, float)) else value
        if not isinstance(text, str):
            raise InputError(f"{_show(value)} is not a valid version")
        text = text.strip()
        _version_key(text)
        return text
    if kind in _SCALAR_TYPES:
        return _normalise_scalar(kind, value)
    if kind == "list":
        if not isinstance(value, list):
            raise InputError(f"{_show(value)} is not a list")
        return value
    if kind == "map":
        if not isinstance(value, Mapping):
            raise InputError(f"{_show(value)} is not a map")
        return dict(value)
    if kind == "timestamp":
        if not isinstance(value, str):
            # YAML turns unquoted dates into date objects.
            import datetime

            if isinstance(value, (datetime.date, datetime.datetime)):
                return value.isoformat()
            raise InputError(f"{_show(value)} is not a timestamp")
        from dateutil import parser as date_parser

        try:
            date_parser.isoparse(value)
        except (ValueError, OverflowError):
            raise InputError(f"{_show(value)} is not a valid timestamp") from None
        return value
    if kind == "range":
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(
                (isinstance(v, int) and not isinstance(v, bool)) or v == "UNBOUNDED" for v in value
            )
        ):
            raise InputError(f"{_show(value)} is not a range ([min, max])")
        return value
    raise InputError(f'type "{kind}" is not a primitive type')


# ---- regex guard ---------------------------------------------------------------------------

_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)
_BACKREFS = (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS)


def _walk(parsed: Any, inside_repeat: bool) -> str | None:
    for op, arg in parsed:
        if op in _REPEATS:
            _low, high, sub = arg
            unbounded_ish = high is sre_constants.MAXREPEAT or high > 16
            if inside_repeat and (high > 1):
                return "a repeated group contains another repetition (nested quantifier)"
            problem = _walk(sub, inside_repeat or unbounded_ish)
            if problem:
                return problem
        elif op in _BACKREFS:
            return "back-references are not accepted"
        elif op == sre_constants.SUBPATTERN:
            problem = _walk(arg[-1], inside_repeat)
            if problem:
                return problem
        elif op == sre_constants.BRANCH:
            for branch in arg[1]:
                problem = _walk(branch, inside_repeat)
                if problem:
                    return problem
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            problem = _walk(arg[1], inside_repeat)
            if problem:
                return problem
        elif op == sre_constants.ATOMIC_GROUP:
            problem = _walk(arg, inside_repeat)
            if problem:
                return problem
    return None


def pattern_problem(pattern: object, limits: Limits) -> str | None:
    """Why a `pattern` constraint is refused, or None. Static and conservative:
    no nested quantifiers, no back-references, bounded length. Backtracking
    that slips through is stopped by the worker's wall clock."""
    if not isinstance(pattern, str):
        return "the pattern is not a string"
    if len(pattern) > limits.max_pattern_length:
        return f"the pattern is longer than {limits.max_pattern_length} characters"
    try:
        parsed = sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return "the pattern is not a valid regular expression"
    return _walk(parsed.data if hasattr(parsed, "data") else parsed, False)


# ---- constraints ---------------------------------------------------------------------------


def _comparable(kind: str, value: object) -> object:
    if kind in _SCALAR_TYPES:
        return scalar_magnitude(kind, value)
    if kind == "version":
        return _version_key(coerce("version", value))  # type: ignore[arg-type]
    if kind in ("integer", "float", "number"):
        return coerce("float", value)
    if kind == "timestamp":
        from dateutil import parser as date_parser

        return date_parser.isoparse(str(coerce("timestamp", value)))
    raise InputError(f'ordering constraints do not apply to type "{kind}"')


def _same_text(kind: str, value: object) -> str:
    if kind in ("integer", "float", "number"):
        number = coerce("float", value)
        return _number_text(number)  # type: ignore[arg-type]
    if kind == "boolean":
        return "true" if coerce("boolean", value) else "false"
    if kind == "version":
        return ".".join(str(p) for p in _version_key(coerce("version", value)))  # type: ignore[arg-type]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number_text(value)
    return str(value)


def _equal(kind: str, a: object, b: object) -> bool:
    if kind in _SCALAR_TYPES:
        return scalar_magnitude(kind, a) == scalar_magnitude(kind, b)
    if kind in ("string", "version", "integer", "float", "number", "boolean"):
        try:
            return _same_text(kind, a) == _same_text(kind, b)
        except InputError:
            return False
    return a == b


def _length(value: object) -> int:
    if isinstance(value, (str, list, dict)):
        return len(value)
    raise InputError(f"{_show(value)} has no length")


def check_constraint(kind: str, constraint: object, value: object, limits: Limits) -> None:
    if not isinstance(constraint, Mapping) or len(constraint) != 1:
        raise InputError("has an invalid constraint (each constraint is a one-key map)")
    ((operator, bound),) = constraint.items()
    if operator == "valid_values":
        if not isinstance(bound, list):
            raise InputError("has an invalid valid_values constraint (not a list)")
        if not any(_equal(kind, value, candidate) for candidate in bound):
            shown = ", ".join(_same_text(kind, c) if kind != "map" else repr(c) for c in bound)
            raise InputError(f"{_show(value)} is not one of the valid values: {shown}")
    elif operator == "equal":
        if not _equal(kind, value, bound):
            raise InputError(f"{_show(value)} must be equal to {_show(bound)}")
    elif operator in ("greater_than", "greater_or_equal", "less_than", "less_or_equal"):
        left: Any = _comparable(kind, value)
        right: Any = _comparable(kind, bound)
        ok = {
            "greater_than": lambda: left > right,
            "greater_or_equal": lambda: left >= right,
            "less_than": lambda: left < right,
            "less_or_equal": lambda: left <= right,
        }[operator]()
        if not ok:
            words = operator.replace("_", " ").replace("or equal", "or equal to")
            raise InputError(f"{_show(value)} must be {words} {_show(bound)}")
    elif operator == "in_range":
        if not isinstance(bound, list) or len(bound) != 2:
            raise InputError("has an invalid in_range constraint (not [min, max])")
        low, high = bound
        current: Any = _comparable(kind, value)
        if (low != "UNBOUNDED" and current < _comparable(kind, low)) or (
            high != "UNBOUNDED" and current > _comparable(kind, high)
        ):
            raise InputError(f"{_show(value)} is not in the range [{low}, {high}]")
    elif operator in ("length", "min_length", "max_length"):
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise InputError(f"has an invalid {operator} constraint (not an integer)")
        size = _length(value)
        if (
            (operator == "length" and size != bound)
            or (operator == "min_length" and size < bound)
            or (operator == "max_length" and size > bound)
        ):
            words = {"length": "exactly", "min_length": "at least", "max_length": "at most"}
            raise InputError(
                f"{_show(value)} must have {words[operator]} {bound} elements/characters"
            )
    elif operator == "pattern":
        problem = pattern_problem(bound, limits)
        if problem:
            raise InputError(f"has a pattern constraint that is not accepted: {problem}")
        if not isinstance(value, str):
            raise InputError(f"{_show(value)} is not a string (pattern constraint)")
        if len(value) > limits.max_pattern_subject_length:
            raise InputError(
                f"is longer than {limits.max_pattern_subject_length} characters "
                "(pattern constraint)"
            )
        if re.match(bound, value) is None:  # tosca-parser's semantics: anchored at the start
            raise InputError(f"{_show(value)} does not match the pattern {bound!r}")
    elif operator == "schema":
        return  # TOSCA 1.3 schema constraint: not evaluated (no template uses it)
    else:
        raise InputError(f'has an unknown constraint "{operator}"')


# ---- the checks ----------------------------------------------------------------------------


class CheckedInputs:
    """Result of `check_inputs`: canonical values and problems, per input."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.problems: list[Problem] = []
        self.failed: set[str] = set()
        self.bad_defaults: set[str] = set()
        # Defaults kept as written and left to the parser (not passed as parameters).
        self.unchecked_defaults: dict[str, Any] = {}


def constraint_list(constraints: object) -> list[Any]:
    """Constraints as a list of one-key maps. Some real templates write a map
    (`constraints: {in_range: [1 GB, 100 GB]}`), which the parser never reads for
    inputs; accept it rather than reject working templates."""
    if constraints is None:
        return []
    if isinstance(constraints, Mapping):
        return [{key: value} for key, value in constraints.items()]
    if isinstance(constraints, list):
        return constraints
    return [constraints]


def _entry_kind(schema: Mapping[str, Any]) -> str | None:
    entry = schema.get("entry_schema")
    if isinstance(entry, Mapping):
        kind = entry.get("type")
        return kind if isinstance(kind, str) else None
    if isinstance(entry, str):
        return entry
    return None


def check_inputs(declared: object, params: Mapping[str, Any], limits: Limits) -> CheckedInputs:
    result = CheckedInputs()
    declared_map: Mapping[str, Any] = declared if isinstance(declared, Mapping) else {}
    for name in params:
        if name not in declared_map:
            result.problems.append(
                Problem("UnknownInputError", f'input "{name}" is not declared by the template')
            )
    for name, schema in declared_map.items():
        if not isinstance(schema, Mapping) or not isinstance(schema.get("type"), str):
            continue  # the parser reports malformed input definitions
        kind = schema["type"]
        supplied = params.get(name)
        from_default = supplied is None
        value = schema.get("default") if from_default else supplied
        if value is None:
            if schema.get("required", True) is not False:
                result.problems.append(
                    Problem("MissingRequiredInputError", f'required input "{name}" is missing')
                )
                result.failed.add(name)
            continue
        what = f'the default of input "{name}"' if from_default else f'input "{name}"'
        if from_default and not value and kind in PRIMITIVE_TYPES:
            try:
                coerce(kind, copy.deepcopy(value))
            except InputError:
                # tosca-parser never checks a falsy default (`default: false` on a
                # string input is common in INDIGO templates); neither do we.
                result.unchecked_defaults[name] = value
                continue
        value_any: Any
        try:
            if kind in PRIMITIVE_TYPES:
                value = coerce(kind, copy.deepcopy(value))
                entry_kind = _entry_kind(schema)
                if (
                    entry_kind is not None
                    and kind in ("list", "map")
                    and entry_kind in (PRIMITIVE_TYPES - {"list", "map"})
                ):
                    value_any = value
                    if kind == "list":
                        value = [coerce(entry_kind, v) for v in value_any]
                    else:
                        value = {k: coerce(entry_kind, v) for k, v in value_any.items()}
            for constraint in constraint_list(schema.get("constraints")):
                check_constraint(kind, constraint, value, limits)
            entry = schema.get("entry_schema")
            if (
                isinstance(entry, Mapping)
                and entry.get("constraints")
                and isinstance(entry.get("type"), str)
                and kind in ("list", "map")
            ):
                value_any = value
                entries = value_any if kind == "list" else list(value_any.values())
                for item in entries:
                    for constraint in constraint_list(entry["constraints"]):
                        check_constraint(entry["type"], constraint, item, limits)
        except (InputError, TypeError, ValueError, OverflowError) as problem:
            if isinstance(problem, InputError):
                text = str(problem)
            else:
                text = "has a constraint that cannot be evaluated for this value"
            message = (
                f"{what} {text}" if text.startswith(("has ", "is ", "must ")) else f"{what}: {text}"
            )
            result.problems.append(
                Problem("InvalidDefaultError" if from_default else "InvalidInputError", message)
            )
            result.failed.add(name)
            if from_default:
                result.bad_defaults.add(name)
            continue
        result.values[name] = value
    return result


def check_complex_inputs(
    declared: object, values: Mapping[str, Any], custom_defs: Mapping[str, Any]
) -> list[Problem]:
    """Data types and entry schemas, checked with tosca-parser's own DataEntity."""
    from toscaparser.common.exception import ExceptionCollector
    from toscaparser.dataentity import DataEntity

    problems: list[Problem] = []
    if not isinstance(declared, Mapping):
        return problems
    for name, value in values.items():
        schema = declared.get(name)
        if not isinstance(schema, Mapping):
            continue
        kind = schema.get("type")
        entry_kind = _entry_kind(schema)
        needs_types = kind not in PRIMITIVE_TYPES or (
            kind in ("list", "map") and entry_kind is not None and entry_kind not in PRIMITIVE_TYPES
        )
        if not needs_types:
            continue
        ExceptionCollector.start()
        try:
            DataEntity.validate_datatype(
                kind, copy.deepcopy(value), schema.get("entry_schema"), custom_defs, name
            )
        except Exception as raised:  # the parser raises as well as collects
            ExceptionCollector.appendException(raised)
        finally:
            ExceptionCollector.stop()
        for collected in ExceptionCollector.getExceptions():
            problems.append(
                Problem("InvalidInputError", f'input "{name}": {exception_text(collected)}')
            )
        ExceptionCollector.clear()
    return problems
