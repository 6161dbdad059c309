"""The one command path, shared by the API and the handlers:
load the stream, fold it, decide, append with the version that was read.

A conflict (another writer got in between) is retried against fresh state, as
Equinox's Transact does; a domain refusal raised by `decide` propagates.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

from eventstore.records import AppendResult, ConcurrencyError, Metadata
from eventstore.registry import EventRegistry
from eventstore.store import EventStore

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E", bound=msgspec.Struct)


@dataclass(frozen=True)
class Decider(Generic[C, S, E]):
    """An aggregate's pure functions, as the domain exposes them."""

    initial_state: Callable[[], S]
    evolve: Callable[[S, E], S]
    decide: Callable[..., Sequence[E]]  # decide(command, state, *, now) -> events


@dataclass(frozen=True)
class CommandResult(Generic[S, E]):
    events: list[E]
    state: S
    append: AppendResult | None  # None when the command changed nothing


def utc_now() -> datetime:
    return datetime.now(UTC)


class CommandService:
    def __init__(self, store: EventStore, registry: EventRegistry, *,
                 clock: Callable[[], datetime] = utc_now,
                 new_event_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.new_event_id = new_event_id

    async def load(self, stream_id: str, decider: Decider[Any, S, E]) -> tuple[S, int]:
        state = decider.initial_state()
        version = 0
        for recorded in await self.store.read_stream(stream_id):
            state = decider.evolve(state, self.registry.decode_recorded(recorded))  # type: ignore[arg-type]
            version = recorded.version
        return state, version

    async def execute(
        self,
        stream_id: str,
        decider: Decider[C, S, E],
        command: C,
        metadata: Metadata,
        *,
        idempotency_key: str | None = None,
        conflict_retries: int = 1,
    ) -> CommandResult[S, E]:
        for attempt in range(conflict_retries + 1):
            state, version = await self.load(stream_id, decider)
            events = list(decider.decide(command, state, now=self.clock()))
            if not events:
                return CommandResult(events, state, None)
            try:
                result = await self.store.append(
                    stream_id, version,
                    [self.registry.encode(e, self.new_event_id()) for e in events],
                    metadata, idempotency_key=idempotency_key)
            except ConcurrencyError:
                if attempt == conflict_retries:
                    raise
                continue
            for event in events:
                state = decider.evolve(state, event)
            return CommandResult(events, state, result)
        raise AssertionError("unreachable")
