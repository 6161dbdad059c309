"""Prometheus metrics, refreshed from the database and the running components
at scrape time (so they are right whichever process did the work)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from eventstore.consumers import end_offsets
from eventstore.relay import KafkaRelay, relay_lag
from eventstore.store import EventStore


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_appended = Gauge(
            "orchestrator_events_appended", "Events in the log (appended since the start)",
            registry=self.registry)
        self.relay_lag = Gauge(
            "orchestrator_relay_lag_events", "Events in the log not yet published to Kafka",
            registry=self.registry)
        self.relay_active = Gauge(
            "orchestrator_relay_active", "1 when this process holds the relay lock",
            registry=self.registry)
        self.consumer_lag = Gauge(
            "orchestrator_consumer_lag_messages", "Kafka messages a consumer has not applied",
            ["consumer", "topic", "partition"], registry=self.registry)
        self.handler_failures = Gauge(
            "orchestrator_handler_failed_attempts",
            "Failed handler attempts recorded on events that are parked now",
            ["handler"], registry=self.registry)
        self.parked = Gauge(
            "orchestrator_parked_events", "Dead-lettered events waiting for an operator",
            ["handler"], registry=self.registry)
        self.parked_messages = Gauge(
            "orchestrator_parked_messages", "Kafka messages that could not be decoded",
            registry=self.registry)

    async def refresh(self, store: EventStore, relay: KafkaRelay | None,
                      kafka_bootstrap: str | None = None) -> None:
        async with store.pool.acquire() as conn:
            self.events_appended.set(
                await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
            self.parked.clear()
            self.handler_failures.clear()
            for row in await conn.fetch(
                    "SELECT handler, count(*), sum(attempts) FROM dead_letters "
                    "WHERE status <> 'done' GROUP BY handler"):
                self.parked.labels(row[0]).set(row[1])
                self.handler_failures.labels(row[0]).set(row[2])
            offsets = await conn.fetch(
                "SELECT consumer, topic, partition, next_offset FROM consumer_offsets")
            self.parked_messages.set(await conn.fetchval("SELECT count(*) FROM parked_messages"))
        self.relay_lag.set(await relay_lag(store))
        self.relay_active.set(1 if relay is not None and relay.stats.holds_lock else 0)
        # Lag from what consumers stored in Postgres against Kafka's end offsets: right
        # whichever process consumes, and what a restarted consumer would resume from.
        self.consumer_lag.clear()
        if kafka_bootstrap and offsets:
            ends = await end_offsets(kafka_bootstrap, sorted({r["topic"] for r in offsets}))
            for row in offsets:
                end = ends.get((row["topic"], row["partition"]))
                if end is not None:
                    self.consumer_lag.labels(row["consumer"], row["topic"],
                                             str(row["partition"])).set(
                        max(0, end - row["next_offset"]))
