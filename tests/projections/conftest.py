"""Fixtures for consumer and projection tests (real Kafka and Postgres)."""

from tests.consumers.support import fixture_engine

__all__ = ["fixture_engine"]
