"""Publishes the event log to Kafka, in log order, one topic per category.

One active relay at a time: it holds a Postgres advisory lock for as long as it
runs; a second instance waits for the lock. The relay's checkpoint (the last
log position it has seen acknowledged) lives in Postgres.

Exactly-once publishing across broker outages: events go to explicit
partitions (the Java client's murmur2 of the stream id) through an idempotent
producer, in log order, so a partition never has a gap. After any failure, and
on start, the relay reads the last record of every partition and skips events
that partition already holds. Nothing is lost, nothing is reordered, and a
restart does not duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from eventstore import kafka_format
from eventstore.records import LogPosition, RecordedEvent
from eventstore.store import EventStore

log = logging.getLogger("orchestrator.relay")

# pg_advisory_lock key for "the relay": a fixed, documented number.
RELAY_LOCK_KEY = 0x5E1A7


def partition_for(stream_id: str, partitions: int) -> int:
    """The partition Kafka's Java client would choose for this key."""
    return int((murmur2(stream_id.encode()) & 0x7FFFFFFF) % partitions)


@dataclass
class RelayStats:
    published: int = 0
    skipped_already_published: int = 0
    failures: int = 0
    checkpoint: LogPosition = field(default_factory=LogPosition.start)
    holds_lock: bool = False


class KafkaRelay:
    def __init__(
        self,
        store: EventStore,
        *,
        bootstrap: str,
        topic_prefix: str,
        partitions: int = 4,
        name: str = "kafka",
        batch_size: int = 5000,
        idle_wait: float = 0.02,
        retry_backoff: float = 0.5,
        max_retry_backoff: float = 10.0,
        on_batch: Callable[[list[RecordedEvent]], None] | None = None,
    ) -> None:
        self.store = store
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.name = name
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.on_batch = on_batch
        self.stats = RelayStats()
        self._known_topics: set[str] = set()
        # Highest (tx_id, position) already in each partition, from the probe.
        self._published: dict[TopicPartition, LogPosition] = {}

    # -------------------------------------------------------------- lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Wait for the relay lock, then publish until `stop` is set."""
        lock_conn = await self.store.pool.acquire()
        try:
            while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                if await _wait(stop, 1.0):
                    return
            self.stats.holds_lock = True
            log.info("relay holds the lock", extra={"relay": self.name})
            await self._publish_until_stopped(stop, lock_conn)
        finally:
            self.stats.holds_lock = False
            if not lock_conn.is_closed():
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
            await self.store.pool.release(lock_conn)

    async def _publish_until_stopped(self, stop: asyncio.Event, lock_conn: object) -> None:
        backoff = self.retry_backoff
        while not stop.is_set():
            producer = None
            try:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all",
                    linger_ms=2, max_batch_size=1 << 20, request_timeout_ms=15000)
                await producer.start()
                checkpoint = await self._load_checkpoint()
                self._known_topics.clear()
                self._published.clear()
                await self._publish_from(checkpoint, producer, stop)
                return
            except (KafkaError, OSError, TimeoutError) as error:
                self.stats.failures += 1
                log.warning("relay lost the broker; will resume from its checkpoint",
                            extra={"relay": self.name, "error": repr(error),
                                   "retry_in_s": backoff})
                if await _wait(stop, backoff):
                    return
                backoff = min(backoff * 2, self.max_retry_backoff)
            finally:
                if producer is not None:
                    try:
                        await producer.stop()
                    except (KafkaError, OSError):
                        pass

    async def _publish_from(self, checkpoint: LogPosition, producer: AIOKafkaProducer,
                            stop: asyncio.Event) -> None:
        self.stats.checkpoint = checkpoint
        async for batch in self.store.tail(checkpoint, batch_size=self.batch_size,
                                           idle_wait=self.idle_wait, stop=stop):
            await self._publish_batch(batch, producer)
            await self._save_checkpoint(batch[-1].log_position, len(batch))
            if self.on_batch is not None:
                self.on_batch(batch)

    async def _publish_batch(self, batch: list[RecordedEvent],
                             producer: AIOKafkaProducer) -> None:
        # Group per partition, keeping log order inside each: a partition's records
        # go out in one or more producer batches, in order.
        per_partition: dict[TopicPartition, list[RecordedEvent]] = {}
        for event in batch:
            topic = kafka_format.topic_for(self.topic_prefix, event.category)
            await self._ensure_topic(topic)
            tp = TopicPartition(topic, partition_for(event.stream_id, self.partitions))
            already = self._published.get(tp)
            if already is not None and event.log_position <= already:
                self.stats.skipped_already_published += 1
                continue
            per_partition.setdefault(tp, []).append(event)
        sends = []
        for tp, events in per_partition.items():
            kafka_batch = producer.create_batch()
            for event in events:
                key, value, headers = kafka_format.encode(event)
                if kafka_batch.append(key=key, value=value, timestamp=None,
                                      headers=headers) is None:
                    sends.append(await producer.send_batch(kafka_batch, tp.topic,
                                                           partition=tp.partition))
                    kafka_batch = producer.create_batch()
                    kafka_batch.append(key=key, value=value, timestamp=None, headers=headers)
            sends.append(await producer.send_batch(kafka_batch, tp.topic, partition=tp.partition))
        # All acknowledged, or the whole batch is retried after a fresh probe.
        await asyncio.gather(*sends)
        self.stats.published += sum(len(events) for events in per_partition.values())

    # -------------------------------------------------------------- topics
    async def _ensure_topic(self, topic: str) -> None:
        if topic in self._known_topics:
            return
        await ensure_topics(self.bootstrap, [topic], self.partitions)
        self._known_topics.add(topic)
        await self._probe(topic)

    async def _probe(self, topic: str) -> None:
        """Read the last record of each partition: what is already published."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    group_id=None)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(self.partitions)]
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                if ends[tp] == 0:
                    continue
                consumer.seek(tp, ends[tp] - 1)
                records = await consumer.getmany(tp, timeout_ms=10000)
                for record in records.get(tp, []):
                    envelope = kafka_format.decode(record.value or b"")
                    self._published[tp] = envelope.log_position
        finally:
            await consumer.stop()

    # -------------------------------------------------------------- checkpoint
    async def _load_checkpoint(self) -> LogPosition:
        async with self.store.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT tx_id::text::bigint, position FROM relay_checkpoints WHERE name = $1",
                self.name)
        return LogPosition(row[0], row[1]) if row else LogPosition.start()

    async def _save_checkpoint(self, position: LogPosition, count: int) -> None:
        async with self.store.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO relay_checkpoints (name, tx_id, position, published) "
                "VALUES ($1, $2::text::xid8, $3, $4) ON CONFLICT (name) DO UPDATE SET "
                "tx_id = excluded.tx_id, position = excluded.position, "
                "published = relay_checkpoints.published + excluded.published, "
                "updated_at = now()", self.name, str(position.tx_id), position.position, count)
        self.stats.checkpoint = position


# Readiness probes and metrics scrapes count at most this many unpublished events.
LAG_COUNT_LIMIT = 1_000_000


async def relay_lag(store: EventStore, name: str = "kafka", *,
                    limit: int = LAG_COUNT_LIMIT) -> int:
    """Events in the log the relay has not published yet (at most `limit`)."""
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT tx_id::text::bigint, position FROM relay_checkpoints WHERE name = $1", name)
    checkpoint = LogPosition(row[0], row[1]) if row else LogPosition.start()
    return await store.count_after(checkpoint, limit=limit)


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    """Create topics explicitly (the broker does not auto-create)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1)
                     for t in missing])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return False
