"""Work-arounds for tosca-parser 2.15.0, applied inside worker processes only.

See reference/tosca-parser-offline.md section 4. They patch private functions,
so the project pins `tosca-parser==2.15.0`; `apply()` refuses another version
rather than silently patching code it was not written for.

A. `get_property: [node, prop, 0]` on a property whose value is `get_input`
   tried to index the unresolved function and crashed formatting its error.
B. `get_property` of a declared-but-unset optional property (filled in by the
   orchestrator at deploy time) was reported as "not found".
C. Error branches format `self.context.name` where the context is the outputs
   list, which crashed and hid the real error.
D. Imports: the parser's YAML loader is replaced by one that reads only the
   files of the pre-resolved import closure (cached, deep-copied), and
   `urllib.request.urlopen` is disabled, so the parser can never fetch.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable
from typing import Any

PINNED_VERSION = "2.15.0"

_applied = False
_type_file_loader: Callable[[str], object] | None = None
_allowed_files: frozenset[str] = frozenset()


class _NamedOutputs(list[Any]):
    """The outputs list, with the `name` that the parser's error branches read."""

    name = "outputs"


def _refuse_urlopen(*_args: object, **_kwargs: object) -> Any:
    raise OSError("network access is disabled in the TOSCA validator")


def set_import_closure(files: frozenset[str], loader: Callable[[str], object] | None) -> None:
    """Allow exactly these local type files for the next parse."""
    global _allowed_files, _type_file_loader
    _allowed_files = files
    _type_file_loader = loader


def apply() -> None:
    global _applied
    if _applied:
        return
    from importlib.metadata import version

    installed = version("tosca-parser")
    if installed != PINNED_VERSION:
        raise RuntimeError(
            f"tosca-parser {installed} is installed; the work-arounds in tosca.patches "
            f"were written for {PINNED_VERSION}"
        )

    import toscaparser.imports
    from toscaparser import functions
    from toscaparser.common.exception import ExceptionCollector, URLException
    from toscaparser.topology_template import TopologyTemplate

    logging.getLogger("tosca").setLevel(logging.CRITICAL)
    logging.getLogger("tosca.model").setLevel(logging.CRITICAL)

    # A
    original_get_attribute_value = functions.GetProperty._get_attribute_value

    def _get_attribute_value(self: Any, value: Any, attribute: Any) -> Any:
        if isinstance(value, functions.Function):
            return value
        return original_get_attribute_value(self, value, attribute)

    functions.GetProperty._get_attribute_value = _get_attribute_value

    # B
    original_find_property = functions.GetProperty._find_property

    def _find_property(self: Any, property_name: str) -> Any:
        node_tpl = self._find_node_template(self.args[0])
        if node_tpl is not None and property_name not in node_tpl.get_properties():
            type_definition = node_tpl.type_definition
            declared = type_definition.get_properties_def() if type_definition else {}
            if property_name in (declared or {}):
                return None
        return original_find_property(self, property_name)

    functions.GetProperty._find_property = _find_property

    # C
    original_outputs = TopologyTemplate._outputs

    def _outputs(self: Any) -> list[Any]:
        return _NamedOutputs(original_outputs(self))

    TopologyTemplate._outputs = _outputs

    # D
    def _load_yaml(path: str, a_file: bool = True) -> Any:
        if a_file and path in _allowed_files and _type_file_loader is not None:
            return _type_file_loader(path)
        ExceptionCollector.appendException(
            URLException(what=f'import "{path}" is not allowed (it is not a known type library)')
        )
        return None

    toscaparser.imports.YAML_LOADER = _load_yaml
    urllib.request.urlopen = _refuse_urlopen
    _applied = True
