"""Operations: health, readiness, metrics, JSON logs, and the operator CLI."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from domain.deployments import DeleteDeployment
from eventstore import kafka_format
from eventstore.audit import verify_export
from eventstore.dead_letters import list_dead_letters, park
from eventstore.records import Metadata, NewEvent, RecordedEvent
from eventstore.store import EventStore
from orchestrator import bootstrap, cli, logs
from orchestrator.demo import DEMO_OWNER, DEPLOYMENTS
from orchestrator.settings import ROOT, Settings, database_engine
from tests.databases import TestDatabases
from tests.eventstore.sample_events import opened
from tests.http_server import serve
from tests.operations.support import create_deployment, deployment_id


def settings_for(database_url: str, kafka: str, prefix: str) -> Settings:
    return Settings(database_url=database_url, kafka_bootstrap=kafka, topic_prefix=prefix)


@pytest.fixture(name="fx_system")
async def fixture_system(fx_database_url: str, fx_kafka_bootstrap: str,
                         fx_topic_prefix: str) -> AsyncIterator[bootstrap.System]:
    system = await bootstrap.build(settings_for(fx_database_url, fx_kafka_bootstrap,
                                                fx_topic_prefix))
    yield system
    await system.close()


async def test_healthz_readyz_and_metrics(fx_system: bootstrap.System) -> None:
    await fx_system.store.append("deployment-1", 0, [opened()], Metadata())
    async with serve(fx_system.app) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}

        ready = await client.get("/readyz")
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert checks["postgres"]["ok"] and checks["kafka"]["ok"]
        assert checks["relay"]["lagEvents"] == 1  # appended, no relay running yet

        metrics = (await client.get("/metrics")).text
        assert "orchestrator_events_appended 1.0" in metrics
        assert "orchestrator_relay_lag_events 1.0" in metrics
        assert "orchestrator_parked_messages 0.0" in metrics


async def test_readyz_is_503_when_kafka_is_unreachable(
        fx_database_url: str, fx_topic_prefix: str) -> None:
    # Port 9 on loopback: nothing listens there.
    system = await bootstrap.build(settings_for(fx_database_url, "127.0.0.1:9", fx_topic_prefix))
    try:
        async with serve(system.app) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready"
        assert body["checks"]["kafka"]["ok"] is False
        assert body["checks"]["postgres"]["ok"] is True
    finally:
        await system.close()


async def test_metrics_count_parked_events(fx_system: bootstrap.System) -> None:
    result = await fx_system.store.append("deployment-2", 0, [opened()], Metadata())
    (event,) = await fx_system.store.read_stream("deployment-2")
    _, value, headers = kafka_format.encode(event)
    async with fx_system.engine.begin() as conn:
        await park(conn, handler="im", event=event, topic="t", partition=0, offset=0,
                   payload=value, headers=headers, attempts=5, error="IM said no")
    assert result.version == 1
    async with serve(fx_system.app) as client:
        metrics = (await client.get("/metrics")).text
    assert 'orchestrator_parked_events{handler="im"} 1.0' in metrics


def test_logs_are_json_lines_and_never_show_a_token() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonLinesFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    try:
        logger.warning("call failed with Authorization: Bearer %s", token,
                       extra={"deployment": "d-1", "header": f"bearer {token}"})
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "WARNING" and entry["deployment"] == "d-1"
    assert token not in lines[0]
    assert "[redacted" in entry["message"] and "[redacted" in entry["header"]


@pytest.mark.parametrize("line", [
    "X-Rucio-Auth-Token: root-root-0123abcd",
    "headers=[(b'x-rucio-auth-token', b'root-root-0123abcd')]",
    '{"X-Rucio-Auth-Token": "root-root-0123abcd"}',
])
def test_rucio_tokens_are_masked_in_every_shape_they_are_logged(line: str) -> None:
    assert "root-root-0123abcd" not in logs.redact(line)


def run_cli(*args: str, database_url: str, kafka: str, prefix: str
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_DATABASE_URL": database_url, "ORCH_KAFKA_BOOTSTRAP": kafka,
           "ORCH_TOPIC_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


async def test_cli_rebuild_builds_a_new_version_with_progress_and_switches(
        fx_system: bootstrap.System, fx_store: EventStore, fx_database_url: str,
        fx_kafka_bootstrap: str, fx_topic_prefix: str) -> None:
    for i in range(50):
        await create_deployment(fx_system, i)
        await fx_system.commands.execute(
            f"deployment-{deployment_id(i)}", DEPLOYMENTS,
            DeleteDeployment(deployment_id=deployment_id(i), actor=DEMO_OWNER), Metadata())
    first = run_cli("rebuild", "event_counts", database_url=fx_database_url,
                    kafka=fx_kafka_bootstrap, prefix=fx_topic_prefix)
    assert first.returncode == 0, first.stderr
    # How many come from the log replay and how many from Kafka depends on which
    # transactions are still open in the cluster; together they are all 150 (below).
    assert "event_counts v1 is live (" in first.stdout
    assert "100.0%" in first.stderr and "ETA" in first.stderr
    second = run_cli("rebuild", "event_counts", database_url=fx_database_url,
                     kafka=fx_kafka_bootstrap, prefix=fx_topic_prefix)
    assert second.returncode == 0, second.stderr
    assert "event_counts v2 is live" in second.stdout
    async with fx_store.pool.acquire() as conn:
        rows = await conn.fetch("SELECT version, state FROM projection_versions "
                                "WHERE projection = 'event_counts' ORDER BY version")
        counts = await conn.fetchval("SELECT sum(count) FROM event_counts_v2")
    assert [(r["version"], r["state"]) for r in rows] == [(1, "retired"), (2, "live")]
    assert counts == 150  # requested, deletion requested, deleted


async def test_cli_rebuild_refuses_a_log_it_cannot_read(
        fx_store: EventStore, fx_database_url: str, fx_kafka_bootstrap: str,
        fx_topic_prefix: str) -> None:
    """A rebuild is strict: an event it handles but cannot read (written by a newer
    version of the code) stops it loudly, with a message rather than a traceback."""
    newer = NewEvent(event_id=str(uuid.uuid4()), type="deployment.requested",
                     schema_version=2, data=b'{"type": "deployment.requested"}')
    await fx_store.append(f"deployment-{uuid.uuid4()}", 0, [newer], Metadata())
    result = run_cli("rebuild", "deployments", database_url=fx_database_url,
                     kafka=fx_kafka_bootstrap, prefix=fx_topic_prefix)
    assert result.returncode == 1
    assert "unknown event type 'deployment.requested' (schema version 2)" in result.stderr
    assert "Traceback" not in result.stderr


async def test_cli_lists_dead_letters_and_rejects_unknown_handlers(
        fx_store: EventStore, fx_database_url: str, fx_kafka_bootstrap: str,
        fx_topic_prefix: str) -> None:
    empty = run_cli("dead-letters", "list", database_url=fx_database_url,
                    kafka=fx_kafka_bootstrap, prefix=fx_topic_prefix)
    assert empty.returncode == 0 and "no parked events" in empty.stdout

    await fx_store.append("deployment-9", 0, [opened()], Metadata())
    (event,) = await fx_store.read_stream("deployment-9")
    _, value, headers = kafka_format.encode(event)
    engine = database_engine(fx_database_url)
    async with engine.begin() as conn:
        await park(conn, handler="im", event=event, topic="t", partition=0, offset=3,
                   payload=value, headers=headers, attempts=5, error="IM said no")
        assert (await conn.execute(text("SELECT count(*) FROM dead_letters"))).scalar() == 1
    await engine.dispose()

    listed = run_cli("dead-letters", "list", database_url=fx_database_url,
                     kafka=fx_kafka_bootstrap, prefix=fx_topic_prefix)
    assert listed.returncode == 0
    assert "deployment-9" in listed.stdout and "IM said no" in listed.stdout

    unknown = run_cli("dead-letters", "retry", "no-such-handler",
                      database_url=fx_database_url, kafka=fx_kafka_bootstrap,
                      prefix=fx_topic_prefix)
    assert unknown.returncode != 0
    assert "no handler named 'no-such-handler'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


async def test_cli_verify_and_export(fx_system: bootstrap.System, fx_databases: TestDatabases,
                                     fx_database_url: str, fx_kafka_bootstrap: str,
                                     fx_topic_prefix: str, tmp_path: Path) -> None:
    for i in range(3):
        await create_deployment(fx_system, i)
    intact = run_cli("verify", database_url=fx_database_url, kafka=fx_kafka_bootstrap,
                     prefix=fx_topic_prefix)
    assert intact.returncode == 0, intact.stderr
    assert "hash chains intact: 3 events in 3 streams" in intact.stdout

    exported = tmp_path / "log.jsonl"
    result = run_cli("export", "--output", str(exported), database_url=fx_database_url,
                     kafka=fx_kafka_bootstrap, prefix=fx_topic_prefix)
    assert result.returncode == 0, result.stderr
    assert verify_export(exported.read_bytes().splitlines()) is None

    superuser = await asyncpg.connect(fx_databases.admin_url_for(fx_database_url))
    try:
        await superuser.execute("SET session_replication_role = replica")
        await superuser.execute(
            "UPDATE events SET data = jsonb_set(data, '{user_group}', '\"forged\"') "
            "WHERE stream_id = $1", f"deployment-{deployment_id(1)}")
    finally:
        await superuser.close()
    tampered = run_cli("verify", database_url=fx_database_url, kafka=fx_kafka_bootstrap,
                       prefix=fx_topic_prefix)
    assert tampered.returncode == 1
    assert f"stream deployment-{deployment_id(1)} version 1" in tampered.stdout
    assert "hash mismatch" in tampered.stdout


class RecordingHandler:
    """A real handler whose effect is a row: it failed before, and now works."""

    NAME = "recording"
    HANDLES = frozenset({"deployment.requested"})

    def __init__(self) -> None:
        self.handled: list[str] = []

    async def handle(self, event: RecordedEvent, decoded: object) -> None:
        self.handled.append(event.event_id)


async def test_cli_retries_parked_events_in_order(
        fx_system: bootstrap.System, fx_database_url: str, fx_kafka_bootstrap: str,
        fx_topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = RecordingHandler()
    build = bootstrap.build

    async def build_with_handler(settings: Settings, **options: Any) -> bootstrap.System:
        system = await build(settings, **options)
        system.handlers.append((handler, ["deployment"]))
        return system

    monkeypatch.setattr(bootstrap, "build", build_with_handler)
    for index in range(2):
        await create_deployment(fx_system, index)
    stream = f"deployment-{deployment_id(0)}"
    parked = await fx_system.store.read_stream(stream)
    async with fx_system.engine.begin() as conn:
        for offset, event in enumerate(parked):
            _, value, headers = kafka_format.encode(event)
            await park(conn, handler=handler.NAME, event=event, topic="t", partition=0,
                       offset=offset, payload=value, headers=headers, attempts=5,
                       error="IM was down")

    env = {"ORCH_DATABASE_URL": fx_database_url, "ORCH_KAFKA_BOOTSTRAP": fx_kafka_bootstrap,
           "ORCH_TOPIC_PREFIX": fx_topic_prefix}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    status = await asyncio.to_thread(cli.main, ["dead-letters", "retry", handler.NAME])

    assert status == 0
    assert handler.handled == [e.event_id for e in parked]
    assert await list_dead_letters(fx_system.engine, handler.NAME) == []


def test_json_settings_must_be_objects_of_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_CONFIGURATION", '{"dashboard": "https://dash.example"}')
    monkeypatch.setenv("ORCH_RSE_SITES", '{"INFN_T1": "infn.openstack/region-1"}')
    settings = Settings.from_env()
    assert settings.configuration == {"dashboard": "https://dash.example"}
    assert settings.rse_sites == {"INFN_T1": "infn.openstack/region-1"}
    for value in ('["infn.openstack"]', '{"INFN_T1": 1}', "not json"):
        monkeypatch.setenv("ORCH_RSE_SITES", value)
        with pytest.raises(SystemExit, match="ORCH_RSE_SITES must be a JSON object of strings"):
            Settings.from_env()
