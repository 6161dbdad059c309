"""Reading untrusted YAML safely.

Before anything builds Python objects from the text, one streaming pass over
libyaml's events refuses anchors, aliases, merge keys, unusual tags, too deep
nesting and too many nodes. libyaml's event parser keeps its own stack (no
recursion), and the pass stops at the first excess, so even 100,000 nested
`[` cost microseconds here, while loading them would crash CSafeLoader.
Only then is the text loaded, with a loader that also refuses duplicate keys.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import TemplateError, TemplateTooComplex

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Explicit tags that mean nothing more than the implicit resolution would.
_PLAIN_TAGS = frozenset(
    {
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:map",
        "tag:yaml.org,2002:seq",
        "!",
    }
)

_COLLECTION_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _where(mark: Any) -> str:
    if mark is None:
        return ""
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def syntax_error(exc: yaml.YAMLError, what: str) -> TemplateError:
    """A client-facing message for a YAML error: problem and position only."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "invalid YAML"
        mark = exc.problem_mark or exc.context_mark
        return TemplateError(f"{what} is not valid YAML: {problem}{_where(mark)}", kind="syntax")
    return TemplateError(f"{what} is not valid YAML", kind="syntax")


def precheck(text: str, *, max_depth: int, max_nodes: int, what: str = "the template") -> None:
    """Refuse YAML features and shapes that make loading or walking it unbounded."""
    depth = 0
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                raise TemplateTooComplex(
                    f"{what} uses a YAML alias (*{event.anchor}){_where(event.start_mark)}; "
                    "anchors and aliases are not accepted"
                )
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                raise TemplateTooComplex(
                    f"{what} defines a YAML anchor (&{anchor}){_where(event.start_mark)}; "
                    "anchors and aliases are not accepted"
                )
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in _PLAIN_TAGS:
                raise TemplateError(
                    f"{what} uses the YAML tag {tag!r}{_where(event.start_mark)}, "
                    "which is not accepted",
                    kind="syntax",
                )
            if isinstance(event, _COLLECTION_START):
                nodes += 1
                depth += 1
                if depth > max_depth:
                    raise TemplateTooComplex(
                        f"{what} nests more than {max_depth} levels{_where(event.start_mark)}"
                    )
            elif isinstance(event, _COLLECTION_END):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent):
                nodes += 1
                if event.value == "<<" and not event.style and event.tag is None:
                    raise TemplateTooComplex(
                        f"{what} uses a YAML merge key (<<){_where(event.start_mark)}; "
                        "merge keys are not accepted"
                    )
            if nodes > max_nodes:
                raise TemplateTooComplex(f"{what} has more than {max_nodes} YAML nodes")
    except yaml.YAMLError as exc:
        raise syntax_error(exc, what) from None


class _StrictLoader(_Loader):  # type: ignore[misc, valid-type]
    """Safe loader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping_no_duplicates(loader: Any, node: Any, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: SafeConstructor reports it below
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        try:
            seen.add(key)
        except TypeError:
            pass
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


def _construct_yaml_map(loader: Any, node: Any) -> Any:
    data: dict[Any, Any] = {}
    yield data
    data.update(_construct_mapping_no_duplicates(loader, node))


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_yaml_map)


def load_checked(
    text: str,
    *,
    max_depth: int,
    max_nodes: int,
    what: str = "the template",
    strict_keys: bool = True,
) -> object:
    """Pre-check, then load. Raises TemplateError / TemplateTooComplex."""
    precheck(text, max_depth=max_depth, max_nodes=max_nodes, what=what)
    try:
        return yaml.load(text, Loader=_StrictLoader if strict_keys else _Loader)
    except yaml.YAMLError as exc:
        raise syntax_error(exc, what) from None
