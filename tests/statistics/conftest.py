"""Fixtures for the statistics tests (real Postgres)."""

from tests.consumers.support import fixture_engine

__all__ = ["fixture_engine"]
