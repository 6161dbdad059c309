"""Tamper verification: a row edited behind the application's back, as the Postgres
superuser with the append-only trigger disabled for that session, is reported by
``/v1/admin/audit/verify`` (first broken link) and by ``orchestrator verify``."""

from __future__ import annotations

import asyncpg

from tests.api.support import Harness, assert_legacy_error
from tests.databases import TestDatabases


async def test_verify_reports_the_first_broken_link_after_a_superuser_edit(
        api: Harness, fx_databases: TestDatabases) -> None:
    alice = api.user("alice")
    # the verifier reads the log only: no need to wait for any read model
    first = (await api.create(alice))["uuid"]
    await api.complete_create(first)
    second = (await api.create(alice))["uuid"]
    admin = api.admin()
    intact = await api.request("POST", "/v1/admin/audit/verify", admin)
    assert intact.status_code == 200, intact.text
    assert intact.json()["intact"] is True and intact.json()["brokenLinks"] == 0
    assert intact.json()["events"] >= 2

    superuser = await asyncpg.connect(
        fx_databases.admin_url_for(api.system.settings.database_url))
    try:
        async with superuser.transaction():
            # Triggers (the append-only guard) do not fire for this session only.
            await superuser.execute("SET LOCAL session_replication_role = replica")
            changed = await superuser.execute(
                "UPDATE events SET data = jsonb_set(data, '{user_group}', '\"g-forged\"') "
                "WHERE stream_id = $1 AND version = 1", f"deployment-{second}")
            assert changed == "UPDATE 1"
            await superuser.execute(
                "UPDATE events SET data = jsonb_set(data, '{user_group}', '\"g-forged\"') "
                "WHERE stream_id = $1 AND version = 1", f"deployment-{first}")
    finally:
        await superuser.close()

    report = (await api.request("GET", "/v1/admin/audit/verify", admin)).json()
    assert report["intact"] is False
    assert report["brokenLinks"] == 2
    # the first broken link in log order: the first deployment's request
    assert report["firstBroken"]["streamId"] == f"deployment-{first}"
    assert report["firstBroken"]["version"] == 1
    assert report["firstBroken"]["problem"] == "hash mismatch"
    assert_legacy_error(await api.request("GET", "/v1/admin/audit/verify", alice), 403)
