"""The validation cache: identical facts for identical content, keyed by content and config."""

from __future__ import annotations

import pytest
from tosca_helpers import read_corpus

from tosca import (
    FactsCache,
    ImportResolver,
    Limits,
    ResolverConfig,
    TemplateError,
    WorkerPool,
    validate,
)

GOOD = "indigo-paas/tosca-templates/single-vm/single_vm_with_volume.yaml"


@pytest.fixture
def cached(pool, resolver, limits):
    cache = FactsCache(maxsize=16)

    def run(text, inputs=None, *, use_pool=None, **overrides):
        options = {"limits": limits, "resolver": resolver, "pool": use_pool or pool, "cache": cache}
        options.update(overrides)
        return validate(text, inputs, **options)

    run.cache = cache
    return run


def test_same_content_returns_the_identical_facts(cached) -> None:
    text = read_corpus(GOOD)
    first = cached(text, {"num_cpus": 2, "mem_size": "4 GB"})
    again = cached(text, {"mem_size": "4 GB", "num_cpus": 2})  # key order does not matter
    assert again is first
    assert (cached.cache.hits, len(cached.cache)) == (1, 1)


def test_the_cache_answers_without_the_workers(cached, resolver) -> None:
    text = read_corpus(GOOD)
    first = cached(text, {})
    closed = WorkerPool(1)
    closed.close()
    assert cached(text, {}, use_pool=closed) is first


def test_keyed_by_content_inputs_and_config(cached, limits, resolver_config) -> None:
    text = read_corpus(GOOD)
    base = cached(text, {})
    other_inputs = cached(text, {"num_cpus": 4})
    other_text = cached(text + "\n# a comment\n", {})
    strict = cached(
        text, {}, limits=Limits(timeout_seconds=limits.timeout_seconds, reject_duplicate_keys=True)
    )
    other_types = cached(
        text,
        {},
        resolver=ImportResolver(
            ResolverConfig(types_dir=resolver_config.types_dir, rules=resolver_config.rules[::-1])
        ),
    )
    assert len(cached.cache) == 5
    assert other_inputs.normalized_inputs["num_cpus"] == 4 != base.normalized_inputs["num_cpus"]
    assert other_text.template_hash != base.template_hash
    assert strict == base and strict is not base
    assert other_types == base and other_types is not base
    # A timeout change does not change the result, so it shares the entry.
    assert cached(text, {}, limits=Limits(timeout_seconds=limits.timeout_seconds + 1)) is base


def test_validation_errors_are_cached_too(cached) -> None:
    text = read_corpus(GOOD)
    with pytest.raises(TemplateError) as first:
        cached(text, {"num_cpus": 3})
    closed = WorkerPool(1)
    closed.close()
    with pytest.raises(TemplateError) as again:
        cached(text, {"num_cpus": 3}, use_pool=closed)
    assert again.value.message == first.value.message
    assert again.value.problems == first.value.problems
    assert again.value is not first.value


def test_least_recently_used_entries_are_evicted() -> None:
    cache = FactsCache(maxsize=2)
    cache.put("a", TemplateError("a"))
    cache.put("b", TemplateError("b"))
    assert cache.get("a") is not None
    cache.put("c", TemplateError("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
