"""Offline TOSCA validation (tosca-parser in isolated worker processes) and template facts.

Public API:

- `validate(template_text, inputs, *, limits, resolver, ...) -> TemplateFacts` (sync)
- `TemplateValidator` (async facade holding the worker pool and the cache)
- `TemplateError` and its subclasses `ImportRejected`, `TemplateTooComplex`,
  `ValidationTimeout`; `ValidatorUnavailable` (not the template's fault)
- `ImportResolver` / `ResolverConfig` / `ImportRule` / `FetchConfig` (imports)
- `Limits` (size, depth, aliases, time and memory limits)
- `strip_contextualization(template_text) -> str` (templates IM deploys without SSH)
"""

from .errors import (
    ImportRejected,
    Problem,
    TemplateError,
    TemplateTooComplex,
    ValidationTimeout,
    ValidatorUnavailable,
)
from .facts import (
    ComputeRequest,
    DeclaredInput,
    NodeSummary,
    OsRequest,
    RequestedResources,
    TemplateFacts,
    VolumeRequest,
    content_hash,
)
from .im_safe import strip_contextualization
from .imports import (
    DEFAULT_RULES,
    FetchConfig,
    ImportResolver,
    ImportRule,
    ResolverConfig,
    default_resolver_config,
    default_types_dir,
)
from .limits import DEFAULT_LIMITS, Limits
from .service import TemplateValidator
from .validate import FactsCache, validate
from .worker import WorkerPool

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_RULES",
    "ComputeRequest",
    "DeclaredInput",
    "FactsCache",
    "FetchConfig",
    "ImportRejected",
    "ImportResolver",
    "ImportRule",
    "Limits",
    "NodeSummary",
    "OsRequest",
    "Problem",
    "RequestedResources",
    "ResolverConfig",
    "TemplateError",
    "TemplateFacts",
    "TemplateTooComplex",
    "TemplateValidator",
    "ValidationTimeout",
    "ValidatorUnavailable",
    "VolumeRequest",
    "WorkerPool",
    "content_hash",
    "default_resolver_config",
    "default_types_dir",
    "strip_contextualization",
    "validate",
]
