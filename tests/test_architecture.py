"""The dependency arrows of CONTRIBUTING.md, enforced: a violation fails the suite."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = {"domain", "eventstore", "tosca", "projections", "handlers", "api", "orchestrator"}


def imported_modules(package: str) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[path] = names
    return found


def test_domain_imports_only_the_standard_library_and_msgspec() -> None:
    allowed = set(sys.stdlib_module_names) | {"msgspec", "domain"}
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, names in imported_modules("domain").items()
        for name in names if name.split(".")[0] not in allowed
    }
    assert not offenders, f"domain/ must stay pure, found: {sorted(offenders)}"


@pytest.mark.parametrize("package", ["api", "projections", "handlers"])
def test_api_projections_and_handlers_do_not_import_each_other(package: str) -> None:
    others = {"api", "projections", "handlers", "orchestrator"} - {package}
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, names in imported_modules(package).items()
        for name in names if name.split(".")[0] in others
    }
    assert not offenders, f"{package}/ imports a sibling layer: {sorted(offenders)}"


@pytest.mark.parametrize("package", ["domain", "eventstore", "tosca"])
def test_lower_layers_do_not_import_upper_ones(package: str) -> None:
    upper = {"api", "projections", "handlers", "orchestrator"}
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, names in imported_modules(package).items()
        for name in names if name.split(".")[0] in upper
    }
    assert not offenders, f"{package}/ imports an upper layer: {sorted(offenders)}"
