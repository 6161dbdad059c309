"""Reading the whole log in a test, after writing it.

Readers only see events below the no-skip horizon, which is cluster-wide: any transaction
still open anywhere in the Postgres cluster (another test's, a benchmark's) holds back
events that are already committed. A test that reads "everything it wrote" therefore
waits, bounded, until every committed event has become readable.
"""

from __future__ import annotations

import asyncio
import time

from eventstore.records import LogPosition, RecordedEvent
from eventstore.store import EventStore


async def all_events(store: EventStore, within: float = 60) -> list[RecordedEvent]:
    """Every committed event in log order, waiting for them to be final."""
    total = await store.count_after(LogPosition.start())
    deadline = time.monotonic() + within
    events: list[RecordedEvent] = []
    after = LogPosition.start()
    while len(events) < total:
        batch = await store.read_all(after, limit=5000)
        if not batch:
            if time.monotonic() > deadline:
                raise TimeoutError("committed events never got final")
            await asyncio.sleep(0.02)
            continue
        events.extend(batch)
        after = batch[-1].log_position
    return events
