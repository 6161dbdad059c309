"""`validate()`: the synchronous entry point, with the content-hash cache.

    facts = validate(template_text, {"num_cpus": 2}, limits=Limits(), resolver=ImportResolver())

Raises `TemplateError` (a clear message naming the problem, plus `.problems`
as `{type, message}` items), or its subclasses `ImportRejected`,
`TemplateTooComplex` and `ValidationTimeout`. The parsing happens in a worker
process (see `tosca.worker`); results are cached by the SHA-256 of the template
text, the canonical inputs and the configuration that can change the result.
"""

from __future__ import annotations

import atexit
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import TemplateError, TemplateTooComplex
from .facts import TemplateFacts
from .imports import ImportResolver, ResolverConfig, shared_resolver
from .limits import DEFAULT_LIMITS, Limits
from .worker import WorkerPool

CACHE_FORMAT = b"tosca-facts-v1"


class FactsCache:
    """A thread-safe LRU of validation outcomes (facts, or the TemplateError they raised)."""

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, TemplateFacts | TemplateError] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> TemplateFacts | TemplateError | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: str, value: TemplateFacts | TemplateError) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _encode_text(template_text: object, limits: Limits) -> bytes:
    if not isinstance(template_text, str):
        raise TemplateError("the template must be text", kind="syntax")
    try:
        data = template_text.encode("utf-8")
    except UnicodeEncodeError:
        raise TemplateError("the template is not valid UTF-8 text", kind="syntax") from None
    if len(data) > limits.max_template_bytes:
        raise TemplateTooComplex(
            f"the template is {len(data)} bytes; the limit is {limits.max_template_bytes} bytes"
        )
    if "\x00" in template_text:
        raise TemplateError("the template contains a NUL character", kind="syntax")
    return data


def _depth(value: object) -> int:
    """Nesting depth of plain JSON-like data, without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, Mapping):
            children = list(current.values())
        elif isinstance(current, (list, tuple)):
            children = list(current)
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > 1000:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _encode_inputs(
    inputs: Mapping[str, Any] | None, limits: Limits
) -> tuple[dict[str, Any], bytes]:
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping) or not all(isinstance(k, str) for k in inputs):
        raise TemplateError("inputs must be a map from input names to values", kind="inputs")
    if _depth(inputs) > limits.max_depth:
        raise TemplateTooComplex(f"the inputs nest more than {limits.max_depth} levels")
    try:
        canonical = msgspec.json.encode(dict(inputs), order="sorted")
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise TemplateError("inputs must be plain JSON values", kind="inputs") from None
    if len(canonical) > limits.max_inputs_bytes:
        raise TemplateTooComplex(
            f"the inputs are {len(canonical)} bytes; the limit is {limits.max_inputs_bytes} bytes"
        )
    # What the worker receives is the JSON round trip: plain values only.
    return msgspec.json.decode(canonical), canonical


def cache_key(
    text_bytes: bytes,
    canonical_inputs: bytes,
    limits: Limits,
    resolver: ImportResolver,
    known_templates: Mapping[str, str],
) -> str:
    digest = hashlib.sha256()
    for part in (
        CACHE_FORMAT,
        text_bytes,
        canonical_inputs,
        limits.cache_key_part(),
        resolver.fingerprint.encode(),
        msgspec.json.encode(dict(known_templates), order="sorted"),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class Prepared(msgspec.Struct, frozen=True):
    key: str
    template_text: str
    inputs: dict[str, Any]
    resolver: ResolverConfig
    known_templates: dict[str, str]


def prepare(
    template_text: str,
    inputs: Mapping[str, Any] | None,
    limits: Limits,
    resolver: ImportResolver,
    known_templates: Mapping[str, str],
) -> Prepared:
    """Cheap checks in the caller's process (size, UTF-8, inputs as JSON) and the cache key."""
    text_bytes = _encode_text(template_text, limits)
    plain_inputs, canonical = _encode_inputs(inputs, limits)
    key = cache_key(text_bytes, canonical, limits, resolver, known_templates)
    return Prepared(
        key=key,
        template_text=template_text,
        inputs=plain_inputs,
        resolver=resolver.config,
        known_templates=dict(known_templates),
    )


def cached_outcome(cache: FactsCache | None, key: str) -> TemplateFacts | None:
    """The cached facts, or raise the cached verdict; None when nothing is cached."""
    cached = cache.get(key) if cache is not None else None
    if isinstance(cached, TemplateError):
        raise cached.fresh()
    return cached


def run_and_cache(
    prepared: Prepared, limits: Limits, pool: WorkerPool, cache: FactsCache | None
) -> TemplateFacts:
    """Validate in a worker (the cache has been consulted) and remember the outcome."""
    try:
        facts = pool.run(
            prepared.template_text,
            prepared.inputs,
            limits,
            prepared.resolver,
            prepared.known_templates,
        )
    except TemplateError as exc:
        # Deterministic verdicts are cached; timeouts and resource failures are not
        # (they may depend on load), nor are internal errors.
        if cache is not None and exc.kind in ("syntax", "imports", "template", "inputs"):
            cache.put(prepared.key, exc.fresh())
        raise
    if cache is not None:
        cache.put(prepared.key, facts)
    return facts


def as_resolver(resolver: ImportResolver | ResolverConfig | None) -> ImportResolver:
    if resolver is None or isinstance(resolver, ResolverConfig):
        return shared_resolver(resolver)
    return resolver


# ---- module-level defaults ---------------------------------------------------------------------

_defaults_lock = threading.Lock()
_default_pool: WorkerPool | None = None
_default_cache = FactsCache()


def default_pool() -> WorkerPool:
    global _default_pool
    with _defaults_lock:
        if _default_pool is None or _default_pool.closed:
            _default_pool = WorkerPool()
            atexit.register(_default_pool.close)
        return _default_pool


def validate(
    template_text: str,
    inputs: Mapping[str, Any] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    resolver: ImportResolver | ResolverConfig | None = None,
    known_templates: Mapping[str, str] | None = None,
    pool: WorkerPool | None = None,
    cache: FactsCache | None = _default_cache,
) -> TemplateFacts:
    """Validate a TOSCA template with its input values and return its facts.

    `known_templates` maps `sha256:<hex>` content hashes to template names (the
    registry step of the identity rules). Without `pool`, a process-wide pool is
    started on first use; pass `cache=None` to bypass caching.
    """
    resolver_obj = as_resolver(resolver)
    prepared = prepare(template_text, inputs, limits, resolver_obj, known_templates or {})
    cached = cached_outcome(cache, prepared.key)
    if cached is not None:
        return cached
    return run_and_cache(prepared, limits, pool or default_pool(), cache)
