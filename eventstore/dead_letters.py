"""Side-effect handlers' failure policy: retries with backoff, the inbox, ordered dead letters.

A handler is at-least-once and idempotent by construction. An event it has finished
is recorded in ``handler_inbox`` so a redelivery skips it. An event that keeps
failing after the configured attempts is parked in ``dead_letters``, and from then
on every later event of the same stream is parked behind it (Axon's sequenced dead
letter queue) until an operator retries them, in order, with ``retry_dead_letters``.
Other streams carry on.

Parking and the "is this stream parked?" check take a per-(handler, stream) advisory
lock, so a retry that empties a stream's dead letters and a runner parking a new
event of that stream cannot interleave and strand the new event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Container, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import kafka_format
from eventstore.projection import is_replaying, prepare_event
from eventstore.records import RecordedEvent
from eventstore.registry import EventRegistry

log = logging.getLogger(__name__)


class Handler(Protocol):
    """A side-effect handler: effects go through ports it was built with."""

    @property
    def NAME(self) -> str: ...

    @property
    def HANDLES(self) -> Container[str]: ...

    def handle(self, event: RecordedEvent, decoded: Any) -> Awaitable[None]:
        """Perform the event's side effect (an ``async def``); raise to retry."""
        ...


def handler_consumer(name: str) -> str:
    """The handler's consumer name (its Kafka group id and consumer_offsets key)."""
    return f"handler.{name}"


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """``attempts`` tries in all, waiting initial, initial*factor, ... (capped) between."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    attempts: int = 5

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial < 0 or self.factor < 1 or self.max < 0:
            raise ValueError(f"invalid backoff {self!r}")

    def delays(self) -> list[float]:
        """The waits between attempts (one fewer than attempts)."""
        return [min(self.max, self.initial * self.factor ** n) for n in range(self.attempts - 1)]


class ReplayGuardError(RuntimeError):
    """A side-effect handler was about to run inside a replay or rebuild."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    handled: bool
    attempts: int
    error: str | None = None
    interrupted: bool = False


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:4000]


async def attempt(handler: Handler, event: RecordedEvent, decoded: Any, backoff: Backoff, *,
                  stop: asyncio.Event | None = None) -> Outcome:
    """Run the handler with retries; ``interrupted`` if ``stop`` was set while waiting."""
    if is_replaying():
        raise ReplayGuardError(f"handler {handler.NAME} must not run during a replay")
    delays: list[float | None] = [*backoff.delays(), None]
    error = ""
    for number, delay in enumerate(delays, start=1):
        try:
            await handler.handle(event, decoded)
        except Exception as failure:
            error = describe(failure)
            log.warning("handler %s failed on %s (%s, attempt %d/%d): %s", handler.NAME,
                        event.event_id, event.type, number, backoff.attempts, error)
        else:
            return Outcome(handled=True, attempts=number)
        if delay is None:
            break
        if stop is None:
            await asyncio.sleep(delay)
            continue
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            continue
        return Outcome(handled=False, attempts=number, error=error, interrupted=True)
    return Outcome(handled=False, attempts=backoff.attempts, error=error)


# ---------------------------------------------------------------- storage

def headers_json(headers: Sequence[tuple[str, bytes]]) -> str:
    """Kafka headers as JSON, keeping the exact bytes (hex) next to a readable text."""
    return msgspec.json.encode([
        {"key": key, "value": value.decode("utf-8", "replace"), "hex": value.hex()}
        for key, value in headers]).decode()


async def lock_stream(conn: AsyncConnection, handler: str, stream_id: str) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 7))"),
                       {"key": f"dead_letters/{handler}/{stream_id}"})


async def first_open_dead_letter(conn: AsyncConnection, handler: str,
                                 stream_id: str) -> int | None:
    result = await conn.execute(text(
        "SELECT min(id) FROM dead_letters WHERE handler = :handler AND stream_id = :stream "
        "AND status <> 'done'"), {"handler": handler, "stream": stream_id})
    value = result.scalar_one()
    return int(value) if value is not None else None


async def is_handled(conn: AsyncConnection, handler: str, event_id: str) -> bool:
    result = await conn.execute(text(
        "SELECT 1 FROM handler_inbox WHERE handler = :handler AND event_id = :event_id"),
        {"handler": handler, "event_id": uuid.UUID(event_id)})
    return result.first() is not None


async def mark_handled(conn: AsyncConnection, handler: str, event_id: str) -> None:
    await conn.execute(text(
        "INSERT INTO handler_inbox (handler, event_id) VALUES (:handler, :event_id) "
        "ON CONFLICT DO NOTHING"), {"handler": handler, "event_id": uuid.UUID(event_id)})


async def park(conn: AsyncConnection, *, handler: str, event: RecordedEvent, topic: str,
               partition: int, offset: int, payload: bytes,
               headers: Sequence[tuple[str, bytes]], attempts: int, error: str) -> None:
    """Park an event for a handler (call with the stream's lock held)."""
    await conn.execute(text(
        "INSERT INTO dead_letters (handler, stream_id, event_id, position, type, topic, "
        "kafka_partition, kafka_offset, payload, headers, attempts, last_error) VALUES "
        "(:handler, :stream, :event_id, :position, :type, :topic, :partition, :offset, "
        ":payload, CAST(:headers AS jsonb), :attempts, :error) "
        "ON CONFLICT (handler, event_id) DO NOTHING"),
        {"handler": handler, "stream": event.stream_id, "event_id": uuid.UUID(event.event_id),
         "position": event.position, "type": event.type, "topic": topic,
         "partition": partition, "offset": offset, "payload": payload,
         "headers": headers_json(headers), "attempts": attempts, "error": error})


# ---------------------------------------------------------------- admin view

class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    handler: str
    stream_id: str
    event_id: str
    position: int
    type: str
    topic: str
    partition: int
    offset: int
    attempts: int
    last_error: str
    status: str
    parked_at: datetime
    updated_at: datetime


class RetryReport(msgspec.Struct, kw_only=True):
    succeeded: int = 0
    failed: dict[str, str] = msgspec.field(default_factory=dict)
    """stream id -> the error that stopped its retry (its events stay parked)."""
    still_parked: int = 0


_SELECT_DEAD_LETTERS = """
SELECT id, handler, stream_id, event_id::text AS event_id, position, type, topic,
       kafka_partition, kafka_offset, attempts, last_error, status, parked_at, updated_at
FROM dead_letters
"""


async def list_dead_letters(engine: AsyncEngine, handler: str | None = None, *,
                            stream_id: str | None = None,
                            include_done: bool = False) -> list[DeadLetter]:
    """Dead letters in parking order (per stream, that is the order they will retry in)."""
    conditions = [] if include_done else ["status <> 'done'"]
    params: dict[str, Any] = {}
    if handler is not None:
        conditions.append("handler = :handler")
        params["handler"] = handler
    if stream_id is not None:
        conditions.append("stream_id = :stream")
        params["stream"] = stream_id
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    async with engine.connect() as conn:
        result = await conn.execute(text(_SELECT_DEAD_LETTERS + where + " ORDER BY id"), params)
        return [DeadLetter(id=r.id, handler=r.handler, stream_id=r.stream_id,
                           event_id=r.event_id, position=r.position, type=r.type, topic=r.topic,
                           partition=r.kafka_partition, offset=r.kafka_offset,
                           attempts=r.attempts, last_error=r.last_error, status=r.status,
                           parked_at=r.parked_at, updated_at=r.updated_at) for r in result]


async def retry_dead_letters(engine: AsyncEngine, handler: Handler, stream_id: str | None = None,
                             *, registry: EventRegistry | None = None,
                             backoff: Backoff | None = None) -> RetryReport:
    """Re-run a handler's parked events, per stream in order.

    A stream stops at its first event that fails again (it and the rest stay parked);
    other streams carry on. Once a stream has no open dead letter, the live runner
    handles its new events normally again. ``backoff`` defaults to one attempt each.
    """
    backoff = backoff or Backoff(attempts=1)
    name = handler.NAME
    report = RetryReport()
    stream_filter = " AND stream_id = :stream" if stream_id is not None else ""
    async with engine.connect() as conn:
        result = await conn.execute(text(
            "SELECT stream_id FROM dead_letters WHERE handler = :handler AND status <> 'done'"
            + stream_filter + " GROUP BY stream_id ORDER BY min(id)"),
            {"handler": name, "stream": stream_id})
        streams = [row.stream_id for row in result]
    for stream in streams:
        error = await _retry_stream(engine, handler, stream, registry, backoff, report)
        if error is not None:
            report.failed[stream] = error
    report.still_parked = len(await list_dead_letters(engine, name, stream_id=stream_id))
    return report


async def _retry_stream(engine: AsyncEngine, handler: Handler, stream: str,
                        registry: EventRegistry | None, backoff: Backoff,
                        report: RetryReport) -> str | None:
    name = handler.NAME
    while True:
        async with engine.begin() as conn:
            await lock_stream(conn, name, stream)
            row = (await conn.execute(text(
                "SELECT id, payload FROM dead_letters WHERE handler = :handler "
                "AND stream_id = :stream AND status <> 'done' ORDER BY id LIMIT 1"),
                {"handler": name, "stream": stream})).first()
        if row is None:
            return None
        event = kafka_format.decode(bytes(row.payload))
        async with engine.connect() as conn:
            already = await is_handled(conn, name, event.event_id)
        outcome = Outcome(handled=True, attempts=0)
        if not already:
            try:
                _, decoded = prepare_event(handler.HANDLES, registry, event)
            except Exception as failure:
                outcome = Outcome(handled=False, attempts=1, error=describe(failure))
            else:
                outcome = await attempt(handler, event, decoded, backoff)
        async with engine.begin() as conn:
            await lock_stream(conn, name, stream)
            if outcome.handled:
                await mark_handled(conn, name, event.event_id)
            await conn.execute(text(
                "UPDATE dead_letters SET status = :status, attempts = attempts + :attempts, "
                "last_error = coalesce(:error, last_error), updated_at = now() WHERE id = :id"),
                {"status": "done" if outcome.handled else "parked",
                 "attempts": outcome.attempts, "error": outcome.error, "id": row.id})
        if not outcome.handled:
            return outcome.error or "failed"
        report.succeeded += 1
