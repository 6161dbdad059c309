"""Errors raised by template validation.

Every message is meant for the client that sent the template: it names the
problem, never carries a stack trace, and never shows a server path.
"""

from __future__ import annotations

import msgspec


class Problem(msgspec.Struct, frozen=True):
    """One finding, as `{type, message}` (the shape the API returns)."""

    type: str
    message: str


def exception_text(exc: BaseException) -> str:
    """What a parser exception says (a KeyError's str() would add quotes around it)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


class TemplateError(Exception):
    """The template (or its inputs) is not acceptable.

    `kind` says which stage rejected it, so the API can choose a status:
    "syntax" (YAML cannot be read: 400), "limits" (too big / too complex: 413),
    "imports" (an import is not allowed or not available), "template" (TOSCA
    validation), "inputs" (input values), "timeout", "internal".
    """

    kind: str = "template"

    def __init__(
        self,
        message: str,
        *,
        problems: tuple[Problem, ...] = (),
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or (Problem(type(self).__name__, message),)
        if kind is not None:
            self.kind = kind

    def fresh(self) -> TemplateError:
        """An equal error without traceback (what the cache stores and re-raises)."""
        return type(self)(self.message, problems=self.problems, kind=self.kind)


class ImportRejected(TemplateError):
    """An import URL is not mapped, not allowed, or its file is missing."""

    kind = "imports"


class TemplateTooComplex(TemplateError):
    """The template exceeds a size, nesting, alias or memory limit, or crashed the parser."""

    kind = "limits"


class ValidationTimeout(TemplateError):
    """Validation did not finish within the wall-clock limit."""

    kind = "timeout"


class ValidatorUnavailable(RuntimeError):
    """The validator is closed or all workers stayed busy too long (not the template's fault)."""
