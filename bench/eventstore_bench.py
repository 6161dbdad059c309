"""Event log benchmarks (issue 2): appends, relay, rebuild, end-to-end visibility."""

from __future__ import annotations

import asyncio
import time
import uuid

from eventstore.records import Metadata
from eventstore.store import EventStore, create_pool
from tests.eventstore.sample_events import incremented

META = Metadata(actor_issuer="https://iam.example", actor_subject="bench",
                correlation_id="bench")


async def append_single(store: EventStore, writers: int, seconds: float) -> float:
    """Single-event commands, each on its own stream position (expected version)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal done
        stream, version = f"bench-{uuid.uuid4()}", 0
        while time.perf_counter() < deadline:
            await store.append(stream, version, [incremented()], META)
            version += 1
            done += 1
            if version == 200:  # keep streams short, as deployment streams are
                stream, version = f"bench-{uuid.uuid4()}", 0

    start = time.perf_counter()
    await asyncio.gather(*[writer() for _ in range(writers)])
    return done / (time.perf_counter() - start)


async def append_batched(store: EventStore, writers: int, batch: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await store.append(f"bench-{uuid.uuid4()}", 0,
                               [incremented() for _ in range(batch)], META)
            done += batch

    start = time.perf_counter()
    await asyncio.gather(*[writer() for _ in range(writers)])
    return done / (time.perf_counter() - start)


async def run_append(url: str, repeats: int) -> list[dict[str, object]]:
    pool = await create_pool(url, min_size=16, max_size=20)
    store = EventStore(pool)
    single = [await append_single(store, 16, 5.0) for _ in range(repeats)]
    batched = [await append_batched(store, 4, 500, 5.0) for _ in range(repeats)]
    await pool.close()
    from bench.common import median

    return [
        {"name": "append_single_16w", "value": round(median(single)), "unit": "commands/s",
         "target": ">= 3000", "runs": [round(x) for x in single]},
        {"name": "append_batched", "value": round(median(batched)), "unit": "events/s",
         "target": ">= 50000", "runs": [round(x) for x in batched]},
    ]
