"""One validation, start to finish. Runs inside a worker process (see `tosca.worker`).

Order: YAML pre-checks and load (yamlsafe) -> template shape -> import
closure (imports) -> our input checks (inputs) -> tosca-parser with the
work-arounds (patches) -> data-type checks of inputs -> facts (facts).
Every problem found is reported, as `{type, message}` items with no server
paths and no stack traces.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Mapping
from typing import Any

from . import patches
from .errors import ImportRejected, Problem, TemplateError, exception_text
from .facts import (
    DeclaredInput,
    NodeSummary,
    TemplateFacts,
    base_type,
    content_hash,
    identity,
    requested_resources,
    type_chain,
)
from .imports import (
    ImportClosure,
    ImportResolver,
    ResolverConfig,
    _import_entries,
    shared_resolver,
)
from .inputs import check_complex_inputs, check_inputs, constraint_list
from .limits import Limits
from .yamlsafe import load_checked

INLINE_SECTIONS = (
    "repositories",
    "node_types",
    "data_types",
    "capability_types",
    "relationship_types",
    "interface_types",
    "policy_types",
    "group_types",
    "artifact_types",
)
ACCEPTED_VERSIONS = ("tosca_simple_yaml_1_0", "tosca_simple_yaml_1_2", "tosca_simple_yaml_1_3")
MAX_MESSAGE_CHARS = 500
MAX_PROBLEMS = 50

# ---- messages ------------------------------------------------------------------------------

_ABSOLUTE_PATH = re.compile(r"""(?<![\w.:/\-])/(?:[^\s"'/<>]+/)+[^\s"'<>,;)]*""")


class _Sanitizer:
    def __init__(self, closure: ImportClosure, resolver: ImportResolver) -> None:
        pairs = sorted(
            ((path, url) for url, path in closure.local_defs.items()),
            key=lambda pair: -len(pair[0]),
        )
        self._replacements = pairs
        self._roots = [str(rule.root) for rule in resolver._rules]
        if resolver.config.types_dir:
            self._roots.append(resolver.config.types_dir)

    def __call__(self, text: str) -> str:
        for path, url in self._replacements:
            text = text.replace(path, url)
        for root in sorted(self._roots, key=len, reverse=True):
            text = text.replace(root, "<types>")
        text = _ABSOLUTE_PATH.sub("<path>", text)
        text = " ".join(text.split())
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + "…"
        return text


def _exception_problem(exc: BaseException, clean: _Sanitizer) -> Problem:
    return Problem(type(exc).__name__, clean(exception_text(exc)))


def summarise(problems: list[Problem]) -> str:
    if len(problems) == 1:
        return problems[0].message
    shown = "; ".join(p.message for p in problems[:5])
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return f"{len(problems)} problems: {shown}{more}"


# ---- shape ---------------------------------------------------------------------------------


def _check_shape(tpl: object, limits: Limits) -> dict[str, Any]:
    if not isinstance(tpl, dict):
        kind = "empty" if tpl is None else f"a {type(tpl).__name__}"
        raise TemplateError(f"the template must be a YAML mapping, not {kind}", kind="template")
    version = tpl.get("tosca_definitions_version")
    if version is None:
        raise TemplateError('the template has no "tosca_definitions_version"', kind="template")
    if version not in ACCEPTED_VERSIONS:
        raise TemplateError(
            f'"tosca_definitions_version" {str(version)[:60]!r} is not supported '
            f"(accepted: {', '.join(ACCEPTED_VERSIONS)})",
            kind="template",
        )
    if not limits.allow_inline_types:
        inline = [section for section in INLINE_SECTIONS if section in tpl]
        if inline:
            raise TemplateError(
                f"the template defines {', '.join(inline)}; templates may only use the "
                "imported INDIGO/INFN type libraries",
                kind="template",
            )
    topology = tpl.get("topology_template")
    if not isinstance(topology, dict):
        raise TemplateError('the template has no "topology_template" mapping', kind="template")
    nodes = topology.get("node_templates")
    if not isinstance(nodes, dict) or not nodes:
        raise TemplateError('"topology_template" has no node_templates', kind="template")
    inputs = topology.get("inputs")
    if inputs is not None and not isinstance(inputs, dict):
        raise TemplateError('"inputs" must be a mapping', kind="template")
    if "metadata" in tpl and tpl["metadata"] is not None and not isinstance(tpl["metadata"], dict):
        raise TemplateError('"metadata" must be a mapping', kind="template")
    return tpl


# ---- plain values for facts ------------------------------------------------------------------


def plain(value: object, depth: int = 0) -> Any:
    """JSON-friendly copy: dates become ISO strings, odd keys strings, sets lists."""
    if depth > 64:
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str) else str(k)): plain(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# ---- the parser ----------------------------------------------------------------------------


def _parse(
    tpl: dict[str, Any], params: dict[str, Any], closure: ImportClosure, clean: _Sanitizer
) -> tuple[list[Problem], Any]:
    from toscaparser.common.exception import ExceptionCollector, ValidationError
    from toscaparser.tosca_template import ToscaTemplate

    try:
        tosca = ToscaTemplate(
            yaml_dict_tpl=tpl, parsed_params=params, local_defs=dict(closure.local_defs)
        )
        return [], tosca
    except ValidationError:
        return [_exception_problem(e, clean) for e in ExceptionCollector.getExceptions()], None
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:
        collected = [_exception_problem(e, clean) for e in ExceptionCollector.getExceptions()]
        internal = Problem(
            "ParserInternalError",
            f"tosca-parser failed on this template (internal {type(exc).__name__})",
        )
        return [*collected, internal], None
    finally:
        ExceptionCollector.stop()


# ---- entry point ---------------------------------------------------------------------------


def run(
    template_text: str,
    inputs: Mapping[str, Any],
    limits: Limits,
    resolver_config: ResolverConfig,
    known_templates: Mapping[str, str],
) -> TemplateFacts:
    patches.apply()
    resolver = shared_resolver(resolver_config)
    tpl = _check_shape(
        load_checked(
            template_text,
            max_depth=limits.max_depth,
            max_nodes=limits.max_yaml_nodes,
            strict_keys=limits.reject_duplicate_keys,
        ),
        limits,
    )
    imports = tpl.get("imports")
    if imports is not None:
        closure = resolver.resolve(imports)
        import_urls = tuple(_import_entries(imports))
    else:
        closure = ImportClosure(local_defs={}, files=frozenset())
        import_urls = ()
    clean = _Sanitizer(closure, resolver)

    topology = tpl["topology_template"]
    declared = topology.get("inputs") or {}
    checked = check_inputs(declared, inputs, limits)

    parse_tpl = copy.deepcopy(tpl)
    for name in checked.bad_defaults:  # reported once, by us
        parse_tpl["topology_template"]["inputs"][name].pop("default", None)
    patches.set_import_closure(closure.files, resolver.load_type_file)
    try:
        parser_problems, tosca = _parse(parse_tpl, dict(checked.values), closure, clean)
    finally:
        patches.set_import_closure(frozenset(), None)

    problems = list(parser_problems)
    problems.extend(checked.problems)
    if tosca is not None:
        custom_defs = getattr(tosca.topology_template, "custom_defs", None) or {}
        problems.extend(check_complex_inputs(declared, checked.values, custom_defs))
    if problems or tosca is None:
        if not problems:
            problems = [Problem("ValidationError", "the template is not valid")]
        kind = "template" if parser_problems else "inputs"
        problems = problems[:MAX_PROBLEMS]
        raise TemplateError(summarise(problems), problems=tuple(problems), kind=kind)

    return _facts(
        template_text,
        tpl,
        tosca,
        declared,
        checked.values,
        checked.unchecked_defaults,
        import_urls,
        known_templates,
    )


def _facts(
    template_text: str,
    tpl: dict[str, Any],
    tosca: Any,
    declared: Mapping[str, Any],
    values: Mapping[str, Any],
    unchecked: Mapping[str, Any],
    import_urls: tuple[str, ...],
    known_templates: Mapping[str, str],
) -> TemplateFacts:
    metadata = tpl.get("metadata") or {}
    template_hash = content_hash(template_text)
    nodes = list(tosca.nodetemplates or [])
    chains = [type_chain(node) for node in nodes]
    name, source, kind, version = identity(
        metadata, template_text, template_hash, known_templates, chains
    )
    declared_inputs = []
    for input_name, schema in declared.items():
        default = schema.get("default")
        declared_inputs.append(
            DeclaredInput(
                name=str(input_name),
                type=str(schema.get("type")),
                required=schema.get("required", True) is not False and default is None,
                default=plain(default),
                description=(
                    str(schema["description"]).strip() if schema.get("description") else None
                ),
                constraints=tuple(plain(constraint_list(schema.get("constraints")))),
            )
        )
    outputs = tpl["topology_template"].get("outputs") or {}
    description = tpl.get("description")
    return TemplateFacts(
        template_name=name,
        template_type=kind,
        identity_source=source,
        template_hash=template_hash,
        template_version=version,
        tosca_definitions_version=str(tpl["tosca_definitions_version"]),
        description=description.strip() if isinstance(description, str) else None,
        metadata=plain(metadata),
        imports=tuple(import_urls),
        inputs=tuple(declared_inputs),
        outputs=tuple(str(k) for k in outputs) if isinstance(outputs, dict) else (),
        node_templates=tuple(
            NodeSummary(name=node.name, type=node.type, base_type=base_type(chain))
            for node, chain in zip(nodes, chains, strict=True)
        ),
        node_types=tuple(sorted({node.type for node in nodes})),
        resources=requested_resources(tosca, values),
        normalized_inputs=plain({**values, **unchecked}),
    )


__all__ = ["ImportRejected", "run"]
