"""The replicator when things go wrong: Rucio down (a closed loopback port) or answering
5xx (a fake peer, the one thing the real server cannot be made to do on demand), and a
crash between Rucio's answer and the record. Each test drives its own replicator over a
system that has no Rucio configured (so no other replicator interferes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from domain import replications as rep
from domain.identity import Actor
from handlers.rucio_client import Did, RucioClient
from handlers.rucio_replicator import FollowPolicy, RucioReplicator
from orchestrator.bootstrap import ReplicationsReader
from tests.api.support import TEMPLATE
from tests.http_server import free_port, serve
from tests.replications.support import REPLICATION_DECIDER, DataHarness
from tests.rucio.conftest import RucioPeer, Scenario
from tests.rucio.support import poll

OWNER = Actor(issuer="https://iam.example/", subject="data-owner")
FAST = FollowPolicy(initial=0.05, factor=2.0, maximum=0.2)


async def rucio_503(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """A fake Rucio whose every answer is 503 with Rucio's error headers."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"exceptionclass", b"DatabaseException"),
        (b"exceptionmessage", b"database is down")]})
    await send({"type": "http.response.body",
                "body": b'{"ExceptionClass": "DatabaseException", '
                        b'"ExceptionMessage": "database is down"}'})


@asynccontextmanager
async def unavailable_rucio(kind: str, peer: RucioPeer) -> AsyncIterator[RucioClient]:
    if kind == "closed_port":
        url = f"http://127.0.0.1:{free_port()}"
        async with RucioClient(url, account=peer.account, username=peer.username,
                               password=peer.password, timeout=2) as client:
            yield client
        return
    async with serve(rucio_503) as fake:
        async with RucioClient(str(fake.base_url), account=peer.account,
                               username=peer.username, password=peer.password) as client:
            yield client


async def request(harness: DataHarness, scenario: Scenario, replication_id: str) -> None:
    await harness.run(rep.replication_stream(replication_id), REPLICATION_DECIDER,
                      rep.RequestReplication(replication_id=replication_id, actor=OWNER,
                                             dids=(str(scenario.dataset),),
                                             rse_expression=scenario.target))


def our_rules(rules: list[Any], account: str, expression: str) -> list[str]:
    return [r.id for r in rules if r.account == account and r.rse_expression == expression]


@pytest.mark.parametrize("outage", ["closed_port", "answers_503"])
async def test_rucio_unavailable_is_retried_then_exactly_one_rule_is_made(
        bare: DataHarness, fx_rucio_peer: RucioPeer, fx_rucio: RucioClient,
        fx_scenario: Scenario, outage: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="handlers.rucio_replicator")
    replication_id = f"down-{outage}-{fx_scenario.scope}"
    index = ReplicationsReader(bare.system.engine)
    await request(bare, fx_scenario, replication_id)

    async with unavailable_rucio(outage, fx_rucio_peer) as down:
        replicator = RucioReplicator(bare.system.commands, down, index, follow=FAST)
        replicator.ensure_driven(replication_id)

        def retries() -> int:
            return sum(1 for r in caplog.records
                       if replication_id in r.getMessage() and "retrying" in r.getMessage())

        async def count() -> int:
            return retries()

        await poll("three failed tries", count, lambda n: n >= 3, within_s=120)
        await replicator.close()
    assert "password" not in caplog.text and fx_rucio_peer.password not in caplog.text
    waiting = await bare.replication(replication_id)
    assert waiting.status is rep.ReplicationStatus.REQUESTED  # nothing lost, nothing failed
    assert await bare.event_types(rep.replication_stream(replication_id)) == [
        "replication.requested"]

    # Rucio is back: a new replicator (as after a restart) finishes the job, once.
    back = RucioReplicator(bare.system.commands, fx_rucio, index, follow=FAST)
    try:
        back.ensure_driven(replication_id)
        done = await bare.wait_replication(replication_id, "rule created",
                                           lambda s: s.current_generation.has_rules)
    finally:
        await back.close()
    rules = await fx_rucio.list_did_rules(fx_scenario.dataset)
    assert our_rules(rules, fx_rucio.account, fx_scenario.target) == list(
        done.current_generation.rule_ids)
    assert not done.generations[0].removed


class CrashAfterCreate(RucioClient):
    """The real client, but the process "dies" right after Rucio made the rule and before
    the replicator could record its id."""

    created: list[str]

    async def add_replication_rule(self, dids: Any, **options: Any) -> list[str]:
        ids = await super().add_replication_rule(dids, **options)
        self.created = ids
        raise asyncio.CancelledError("killed between Rucio's answer and the record")


async def test_a_crash_after_rucio_made_the_rule_leaves_exactly_one_rule(
        bare: DataHarness, fx_rucio_peer: RucioPeer, fx_rucio: RucioClient,
        fx_scenario: Scenario) -> None:
    replication_id = f"crash-{fx_scenario.scope}"
    index = ReplicationsReader(bare.system.engine)
    await request(bare, fx_scenario, replication_id)
    async with CrashAfterCreate(fx_rucio_peer.url, account=fx_rucio_peer.account,
                                username=fx_rucio_peer.username,
                                password=fx_rucio_peer.password) as crashing:
        first = RucioReplicator(bare.system.commands, crashing, index, follow=FAST)
        first.ensure_driven(replication_id)

        async def running() -> list[str]:
            return first.driving()

        await poll("the first replicator died", running, lambda ids: ids == [], within_s=120)
        [orphan] = crashing.created
    assert await bare.event_types(rep.replication_stream(replication_id)) == [
        "replication.requested"]
    assert our_rules(await fx_rucio.list_did_rules(fx_scenario.dataset), fx_rucio.account,
                     fx_scenario.target) == [orphan]

    restarted = RucioReplicator(bare.system.commands, fx_rucio, index, follow=FAST)
    try:
        restarted.ensure_driven(replication_id)
        state = await bare.wait_replication(replication_id, "rule recorded",
                                            lambda s: s.current_generation.has_rules)
    finally:
        await restarted.close()
    assert state.current_generation.rule_ids == (orphan,)  # the orphan was adopted
    events = await bare.system.store.read_stream(rep.replication_stream(replication_id))
    created = [bare.system.registry.decode_recorded(e) for e in events
               if e.type == "replication.rule_created"]
    assert len(created) == 1 and isinstance(created[0], rep.ReplicationRuleCreated)
    assert created[0].adopted
    assert our_rules(await fx_rucio.list_did_rules(fx_scenario.dataset), fx_rucio.account,
                     fx_scenario.target) == [orphan]
    assert (await fx_rucio.get_replication_rule(orphan)).did == Did(
        fx_scenario.dataset.scope, fx_scenario.dataset.name)


async def test_a_restarted_replicator_resumes_unsettled_replications(
        bare: DataHarness, fx_rucio: RucioClient, fx_scenario: Scenario) -> None:
    replication_id = f"resume-{fx_scenario.scope}"
    index = ReplicationsReader(bare.system.engine)
    await request(bare, fx_scenario, replication_id)
    await poll("the view lists it as unsettled", index.unsettled,
               lambda ids: replication_id in ids, within_s=120)
    replicator = RucioReplicator(bare.system.commands, fx_rucio, index, follow=FAST)
    stop = asyncio.Event()
    running = asyncio.create_task(replicator.run_background(stop))
    try:
        state = await bare.wait_replication(replication_id, "rule created by the resumed driver",
                                            lambda s: s.current_generation.has_rules)
    finally:
        stop.set()
        await running
    assert state.status is rep.ReplicationStatus.REPLICATING


async def test_without_rucio_data_requirements_are_refused_and_data_routes_absent(
        bare: DataHarness) -> None:
    alice = bare.user()
    refused = await bare.request("POST", "/deployments", alice, json={
        "template": TEMPLATE, "userGroup": "g1",
        "dataRequirements": [{"dids": ["s:a"], "rseExpression": "X"}]})
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("dataRequirements: data management is not "
                                                "configured")
    absent = await bare.request("GET", "/data/replications", alice)
    assert absent.status_code == 404
