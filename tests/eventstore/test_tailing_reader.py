"""The tailing reader never skips an event whose transaction commits late."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict

import asyncpg

from eventstore.records import LogPosition, Metadata, RecordedEvent
from eventstore.store import EventStore
from tests.eventstore.sample_events import incremented

STREAMS = [f"counter-{uuid.uuid4()}" for _ in range(40)]
FAST_WRITERS = 8
SLOW_WRITERS = 2
EVENTS_PER_WRITER = 2100  # 10 writers x 2100 = 21,000 events


async def fast_writer(store: EventStore, seed: int) -> int:
    rng = random.Random(seed)
    written = 0
    while written < EVENTS_PER_WRITER:
        size = min(rng.randint(1, 3), EVENTS_PER_WRITER - written)
        await store.append(rng.choice(STREAMS), None, [incremented(seed) for _ in range(size)],
                           Metadata(actor_subject=f"writer-{seed}"))
        written += size
    return written


async def slow_writer(store: EventStore, seed: int) -> int:
    """Holds its transaction open after inserting, so its rows commit late, after
    rows with higher positions written meanwhile by the fast writers."""
    rng = random.Random(seed)
    written = 0
    async with store.pool.acquire() as conn:
        while written < EVENTS_PER_WRITER:
            size = min(rng.randint(20, 60), EVENTS_PER_WRITER - written)
            events = [incremented(seed) for _ in range(size)]
            stream = rng.choice(STREAMS)
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT append_events($1, 'counter', NULL, $2, $3, $4, $5::jsonb[], "
                        "$6::jsonb, NULL)", stream, [uuid.UUID(e.event_id) for e in events],
                        [e.type for e in events], [1] * size, [e.data.decode() for e in events],
                        json.dumps({"actor_subject": f"slow-{seed}"}))
                    await asyncio.sleep(rng.uniform(0.005, 0.05))
            except asyncpg.UniqueViolationError:
                continue  # lost the race for the stream's next version: try again
            written += size
    return written


async def test_concurrent_appenders_with_a_tailing_reader_lose_nothing(
        fx_store: EventStore) -> None:
    seen: list[RecordedEvent] = []
    total = (FAST_WRITERS + SLOW_WRITERS) * EVENTS_PER_WRITER
    stop = asyncio.Event()

    async def reader() -> None:
        async for batch in fx_store.tail(LogPosition.start(), batch_size=500,
                                         idle_wait=0.05, stop=stop):
            seen.extend(batch)
            if len(seen) >= total:
                return

    reading = asyncio.create_task(reader())
    try:
        writers = [fast_writer(fx_store, seed) for seed in range(FAST_WRITERS)]
        writers += [slow_writer(fx_store, 100 + seed) for seed in range(SLOW_WRITERS)]
        written = await asyncio.gather(*writers)
        assert sum(written) == total
        await asyncio.wait_for(reading, timeout=120)
    finally:
        stop.set()
        reading.cancel()

    # Every event exactly once ...
    positions = [e.position for e in seen]
    assert len(positions) == total
    assert len(set(positions)) == total
    async with fx_store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == total
    # ... each stream in version order with no version missing ...
    versions: dict[str, list[int]] = defaultdict(list)
    for event in seen:
        versions[event.stream_id].append(event.version)
    for stream, stream_versions in versions.items():
        assert stream_versions == list(range(1, len(stream_versions) + 1)), stream
    # ... and the log order the reader followed is the one a later reader sees.
    replay = []
    after = LogPosition.start()
    while batch := await fx_store.read_all(after, limit=5000):
        replay.extend(e.position for e in batch)
        after = batch[-1].log_position
    assert replay == positions
    # Late commits really happened: the reader did not see positions in order.
    assert positions != sorted(positions)
