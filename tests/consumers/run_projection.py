"""A projection runner in its own process, for the crash test.

    python -m tests.consumers.run_projection --database-url URL --bootstrap HOST:PORT \\
        --topics T1,T2 --group-prefix P [--pause-at-batch B --pause-after N]

With --pause-at-batch, the B-th applied batch stops after N events, prints PAUSED and
hangs inside its open transaction, so a SIGKILL from the test lands mid-batch.
SIGTERM stops the runner cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Container, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore.consumers import ProjectionRunner
from eventstore.records import RecordedEvent
from orchestrator.settings import database_engine
from tests.consumers.support import consumer_settings, counter_totals
from tests.eventstore.sample_events import registry


class PausingCounterTotals:
    """CounterTotals, but one chosen batch hangs half way through (a stand-in for a slow
    apply that a crash interrupts)."""

    NAME = counter_totals.NAME
    VERSION = counter_totals.VERSION
    HANDLES: Container[str] = counter_totals.HANDLES

    def __init__(self, pause_at_batch: int | None, pause_after: int) -> None:
        self.pause_at_batch = pause_at_batch
        self.pause_after = pause_after
        self.batches = 0

    def tables(self, version: int) -> list[Table]:
        return counter_totals.tables(version)

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        await counter_totals.apply(conn, event, decoded, tables)

    async def apply_batch(self, conn: AsyncConnection,
                          items: Sequence[tuple[RecordedEvent, Any]],
                          tables: Sequence[Table]) -> None:
        self.batches += 1
        for number, (event, decoded) in enumerate(items, start=1):
            await self.apply(conn, event, decoded, tables)
            if self.batches == self.pause_at_batch and number == self.pause_after:
                print("PAUSED", flush=True)
                await asyncio.Event().wait()  # until the test kills us


async def main(args: argparse.Namespace) -> None:
    engine = database_engine(args.database_url)
    projection = PausingCounterTotals(args.pause_at_batch, args.pause_after)
    runner = ProjectionRunner(
        projection, engine=engine, bootstrap_servers=args.bootstrap,
        topics=args.topics.split(","), version=1, registry=registry,
        settings=consumer_settings(args.group_prefix, max_batch=args.max_batch))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("STARTED", flush=True)
    try:
        await runner.run(stop)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True)
    parser.add_argument("--group-prefix", required=True)
    parser.add_argument("--max-batch", type=int, default=40)
    parser.add_argument("--pause-at-batch", type=int, default=None)
    parser.add_argument("--pause-after", type=int, default=5)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(parser.parse_args()))
