"""The provider command path: observations and operator commands, appended to the provider
and quota-usage streams.

Shared by the admin API and (through the port ``handlers.feeder_ingest.ObservationSink``,
wired by the bootstrap) by the Feeder consumer. It is ``CommandService.execute`` with one
addition: the folded state of each stream is cached with its version. A provider stream holds
thousands of catalogue events, and every scan of every provider re-observes all of them, so
re-reading and re-folding the stream per observation would dominate a rescan; the cache is
checked against the stream's current version (one indexed query) and dropped on any
mismatch or conflict, so it never decides on stale state.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

from domain.providers import (
    ObserveProvider,
    ProviderCommand,
    ProviderEvent,
    ProviderState,
    decide,
    fold,
    initial_state,
    stream_id,
    usage_command,
    usage_stream_id,
)
from domain.providers.usage import (
    QuotaUsageEvent,
    QuotaUsageState,
    decide_usage,
    fold_usage,
)
from eventstore.records import ConcurrencyError, Metadata
from eventstore.registry import EventRegistry
from eventstore.store import EventStore

S = TypeVar("S")
E = TypeVar("E", bound=msgspec.Struct)

@dataclass(frozen=True)
class Aggregate(Generic[S, E]):
    """An aggregate's pure functions with a batch ``fold``: the provider state copies its
    collections once per fold, so folding a long stream event by event would be quadratic."""

    initial_state: Callable[[], S]
    fold: Callable[[Sequence[E], S], S]
    decide: Callable[..., Sequence[E]]


PROVIDER: Aggregate[ProviderState, ProviderEvent] = Aggregate(
    initial_state=initial_state, fold=lambda events, state: fold(events, state),
    decide=decide)
"""The provider aggregate (``provider-<provider id>``)."""

USAGE: Aggregate[QuotaUsageState, QuotaUsageEvent] = Aggregate(
    initial_state=QuotaUsageState, fold=lambda events, state: fold_usage(events, state),
    decide=decide_usage)
"""The quota-usage aggregate (``quotausage-<provider id>``)."""


@dataclass(frozen=True)
class IngestionResult:
    """What one command appended (empty lists: nothing changed)."""

    provider_id: str
    events: list[ProviderEvent]
    usage_events: list[QuotaUsageEvent]
    state: ProviderState

    @property
    def event_types(self) -> list[str]:
        return [type(e).__struct_config__.tag for e in self.events]  # type: ignore[misc]

    @property
    def usage_event_types(self) -> list[str]:
        return [type(e).__struct_config__.tag for e in self.usage_events]  # type: ignore[misc]


class _Cached(Generic[S], msgspec.Struct):
    state: S
    version: int


class ProviderIngestion:
    """Executes provider commands with a bounded per-stream state cache."""

    def __init__(self, store: EventStore, registry: EventRegistry, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 cache_size: int = 2000) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Cached[Any]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def observe(self, command: ObserveProvider, metadata: Metadata) -> IngestionResult:
        """Diff the observation into the provider stream, its usage into the usage stream.

        The provider stream goes first: an invalid observation raises before any usage is
        recorded. The two appends are separate transactions; a crash in between leaves the
        usage unrecorded until the next scan reports it again (usage is telemetry).
        """
        events, state = await self.execute(stream_id(command.provider_id), PROVIDER,
                                           command, metadata)
        usage = usage_command(command)
        usage_events: list[QuotaUsageEvent] = []
        if usage.samples:
            usage_events, _ = await self.execute(usage_stream_id(command.provider_id),
                                                 USAGE, usage, metadata)
        return IngestionResult(command.provider_id, events, usage_events, state)

    async def command(self, command: ProviderCommand, metadata: Metadata) -> IngestionResult:
        """An operator command (register, status, alias, priority) on the provider stream."""
        events, state = await self.execute(stream_id(command.provider_id), PROVIDER,
                                           command, metadata)
        return IngestionResult(command.provider_id, events, [], state)

    async def execute(self, stream: str, aggregate: Aggregate[S, E], command: Any,
                      metadata: Metadata, *, conflict_retries: int = 3) -> tuple[list[E], S]:
        # One command per stream at a time in this process: concurrent scans of one provider
        # would only conflict and retry.
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:
            for attempt in range(conflict_retries + 1):
                state, version = await self._load(stream, aggregate)
                events = list(aggregate.decide(command, state, now=self.clock()))
                if not events:
                    return [], state
                try:
                    result = await self.store.append(
                        stream, version,
                        [self.registry.encode(e, str(uuid.uuid4())) for e in events], metadata)
                except ConcurrencyError:
                    self._cache.pop(stream, None)
                    if attempt == conflict_retries:
                        raise
                    continue
                state = aggregate.fold(events, state)
                self._remember(stream, state, result.version)
                return events, state
        raise AssertionError("unreachable")

    async def _load(self, stream: str, aggregate: Aggregate[S, Any]) -> tuple[S, int]:
        current = await self.store.stream_version(stream)
        cached = self._cache.get(stream)
        if cached is not None and cached.version == current:
            self._cache.move_to_end(stream)
            return cached.state, current
        recorded = await self.store.read_stream(stream)
        state = aggregate.fold([self.registry.decode_recorded(r) for r in recorded],
                               aggregate.initial_state())
        version = recorded[-1].version if recorded else 0
        self._remember(stream, state, version)
        return state, version

    def _remember(self, stream: str, state: Any, version: int) -> None:
        self._cache[stream] = _Cached(state=state, version=version)
        self._cache.move_to_end(stream)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def request_metadata(issuer: str, subject: str, *, request_id: str | None = None,
                     correlation_id: str | None = None,
                     reason: str | None = None) -> Metadata:
    return Metadata(actor_issuer=issuer, actor_subject=subject, request_id=request_id,
                    correlation_id=correlation_id, reason=reason or None)


__all__: Sequence[str] = ["PROVIDER", "USAGE", "Aggregate", "IngestionResult",
                          "ProviderIngestion", "request_metadata"]
