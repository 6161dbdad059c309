"""Throwaway databases for tests, cloned from a migrated template database.

Every test that needs an empty log gets its own database; they all live in the
PostgreSQL cluster started by scripts/services.sh.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from orchestrator import migrate
from orchestrator.settings import env


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _user(url: str) -> str:
    return urlsplit(url).username or "orchestrator"


class TestDatabases:
    __test__ = False  # a helper, not a test class (its name starts with "Test")

    def __init__(self) -> None:
        app_url = env("ORCH_DATABASE_URL")
        admin_url = env("ORCH_ADMIN_DATABASE_URL")
        if not app_url or not admin_url:
            raise RuntimeError("run scripts/services.sh up first (it writes .run/env)")
        self.app_url: str = app_url
        self.admin_url: str = admin_url
        self.prefix = f"t{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_template"
        self.created: list[str] = []

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def prepare_template(self) -> None:
        owner = _user(self.app_url)
        await self._admin(f'CREATE DATABASE "{self.template}" OWNER "{owner}"')
        self.created.append(self.template)
        # Alembic's env runs its own event loop: keep it off ours.
        await asyncio.to_thread(migrate.upgrade, with_database(self.app_url, self.template))

    async def fresh(self) -> str:
        """A new migrated database; returns the application's URL for it."""
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        owner = _user(self.app_url)
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" OWNER "{owner}"')
        self.created.append(name)
        return with_database(self.app_url, name)

    async def unmigrated(self) -> str:
        """A new empty database (tests that migrate it step by step)."""
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        await self._admin(f'CREATE DATABASE "{name}" OWNER "{_user(self.app_url)}"')
        self.created.append(name)
        return with_database(self.app_url, name)

    def admin_url_for(self, app_url: str) -> str:
        return with_database(self.admin_url, urlsplit(app_url).path.lstrip("/"))

    async def drop_all(self) -> None:
        for name in reversed(self.created):
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
