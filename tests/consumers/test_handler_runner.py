"""Side-effect handlers: retries with backoff, ordered dead letters, retry, inbox, replay guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.consumers import HandlerRunner, topics_for
from eventstore.dead_letters import (
    Backoff,
    ReplayGuardError,
    attempt,
    list_dead_letters,
    retry_dead_letters,
)
from eventstore.projection import replaying
from eventstore.records import RecordedEvent
from eventstore.store import EventStore
from tests.consumers.support import (
    LogPublisher,
    Running,
    append,
    consumer_settings,
    create_topics,
    unique,
)
from tests.event_log import all_events
from tests.eventstore.sample_events import CounterIncremented, incremented, opened, registry

FAST = Backoff(initial=0.01, factor=2, max=0.02, attempts=3)


class RecordingHandler:
    """Records every call; fails (like a flaky remote) on events with a poisoned note."""

    NAME = "recorder"
    HANDLES = frozenset({"counter.opened", "counter.incremented"})

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (stream, note or "opened")
        self.poisoned: set[str] = set()

    async def handle(self, event: RecordedEvent, decoded: Any) -> None:
        note = decoded.note if isinstance(decoded, CounterIncremented) else "opened"
        self.calls.append((event.stream_id, note))
        if note in self.poisoned:
            raise RuntimeError(f"remote refused {note}")

    def notes(self, stream: str) -> list[str]:
        return [note for s, note in self.calls if s == stream]


@pytest.fixture(name="fx_publisher")
async def fixture_publisher(fx_store: EventStore, fx_kafka_bootstrap: str,
                            fx_topic_prefix: str) -> AsyncIterator[LogPublisher]:
    # One partition: both streams share it, so "other streams go on" is about order
    # within a partition, not partitions being independent.
    await create_topics(fx_kafka_bootstrap, topics_for(fx_topic_prefix, ["counter"]), 1)
    async with LogPublisher(fx_store, fx_kafka_bootstrap, fx_topic_prefix) as publisher:
        yield publisher


@pytest.fixture(name="fx_handler_runner")
def fixture_handler_runner(fx_engine: AsyncEngine, fx_kafka_bootstrap: str,
                           fx_topic_prefix: str) -> Callable[..., HandlerRunner]:
    def make(handler: RecordingHandler, **overrides: Any) -> HandlerRunner:
        options: dict[str, Any] = {
            "engine": fx_engine, "bootstrap_servers": fx_kafka_bootstrap,
            "topics": topics_for(fx_topic_prefix, ["counter"]), "registry": registry,
            "backoff": FAST, "settings": consumer_settings(fx_topic_prefix)}
        options.update(overrides)
        return HandlerRunner(handler, **options)

    return make


async def test_backoff_waits_grow_by_the_factor_up_to_the_cap() -> None:
    assert Backoff(initial=1, factor=2, max=5, attempts=5).delays() == [1, 2, 4, 5]
    assert Backoff(attempts=1).delays() == []


async def test_a_failing_event_is_retried_then_parks_its_stream_while_others_go_on(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_handler_runner: Callable[..., HandlerRunner]) -> None:
    a, b = unique("counter"), unique("counter")
    handler = RecordingHandler()
    handler.poisoned = {"a2"}
    for stream, event in [(a, opened("a")), (b, opened("b")), (a, incremented(1, "a1")),
                          (b, incremented(1, "b1")), (a, incremented(1, "a2")),
                          (b, incremented(1, "b2")), (a, incremented(1, "a3")),
                          (b, incremented(1, "b3"))]:
        await append(fx_store, stream, event)
    await fx_publisher.publish()
    runner = fx_handler_runner(handler)

    async with Running(runner) as running:
        await running.caught_up()
        assert handler.notes(a) == ["opened", "a1", "a2", "a2", "a2"]  # 3 attempts, then parked
        assert handler.notes(b) == ["opened", "b1", "b2", "b3"]
        # b2 came after a2 in the partition: it waited for a2's retries, not for a3.
        last_a2 = max(i for i, call in enumerate(handler.calls) if call == (a, "a2"))
        assert handler.calls.index((b, "b2")) == last_a2 + 1
        parked = await list_dead_letters(fx_engine, "recorder")
        assert [(d.stream_id, d.attempts) for d in parked] == [(a, 3), (a, 0)]
        assert "remote refused a2" in parked[0].last_error
        assert "parked behind" in parked[1].last_error
        # A later event of the parked stream is parked too, without being tried.
        await append(fx_store, a, incremented(1, "a4"))
        await append(fx_store, b, incremented(1, "b4"))
        await fx_publisher.publish()
        await running.caught_up()
        assert handler.notes(a)[-1] == "a2"
        assert handler.notes(b)[-1] == "b4"
        assert len(await list_dead_letters(fx_engine, "recorder", stream_id=a)) == 3
        assert runner.stats.dead_lettered == 1
        assert runner.stats.parked_behind == 2
        assert runner.stats.failed_attempts == 3

        # The remote recovers; the operator retries: the stream's events run in order.
        handler.poisoned.clear()
        report = await retry_dead_letters(fx_engine, handler, a, registry=registry)
        assert (report.succeeded, report.failed, report.still_parked) == (3, {}, 0)
        assert handler.notes(a)[-3:] == ["a2", "a3", "a4"]
        assert await list_dead_letters(fx_engine, "recorder") == []
        done = await list_dead_letters(fx_engine, "recorder", include_done=True)
        assert [d.status for d in done] == ["done"] * 3

        # The stream is unparked: the runner handles its new events again.
        await append(fx_store, a, incremented(1, "a5"))
        await fx_publisher.publish()
        await running.caught_up()
        assert handler.notes(a)[-1] == "a5"

    async with fx_engine.connect() as conn:
        inbox = (await conn.execute(text(
            "SELECT count(*) FROM handler_inbox WHERE handler = 'recorder'"))).scalar()
    assert inbox == len(await all_events(fx_store))


async def test_a_retry_stops_a_stream_at_its_first_failure_and_keeps_the_rest_parked(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_handler_runner: Callable[..., HandlerRunner]) -> None:
    a, c = unique("counter"), unique("counter")
    handler = RecordingHandler()
    handler.poisoned = {"a1", "c1"}
    await append(fx_store, a, opened("a"), incremented(1, "a1"), incremented(1, "a2"),
                 incremented(1, "a3"))
    await append(fx_store, c, opened("c"), incremented(1, "c1"), incremented(1, "c2"))
    await fx_publisher.publish()
    runner = fx_handler_runner(handler)
    async with Running(runner) as running:
        await running.caught_up()
    assert len(await list_dead_letters(fx_engine, "recorder")) == 5

    handler.poisoned = {"a2"}  # a1 and c1 now work, a2 still fails
    report = await retry_dead_letters(fx_engine, handler, registry=registry)
    assert report.succeeded == 3  # a1, c1, c2
    assert list(report.failed) == [a]
    assert "remote refused a2" in report.failed[a]
    assert report.still_parked == 2
    left = await list_dead_letters(fx_engine, "recorder")
    assert [(d.stream_id, d.attempts) for d in left] == [(a, 0 + 1), (a, 0)]
    assert handler.notes(a)[-2:] == ["a1", "a2"]  # a3 was not tried after a2 failed
    assert handler.notes(c)[-2:] == ["c1", "c2"]


async def test_the_inbox_skips_events_redelivered_after_lost_offsets(
        fx_store: EventStore, fx_engine: AsyncEngine, fx_publisher: LogPublisher,
        fx_handler_runner: Callable[..., HandlerRunner]) -> None:
    for _ in range(5):
        await append(fx_store, unique("counter"), opened(), incremented(2, "x"))
    await fx_publisher.publish()
    handler = RecordingHandler()
    async with Running(fx_handler_runner(handler)) as running:
        await running.caught_up()
    assert len(handler.calls) == 10

    # Lose the offsets: the next runner starts at the beginning and gets all again.
    async with fx_engine.begin() as conn:
        await conn.execute(text("DELETE FROM consumer_offsets WHERE consumer = 'handler.recorder'"))
    again = fx_handler_runner(handler)
    async with Running(again) as running:
        await running.caught_up()
    assert len(handler.calls) == 10
    assert again.stats.already_handled == 10
    assert again.stats.handled == 0


async def test_handlers_refuse_to_run_inside_a_replay(fx_store: EventStore) -> None:
    stream = unique("counter")
    await append(fx_store, stream, opened())
    (event,) = await fx_store.read_stream(stream)
    handler = RecordingHandler()
    with replaying(), pytest.raises(ReplayGuardError):
        await attempt(handler, event, registry.decode_recorded(event), FAST)
    assert handler.calls == []
    outcome = await attempt(handler, event, registry.decode_recorded(event), FAST)
    assert outcome.handled
