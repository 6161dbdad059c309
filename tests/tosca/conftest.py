"""Fixtures for the TOSCA tests: the shared corpus, a worker pool, the resolver."""

from __future__ import annotations

from pathlib import Path

import pytest
from tosca_helpers import CORPUS

from tosca import ImportResolver, Limits, ResolverConfig, WorkerPool, default_resolver_config


@pytest.fixture(scope="session")
def corpus() -> Path:
    # Required test data: a missing corpus is an error, never a silently skipped check.
    if not CORPUS.is_dir():
        raise RuntimeError(f"TOSCA corpus not found at {CORPUS} (set ORCH_TOSCA_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def resolver_config(corpus: Path) -> ResolverConfig:
    return default_resolver_config(types_dir=str(corpus))


@pytest.fixture(scope="session")
def resolver(resolver_config: ResolverConfig) -> ImportResolver:
    return ImportResolver(resolver_config)


@pytest.fixture(scope="session")
def pool():
    with WorkerPool(2, start_timeout=120) as workers:
        yield workers


@pytest.fixture(scope="session")
def limits() -> Limits:
    # Generous wall clock for a loaded CI machine; the limit under test elsewhere.
    return Limits(timeout_seconds=30.0)


@pytest.fixture(scope="session")
def check(pool: WorkerPool, limits: Limits, resolver: ImportResolver):
    """Validate offline against the corpus types, through the shared pool, without cache."""
    from tosca import validate

    def run(template_text: str, inputs: dict | None = None, **overrides):
        options = {"limits": limits, "resolver": resolver, "pool": pool, "cache": None}
        options.update(overrides)
        return validate(template_text, inputs, **options)

    return run
