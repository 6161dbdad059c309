"""Fixtures shared by every test folder.

Nothing here starts a service: the test command (scripts/test.sh) brings up the
real PostgreSQL and Kafka with scripts/services.sh before pytest runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from eventstore.store import EventStore, create_pool
from orchestrator.settings import env
from tests.databases import TestDatabases


@pytest.fixture(scope="session", name="fx_databases")
async def fixture_databases() -> AsyncIterator[TestDatabases]:
    databases = TestDatabases()
    await databases.prepare_template()
    yield databases
    await databases.drop_all()


@pytest.fixture(name="fx_database_url")
async def fixture_database_url(fx_databases: TestDatabases) -> str:
    """A fresh, migrated, empty database for this test."""
    return await fx_databases.fresh()


@pytest.fixture(name="fx_store")
async def fixture_store(fx_database_url: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(fx_database_url, max_size=40)
    yield EventStore(pool)
    await pool.close()


@pytest.fixture(name="fx_kafka_bootstrap", scope="session")
def fixture_kafka_bootstrap() -> str:
    bootstrap = env("ORCH_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise RuntimeError("run scripts/services.sh up first (it writes .run/env)")
    return bootstrap


@pytest.fixture(name="fx_topic_prefix")
def fixture_topic_prefix() -> str:
    """Topics unique to one test, so tests never read each other's events."""
    return f"test{uuid.uuid4().hex[:10]}"
