"""A projection runner killed with SIGKILL mid-batch loses nothing and repeats nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.consumers import end_offsets, stored_offsets, topics_for, wait_until_caught_up
from eventstore.projection import create_tables, versioned_tables
from eventstore.rebuild import replay
from eventstore.store import EventStore
from orchestrator.settings import ROOT
from tests.consumers.support import (
    LogPublisher,
    counter_totals,
    create_topics,
    expected_totals,
    rows,
    write_counters,
)
from tests.event_log import all_events
from tests.eventstore.sample_events import registry

CONSUMER = "projection.counter_totals.v1"


async def start_runner(database_url: str, bootstrap: str, topics: list[str], prefix: str,
                       log_file: Path, *pause: str) -> asyncio.subprocess.Process:
    with log_file.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.consumers.run_projection",
            "--database-url", database_url, "--bootstrap", bootstrap,
            "--topics", ",".join(topics), "--group-prefix", prefix, *pause,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=stderr)
    return process


async def line_from(process: asyncio.subprocess.Process, expected: str,
                    within: float = 60) -> None:
    assert process.stdout is not None
    async with asyncio.timeout(within):
        while True:
            line = (await process.stdout.readline()).decode().strip()
            if line == expected:
                return
            if not line and process.stdout.at_eof():
                raise AssertionError(f"runner exited ({await process.wait()}) before {expected}")


async def test_killed_mid_batch_the_runner_resumes_to_what_a_rebuild_gives(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_database_url: str,
        fx_kafka_bootstrap: str, fx_topic_prefix: str, tmp_path: Path) -> None:
    topics = topics_for(fx_topic_prefix, ["counter"])
    await create_topics(fx_kafka_bootstrap, topics, 3)
    await write_counters(fx_store, streams=10, increments=590, seed=11)
    async with LogPublisher(fx_store, fx_kafka_bootstrap, fx_topic_prefix) as publisher:
        total = await publisher.publish()
    (live,) = versioned_tables(counter_totals, 1)
    log_file = tmp_path / "runner.log"

    crashing = await start_runner(fx_database_url, fx_kafka_bootstrap, topics, fx_topic_prefix,
                                  log_file, "--pause-at-batch", "3", "--pause-after", "5")
    try:
        await line_from(crashing, "PAUSED")
        # Two batches are committed, the third is half applied in an open transaction.
        async with fx_engine.connect() as conn:
            committed = sum((await stored_offsets(conn, CONSUMER)).values())
            visible = (await conn.execute(select(func.sum(live.c.increments + 1)))).scalar()
        assert 0 < committed < total
        assert visible == committed  # one row per opened + one per increment applied
    finally:
        os.kill(crashing.pid, signal.SIGKILL)
        assert await crashing.wait() == -signal.SIGKILL

    restarted = await start_runner(fx_database_url, fx_kafka_bootstrap, topics,
                                   fx_topic_prefix, log_file)
    try:
        await line_from(restarted, "STARTED")
        ends = await end_offsets(fx_kafka_bootstrap, topics)
        await wait_until_caught_up(fx_engine, CONSUMER, ends, within=90)
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert await restarted.wait() == 0

    # The same projection rebuilt from the log, from scratch, into version 2.
    rebuilt_tables = versioned_tables(counter_totals, 2)
    async with fx_engine.begin() as conn:
        await create_tables(conn, rebuilt_tables)
    await replay(counter_totals, store=fx_store, engine=fx_engine, version=2,
                 registry=registry, record_position=False)
    expected = expected_totals(await all_events(fx_store))
    assert await rows(fx_engine, rebuilt_tables[0]) == expected
    assert await rows(fx_engine, live) == expected
