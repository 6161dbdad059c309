"""The Feeder consumer: Federation-Registry-Feeder Kafka messages become provider observations.

The Feeder publishes one JSON message per provider x region x project connection (v1.2.0 to
1.4.0, ``provider-model.md`` 4.6) on an external topic (``ORCH_FEEDER_TOPIC``; not one of our
event topics, so not our envelope). Each message is parsed strictly and turned into the
``ObserveProvider`` command of its scope, which the ``ObservationSink`` port (the bootstrap
wires the API's ``ProviderIngestion``) diffs into the provider stream: only real changes are
appended, so a redelivered message appends nothing.

Failure policy:

- a malformed message (not JSON, wrong shape, unsupported version, inconsistent content) or
  one the provider aggregate refuses is parked in ``parked_messages`` with its raw bytes and
  the reason, and the offset moves past it in the same transaction: never lost, never fatal;
- anything else (database or broker away) is retried with backoff until it goes through or the
  consumer is stopped; the offset does not move, so nothing is skipped.

Offsets live in Postgres (``consumer_offsets``, consumer ``feeder.ingest``) as for every other
consumer; the append and the offset are two transactions, which is safe because observing the
same message twice decides nothing the second time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.identity import system_actor
from domain.providers import ObserveProvider, ProviderError, canonical_provider_id
from domain.providers.sources import observe_feeder_messages, parse_feeder_message
from eventstore.consumers import ConsumedMessage, ConsumerSettings, ExternalTopicConsumer
from eventstore.records import Metadata

log = logging.getLogger(__name__)

ACTOR = system_actor("feeder-ingest")
CONSUMER_NAME = "feeder.ingest"


class ObservationSink(Protocol):
    """Where observations go (``api.providers.ingestion.ProviderIngestion.observe``)."""

    async def observe(self, command: ObserveProvider, metadata: Metadata) -> Any: ...


class ProviderDirectory(Protocol):
    """The provider registered under a registry name, when not the canonical id."""

    async def provider_for_registry_name(self, name: str, provider_type: str) -> str | None: ...


@dataclass
class FeederStats:
    observed: int = 0
    """Messages observed (whether or not they changed anything)."""
    changed: int = 0
    """Messages that appended at least one event."""
    parked: int = 0
    failed_attempts: int = 0


class FeederConsumer(ExternalTopicConsumer):
    """Consumes the Feeder topic into provider observations (see the module docstring)."""

    def __init__(self, sink: ObservationSink, *, engine: AsyncEngine, bootstrap_servers: str,
                 topic: str, settings: ConsumerSettings | None = None,
                 directory: ProviderDirectory | None = None, group_id: str | None = None,
                 retry_initial: float = 0.5, retry_max: float = 30.0) -> None:
        super().__init__(engine=engine, bootstrap_servers=bootstrap_servers, topics=[topic],
                         consumer_name=CONSUMER_NAME, settings=settings, group_id=group_id)
        self.sink = sink
        self.directory = directory
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.stats = FeederStats()

    async def handle(self, message: ConsumedMessage, stop: asyncio.Event) -> bool:
        """True when the message is done with (observed or parked); False when stopped."""
        try:
            command = await self._command(message)
        except ProviderError as error:
            await self._park(message, error.message)
            return True
        metadata = Metadata(actor_issuer=ACTOR.issuer, actor_subject=ACTOR.subject,
                            reason="Feeder message",
                            correlation_id=_scan_id(message))
        delay = self.retry_initial
        while True:
            try:
                result = await self.sink.observe(command, metadata)
            except ProviderError as error:
                await self._park(message, error.message)
                return True
            except Exception:
                self.stats.failed_attempts += 1
                log.exception("%s: observing %s failed; retrying in %.1fs", self.consumer_name,
                              _scan_id(message), delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return False
                except TimeoutError:
                    delay = min(delay * 2, self.retry_max)
                    continue
            self.stats.observed += 1
            if getattr(result, "events", None) or getattr(result, "usage_events", None):
                self.stats.changed += 1
            return True

    async def _command(self, message: ConsumedMessage) -> ObserveProvider:
        if message.value is None:
            raise ProviderError("no value (tombstone)")
        parsed = parse_feeder_message(message.value)
        provider_id = None
        if self.directory is not None:
            provider_id = await self.directory.provider_for_registry_name(
                parsed.provider_name, parsed.provider_type.value)
        return observe_feeder_messages(
            [parsed], actor=ACTOR,
            provider_id=provider_id or canonical_provider_id(parsed.provider_name,
                                                             parsed.provider_type),
            scan_id=_scan_id(message))

    async def _park(self, message: ConsumedMessage, reason: str) -> None:
        await self.park(message, reason)
        self.stats.parked += 1
        log.warning("%s: parked %s: %s", self.consumer_name, _scan_id(message), reason[:500])


def _scan_id(message: ConsumedMessage) -> str:
    """Where the observation came from: the Kafka coordinates of its message."""
    return f"kafka:{message.topic}/{message.partition}/{message.offset}"
