"""Kafka consumers that write to Postgres: projection runners and side-effect handler runners.

Postgres is the truth for where a consumer stands. Offsets live in
``consumer_offsets`` (consumer, topic, partition) -> next offset; on every partition
assignment a runner seeks to them (else to the beginning). Offsets are also committed
to Kafka after each batch, best effort, so the usual lag tooling shows something, but
nothing reads them back.

Projections (exactly-once effect): per fetched batch ONE transaction locks the
partitions' offset rows (FOR UPDATE), skips messages below the stored offsets (a
redelivery, or a second consumer racing on the same partition), applies the rest,
parks undecodable messages in ``parked_messages``, stores the next offsets, commits.
The last log position seen per partition is stored too: the relay publishes in log
order, so a message at or below it is a republished duplicate and is skipped; a
rebuilt version starts with that floor at the position its log replay reached.

Handlers (at-least-once, idempotent): each event is handled outside any transaction,
with retries and backoff; success records it in ``handler_inbox`` and advances the
offset in one transaction, final failure parks it in ``dead_letters`` and advances
the offset in one transaction. Handler offsets are in Postgres too, for the same
reason: parking an event and moving past it must commit together or a crash between
the two loses the event (Kafka offsets cannot join a Postgres transaction).

External topics (``ExternalTopicConsumer``: messages that are not our envelope, e.g. the
Feeder's): the same Kafka side and offsets in Postgres; a subclass handles each message in
order per partition (idempotently: at-least-once), parks what it can never process in
``parked_messages`` with the offset move in one transaction, and the offsets of handled
messages are stored after each partition's run.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore import kafka_format
from eventstore.dead_letters import (
    Backoff,
    Handler,
    attempt,
    describe,
    first_open_dead_letter,
    handler_consumer,
    headers_json,
    is_handled,
    lock_stream,
    mark_handled,
    park,
)
from eventstore.projection import (
    Projection,
    ProjectionVersions,
    apply_events,
    create_tables,
    payload_registry,
    prepare_event,
    versioned_tables,
)
from eventstore.records import LogPosition, RecordedEvent, UnknownEventType
from eventstore.registry import EventRegistry

__all__ = [
    "Backoff",
    "ConsumedMessage",
    "ConsumerSettings",
    "ExternalTopicConsumer",
    "Handler",
    "HandlerRunner",
    "HandlerStats",
    "Partition",
    "ProjectionRunner",
    "ProjectionStats",
    "ProjectionWriter",
    "end_offsets",
    "projection_consumer",
    "run_live_projection",
    "stored_offsets",
    "topics_for",
    "wait_until_caught_up",
]

log = logging.getLogger(__name__)

Partition = tuple[str, int]
"""(topic, partition)"""

_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock


class ConsumerSettings(msgspec.Struct, frozen=True, kw_only=True):
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    fetch_max_wait_ms: int = 20
    """How long the broker holds a fetch for data: small for low latency."""
    metadata_max_age_ms: int = 30_000
    """How soon a topic created after start is noticed."""
    max_batch: int = 1000
    """Most records per fetched batch (one Postgres transaction for projections)."""
    poll_timeout_ms: int = 100
    """How long an idle poll waits: also how fast a stop request is noticed."""
    failure_backoff_initial: float = 0.2
    failure_backoff_max: float = 30.0
    """A projection batch that fails (database down, bug) is retried with this backoff."""
    version_check_interval: float = 2.0
    """How often a projection runner checks whether its version was retired."""
    client_id: str = "orchestrator"
    group_prefix: str = ""
    """Prepended to default group ids (several deployments or tests on one cluster)."""


def projection_consumer(name: str, version: int) -> str:
    """Consumer name and default group id of one projection version.

    The group id includes the version: during a rebuild the live version and the new
    one consume side by side, and in one group they would split the partitions.
    """
    return f"projection.{name}.v{version}"


def topics_for(prefix: str, categories: Iterable[str]) -> list[str]:
    return [kafka_format.topic_for(prefix, category) for category in categories]


class ConsumedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One Kafka message as the runners see it (kept independent of aiokafka's types)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def partition_key(self) -> Partition:
        return (self.topic, self.partition)

    @classmethod
    def from_record(cls, record: Any) -> ConsumedMessage:
        return cls(topic=record.topic, partition=record.partition, offset=record.offset,
                   key=record.key, value=record.value,
                   headers=tuple((k, bytes(v or b"")) for k, v in (record.headers or ())))


class MalformedMessage(Exception):
    """Not one of our envelopes: parked with its raw bytes, never fatal."""


def decode_message(message: ConsumedMessage) -> RecordedEvent:
    if message.value is None:
        raise MalformedMessage("no value (tombstone)")
    try:
        event = kafka_format.decode(message.value)
        uuid.UUID(event.event_id)
    except (msgspec.MsgspecError, ValueError, TypeError) as error:
        raise MalformedMessage(f"envelope does not decode: {describe(error)}") from None
    if message.key is not None and message.key != event.stream_id.encode():
        raise MalformedMessage(f"key {message.key!r} is not the stream id {event.stream_id!r}")
    return event


# ---------------------------------------------------------------- offsets in Postgres

async def stored_offsets(conn: AsyncConnection, consumer: str,
                         partitions: Iterable[Partition] | None = None) -> dict[Partition, int]:
    """The next offsets a consumer will read, as stored with its effects."""
    result = await conn.execute(text(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = :c"),
        {"c": consumer})
    offsets = {(row.topic, row.partition): int(row.next_offset) for row in result}
    if partitions is None:
        return offsets
    wanted = set(partitions)
    return {key: offset for key, offset in offsets.items() if key in wanted}


@dataclass
class _PartitionState:
    next_offset: int
    log_position: LogPosition | None
    changed: bool = False


def _unnest_params(partitions: Sequence[Partition]) -> dict[str, Any]:
    return {"topics": [t for t, _ in partitions], "partitions": [p for _, p in partitions]}


async def _lock_partitions(conn: AsyncConnection, consumer: str,
                           partitions: Sequence[Partition]) -> dict[Partition, _PartitionState]:
    """Lock (creating if need be) the consumer's offset rows for these partitions.

    The rows are created first, so two transactions racing on a partition nobody has
    consumed yet also serialise on the row (the second sees the first's offsets).
    """
    params = {"c": consumer, **_unnest_params(partitions)}
    await conn.execute(text(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) "
        "SELECT :c, u.t, u.p, 0 FROM unnest(CAST(:topics AS text[]), CAST(:partitions AS int[])) "
        "AS u(t, p) ORDER BY u.t, u.p ON CONFLICT DO NOTHING"), params)
    result = await conn.execute(text(
        "SELECT o.topic, o.partition, o.next_offset, o.log_tx_id::text::bigint AS log_tx_id, "
        "o.log_position FROM consumer_offsets o "
        "JOIN unnest(CAST(:topics AS text[]), CAST(:partitions AS int[])) AS u(t, p) "
        "ON o.topic = u.t AND o.partition = u.p WHERE o.consumer = :c "
        "ORDER BY o.topic, o.partition FOR UPDATE OF o"), params)
    return {(row.topic, row.partition): _PartitionState(
        int(row.next_offset),
        LogPosition(row.log_tx_id, row.log_position) if row.log_position is not None else None)
        for row in result}


async def _save_partitions(conn: AsyncConnection, consumer: str,
                           states: Mapping[Partition, _PartitionState]) -> None:
    changed = sorted(key for key, state in states.items() if state.changed)
    if not changed:
        return
    positions = [states[key].log_position for key in changed]
    await conn.execute(text(
        "UPDATE consumer_offsets o SET next_offset = u.o, "
        "log_tx_id = CAST(u.tx AS xid8), log_position = u.pos, updated_at = now() "
        "FROM unnest(CAST(:topics AS text[]), CAST(:partitions AS int[]), "
        "CAST(:offsets AS bigint[]), CAST(:txs AS text[]), CAST(:positions AS bigint[])) "
        "AS u(t, p, o, tx, pos) "
        "WHERE o.consumer = :c AND o.topic = u.t AND o.partition = u.p"),
        {"c": consumer, **_unnest_params(changed),
         "offsets": [states[key].next_offset for key in changed],
         "txs": [str(p.tx_id) if p is not None else None for p in positions],
         "positions": [p.position if p is not None else None for p in positions]})


async def _advance_offsets(conn: AsyncConnection, consumer: str,
                           offsets: Mapping[Partition, int]) -> None:
    """Move stored offsets forward (never back) without touching anything else."""
    keys = sorted(offsets)
    if not keys:
        return
    await conn.execute(text(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) "
        "SELECT :c, u.t, u.p, u.o FROM unnest(CAST(:topics AS text[]), "
        "CAST(:partitions AS int[]), CAST(:offsets AS bigint[])) AS u(t, p, o) "
        "ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
        "next_offset = greatest(consumer_offsets.next_offset, excluded.next_offset), "
        "updated_at = now()"),
        {"c": consumer, **_unnest_params(keys), "offsets": [offsets[k] for k in keys]})


async def _park_messages(conn: AsyncConnection, consumer: str,
                         parked: Sequence[tuple[ConsumedMessage, str]]) -> None:
    if not parked:
        return
    await conn.execute(text(
        "INSERT INTO parked_messages (consumer, topic, kafka_partition, kafka_offset, key, "
        "payload, headers, reason) VALUES (:c, :topic, :partition, :offset, :key, :payload, "
        "CAST(:headers AS jsonb), :reason) ON CONFLICT DO NOTHING"),
        [{"c": consumer, "topic": m.topic, "partition": m.partition, "offset": m.offset,
          "key": m.key, "payload": m.value, "headers": headers_json(m.headers),
          "reason": reason} for m, reason in parked])


async def _in_transaction_with_retry(engine: AsyncEngine, work: Any) -> Any:
    """Run ``work(conn)`` in a transaction, again on serialization failure or deadlock."""
    for attempt_number in range(1, 11):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except DBAPIError as error:
            sqlstate = (getattr(error.orig, "sqlstate", None)
                        or getattr(error.orig, "pgcode", None))
            if sqlstate not in _RETRYABLE_SQLSTATES or attempt_number == 10:
                raise
            log.info("retrying a transaction after %s", sqlstate)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- Kafka helpers

async def end_offsets(bootstrap_servers: str, topics: Sequence[str]) -> dict[Partition, int]:
    """Every partition's end offset now (topics that do not exist are left out)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        # consumer.topics() drops the partition lists it fetched; keep them.
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in sorted(cluster.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}


async def wait_until_caught_up(engine: AsyncEngine, consumer: str,
                               targets: Mapping[Partition, int], *, within: float = 30.0,
                               poll_interval: float = 0.02) -> None:
    """Poll the stored offsets until every partition reaches its target, or time out."""
    deadline = time.monotonic() + within
    while True:
        async with engine.connect() as conn:
            stored = await stored_offsets(conn, consumer)
        behind = {key: (stored.get(key, 0), target) for key, target in targets.items()
                  if stored.get(key, 0) < target}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{consumer} is behind (stored, target): {behind}")
        await asyncio.sleep(poll_interval)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True if ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: _ConsumerLoop) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._runner._seeked = False
        for tp in revoked:
            self._runner._next_offsets.pop((tp.topic, tp.partition), None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        delay = 0.2
        while True:
            try:
                await self._runner._seek_to_stored(list(assigned))
                return
            except Exception:
                log.exception("%s: cannot read stored offsets; retrying in %.1fs",
                              self._runner.consumer_name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class _ConsumerLoop:
    """The Kafka side shared by both runners: group membership, seeks, polling, lag."""

    start_at: Literal["earliest", "latest"] = "earliest"

    def __init__(self, *, engine: AsyncEngine, bootstrap_servers: str, topics: Sequence[str],
                 group_id: str, consumer_name: str, settings: ConsumerSettings) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self.engine = engine
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(topics)
        self.group_id = group_id
        self.consumer_name = consumer_name
        self.settings = settings
        self.assigned = asyncio.Event()
        self._consumer: Any = None
        self._next_offsets: dict[Partition, int] = {}
        self._lag: dict[Partition, int] = {}
        # aiokafka starts fetching from Kafka's committed offsets while the assignment
        # listener still reads ours: what a poll returns before the seek is dropped.
        self._seeked = False

    def positions(self) -> dict[Partition, int]:
        """Per assigned partition: the next offset this instance will process."""
        return dict(self._next_offsets)

    def lag(self) -> dict[Partition, int]:
        """Per assigned partition: highwater minus the next offset to process."""
        return dict(self._lag)

    async def wait_until_caught_up(self, within: float = 30.0) -> None:
        """Until the stored offsets reach the topics' end offsets as of this call."""
        targets = await end_offsets(self.bootstrap_servers, self.topics)
        await wait_until_caught_up(self.engine, self.consumer_name, targets, within=within)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        await self._before_start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group_id,
            client_id=f"{s.client_id}.{self.consumer_name}", enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms, fetch_max_wait_ms=s.fetch_max_wait_ms,
            metadata_max_age_ms=s.metadata_max_age_ms, max_poll_records=s.max_batch)
        consumer.subscribe(topics=self.topics, listener=_SeekToStoredOffsets(self))
        self._consumer = consumer
        try:
            await consumer.start()
            log.info("%s consuming %s as group %s", self.consumer_name, self.topics,
                     self.group_id)
            while not stop.is_set() and not await self._should_exit():
                records = await consumer.getmany(timeout_ms=s.poll_timeout_ms,
                                                 max_records=s.max_batch)
                if records and not self._seeked:
                    continue
                if records:
                    batch = {(tp.topic, tp.partition): [ConsumedMessage.from_record(r)
                                                        for r in messages]
                             for tp, messages in records.items() if messages}
                    reached = await self._process(batch, stop)
                    for key, offset in reached.items():
                        self._next_offsets[key] = max(offset, self._next_offsets.get(key, 0))
                    await self._commit_to_kafka(reached)
                else:
                    await self._close_gaps()
                self._refresh_lag()
        finally:
            self._consumer = None
            self.assigned.clear()
            await consumer.stop()
            log.info("%s stopped", self.consumer_name)

    async def _before_start(self) -> None:
        return None

    async def _should_exit(self) -> bool:
        return False

    async def _process(self, batch: dict[Partition, list[ConsumedMessage]],
                       stop: asyncio.Event) -> dict[Partition, int]:
        raise NotImplementedError

    async def _seek_to_stored(self, assigned: list[Any]) -> None:
        consumer = self._consumer
        if consumer is None or not assigned:
            self._seeked = True
            return
        keys = [(tp.topic, tp.partition) for tp in assigned]
        async with self.engine.connect() as conn:
            stored = await stored_offsets(conn, self.consumer_name, keys)
        missing = [tp for tp in assigned if (tp.topic, tp.partition) not in stored]
        starts: dict[Any, int] = {}
        if missing:
            starts = await (consumer.beginning_offsets(missing) if self.start_at == "earliest"
                            else consumer.end_offsets(missing))
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition), starts.get(tp))
            if offset is None:
                continue
            consumer.seek(tp, offset)
            self._next_offsets[(tp.topic, tp.partition)] = offset
        log.info("%s assigned %s at %s", self.consumer_name, keys, self._next_offsets)
        self._seeked = True
        self.assigned.set()

    async def _close_gaps(self) -> None:
        """When idle, store positions past offsets that hold no data message.

        Transaction markers and compacted-away records occupy offsets but are never
        returned; without this, the stored offset would stay one short of the end.
        """
        consumer = self._consumer
        advance: dict[Partition, int] = {}
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            known = self._next_offsets.get(key)
            if known is None:
                continue
            try:
                position = int(await asyncio.wait_for(consumer.position(tp), 1.0))
            except Exception:
                continue
            if position > known:
                advance[key] = position
        if advance:
            await self._store_offsets(advance)
            self._next_offsets.update(advance)

    async def _store_offsets(self, offsets: Mapping[Partition, int]) -> None:
        async def work(conn: AsyncConnection) -> None:
            await _advance_offsets(conn, self.consumer_name, offsets)

        await _in_transaction_with_retry(self.engine, work)

    async def _park_and_advance(self, message: ConsumedMessage, reason: str) -> None:
        """Park a message with its raw bytes and move past it, in one transaction."""
        async def work(conn: AsyncConnection) -> None:
            await _park_messages(conn, self.consumer_name, [(message, reason)])
            await _advance_offsets(conn, self.consumer_name,
                                   {message.partition_key: message.offset + 1})

        await _in_transaction_with_retry(self.engine, work)

    async def _commit_to_kafka(self, reached: Mapping[Partition, int]) -> None:
        if not reached:
            return
        try:
            await self._consumer.commit(
                {TopicPartition(t, p): offset for (t, p), offset in reached.items()})
        except Exception as error:  # best effort: Postgres holds the truth
            log.debug("%s: Kafka commit failed: %s", self.consumer_name, error)

    def _refresh_lag(self) -> None:
        consumer = self._consumer
        lag: dict[Partition, int] = {}
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            highwater = consumer.highwater(tp)
            position = self._next_offsets.get(key)
            if highwater is not None and position is not None:
                lag[key] = max(0, int(highwater) - position)
        self._lag = lag


# ---------------------------------------------------------------- external topics

class ExternalTopicConsumer(_ConsumerLoop):
    """Consumes a topic that is not one of ours (no envelope), offsets in Postgres.

    The Kafka side is the runners' (group membership, seeks to the offsets stored under
    ``consumer_name`` in ``consumer_offsets``, lag). Subclasses implement :meth:`handle`,
    called for each message in order within its partition; it must be idempotent, as a
    message handled before a crash is handled again (the offsets of handled messages are
    stored after each partition's run, in a transaction of their own). A message that can
    never be processed is given to :meth:`park`.
    """

    def __init__(self, *, engine: AsyncEngine, bootstrap_servers: str, topics: Sequence[str],
                 consumer_name: str, settings: ConsumerSettings | None = None,
                 group_id: str | None = None) -> None:
        settings = settings or ConsumerSettings()
        super().__init__(engine=engine, bootstrap_servers=bootstrap_servers, topics=topics,
                         group_id=group_id or settings.group_prefix + consumer_name,
                         consumer_name=consumer_name, settings=settings)

    async def handle(self, message: ConsumedMessage, stop: asyncio.Event) -> bool:
        """True when the message is done with (handled or parked); False when ``stop``
        interrupted it: its offset is not stored, so it is consumed again next time."""
        raise NotImplementedError

    async def park(self, message: ConsumedMessage, reason: str) -> None:
        """Keep the message in ``parked_messages`` with its raw bytes and the reason, and
        move the stored offset past it, in one transaction: never lost, never fatal."""
        await self._park_and_advance(message, reason)

    async def _process(self, batch: dict[Partition, list[ConsumedMessage]],
                       stop: asyncio.Event) -> dict[Partition, int]:
        reached: dict[Partition, int] = {}
        for key in sorted(batch):
            done: int | None = None
            for message in batch[key]:
                if not await self.handle(message, stop):
                    break
                done = message.offset + 1
            if done is not None:
                await self._store_offsets({key: done})
                reached[key] = done
            if stop.is_set():
                break
        return reached


# ---------------------------------------------------------------- projections

@dataclass
class ProjectionStats:
    """Counters since the runner started (exported as metrics by the wiring)."""

    batches: int = 0
    applied: int = 0
    ignored: int = 0
    """Known types the projection does not handle."""
    unknown_types: Counter[str] = field(default_factory=Counter)
    """Types this code does not know (a newer writer): skipped live, fatal in a rebuild."""
    redelivered: int = 0
    """Messages below the stored offset: already applied, skipped."""
    duplicates: int = 0
    """Messages at or below the last log position seen (relay republish, rebuild floor)."""
    parked: int = 0
    failing: bool = False
    last_error: str | None = None

    def add(self, other: ProjectionStats) -> None:
        self.batches += other.batches
        self.applied += other.applied
        self.ignored += other.ignored
        self.unknown_types.update(other.unknown_types)
        self.redelivered += other.redelivered
        self.duplicates += other.duplicates
        self.parked += other.parked


class ProjectionWriter:
    """Applies one batch of consumed messages in one transaction: the runner's core.

    Kafka-free, so tests can feed it batches directly. ``start_after`` is the log
    position below which events are already in the tables (a rebuild's replay); by
    default it is read from projection_versions for this version.
    """

    def __init__(self, projection: Projection, *, engine: AsyncEngine, version: int,
                 registry: EventRegistry | None = None,
                 start_after: LogPosition | None = None) -> None:
        self.projection = projection
        self.engine = engine
        self.version = version
        self.registry = payload_registry(projection, registry)
        self.consumer = projection_consumer(projection.NAME, version)
        self.tables = versioned_tables(projection, version)
        self.stats = ProjectionStats()
        self._floor = start_after
        self._prepared = False

    async def prepare(self) -> None:
        """Create the version's tables if need be; read the replay floor."""
        async with self.engine.begin() as conn:
            await create_tables(conn, self.tables)
        if self._floor is None:
            record = await ProjectionVersions(self.engine).get(self.projection.NAME,
                                                               self.version)
            if record is not None:
                self._floor = record.replayed_to
        self._prepared = True

    async def write(self, messages: Sequence[ConsumedMessage]) -> ProjectionStats:
        if not self._prepared:
            await self.prepare()

        async def work(conn: AsyncConnection) -> ProjectionStats:
            return await self._write(conn, messages)

        report: ProjectionStats = await _in_transaction_with_retry(self.engine, work)
        self.stats.add(report)
        return report

    async def _write(self, conn: AsyncConnection,
                     messages: Sequence[ConsumedMessage]) -> ProjectionStats:
        report = ProjectionStats(batches=1)
        partitions = sorted({m.partition_key for m in messages})
        states = await _lock_partitions(conn, self.consumer, partitions)
        items: list[tuple[RecordedEvent, Any]] = []
        parked: list[tuple[ConsumedMessage, str]] = []
        for message in messages:
            state = states[message.partition_key]
            if message.offset < state.next_offset:
                report.redelivered += 1
                continue
            state.next_offset = message.offset + 1
            state.changed = True
            try:
                event = decode_message(message)
            except MalformedMessage as error:
                parked.append((message, str(error)))
                continue
            floor = state.log_position
            if self._floor is not None and (floor is None or self._floor > floor):
                floor = self._floor
            if floor is not None and event.log_position <= floor:
                report.duplicates += 1
                continue
            state.log_position = event.log_position
            try:
                applies, decoded = prepare_event(self.projection.HANDLES, self.registry, event)
            except UnknownEventType:
                report.unknown_types[event.type] += 1
                continue
            except (msgspec.MsgspecError, ValueError, TypeError) as error:
                parked.append((message, f"payload of {event.type} v{event.schema_version} "
                                        f"does not decode: {describe(error)}"))
                continue
            if applies:
                items.append((event, decoded))
            else:
                report.ignored += 1
        await apply_events(conn, self.projection, self.tables, items)
        await _park_messages(conn, self.consumer, parked)
        await _save_partitions(conn, self.consumer, states)
        report.applied = len(items)
        report.parked = len(parked)
        return report


class ProjectionRunner(_ConsumerLoop):
    """Feeds one version of a projection from Kafka; exits when that version is retired."""

    def __init__(self, projection: Projection, *, engine: AsyncEngine, bootstrap_servers: str,
                 topics: Sequence[str], version: int, registry: EventRegistry | None = None,
                 settings: ConsumerSettings | None = None, group_id: str | None = None,
                 start_after: LogPosition | None = None) -> None:
        name = projection_consumer(projection.NAME, version)
        settings = settings or ConsumerSettings()
        super().__init__(engine=engine, bootstrap_servers=bootstrap_servers, topics=topics,
                         group_id=group_id or settings.group_prefix + name, consumer_name=name,
                         settings=settings)
        self.projection = projection
        self.version = version
        self.writer = ProjectionWriter(projection, engine=engine, version=version,
                                       registry=registry, start_after=start_after)
        self._versions = ProjectionVersions(engine)
        self._next_version_check = 0.0

    @property
    def stats(self) -> ProjectionStats:
        return self.writer.stats

    async def _before_start(self) -> None:
        await self.writer.prepare()

    async def _should_exit(self) -> bool:
        now = time.monotonic()
        if now < self._next_version_check:
            return False
        self._next_version_check = now + self.settings.version_check_interval
        if await self._versions.state(self.projection.NAME, self.version) == "retired":
            log.info("%s was retired: stopping", self.consumer_name)
            return True
        return False

    async def _process(self, batch: dict[Partition, list[ConsumedMessage]],
                       stop: asyncio.Event) -> dict[Partition, int]:
        messages = [m for key in sorted(batch) for m in batch[key]]
        delay = self.settings.failure_backoff_initial
        while True:
            try:
                await self.writer.write(messages)
            except Exception as error:
                # A read model stops rather than skip (the Andon cord): retry the same
                # batch until it goes through, and say so on the failing gauge.
                self.stats.failing = True
                self.stats.last_error = describe(error)
                log.exception("%s: batch failed, retrying in %.1fs", self.consumer_name, delay)
                if await _wait(stop, delay):
                    return {}
                delay = min(delay * 2, self.settings.failure_backoff_max)
                continue
            self.stats.failing = False
            return {key: messages[-1].offset + 1 for key, messages in batch.items()}


async def run_live_projection(projection: Projection, stop: asyncio.Event, *,
                              engine: AsyncEngine, bootstrap_servers: str,
                              topics: Sequence[str], registry: EventRegistry | None = None,
                              settings: ConsumerSettings | None = None,
                              poll_interval: float = 2.0) -> None:
    """Keep a runner on whichever version is live, following switches made by rebuilds."""
    versions = ProjectionVersions(engine)
    while not stop.is_set():
        live = await versions.live(projection.NAME)
        if live is None:
            await _wait(stop, poll_interval)
            continue
        runner = ProjectionRunner(projection, engine=engine, bootstrap_servers=bootstrap_servers,
                                  topics=topics, version=live, registry=registry,
                                  settings=settings)
        try:
            await runner.run(stop)
        except Exception:  # broker or database away at start: try again, do not die
            log.exception("%s stopped on an error; restarting", runner.consumer_name)
            await _wait(stop, poll_interval)


# ---------------------------------------------------------------- handlers

@dataclass
class HandlerStats:
    handled: int = 0
    already_handled: int = 0
    """Redelivered events found in the inbox."""
    failed_attempts: int = 0
    dead_lettered: int = 0
    """Events that failed every attempt."""
    parked_behind: int = 0
    """Later events of a stream with an open dead letter."""
    ignored: int = 0
    unknown_types: Counter[str] = field(default_factory=Counter)
    parked_messages: int = 0


class HandlerRunner(_ConsumerLoop):
    """Runs a side-effect handler from Kafka: at-least-once, inbox, ordered dead letters.

    Partitions of a batch are worked concurrently; within a partition, in order. A
    stop request interrupts retries and leaves the current event unacknowledged.
    """

    def __init__(self, handler: Handler, *, engine: AsyncEngine, bootstrap_servers: str,
                 topics: Sequence[str], registry: EventRegistry | None = None,
                 backoff: Backoff | None = None, settings: ConsumerSettings | None = None,
                 group_id: str | None = None,
                 start_at: Literal["earliest", "latest"] = "earliest") -> None:
        name = handler_consumer(handler.NAME)
        settings = settings or ConsumerSettings()
        super().__init__(engine=engine, bootstrap_servers=bootstrap_servers, topics=topics,
                         group_id=group_id or settings.group_prefix + name, consumer_name=name,
                         settings=settings)
        self.handler = handler
        self.registry = registry
        self.backoff = backoff or Backoff()
        self.start_at = start_at
        self.stats = HandlerStats()

    async def _process(self, batch: dict[Partition, list[ConsumedMessage]],
                       stop: asyncio.Event) -> dict[Partition, int]:
        keys = sorted(batch)
        reached = await asyncio.gather(*[self._process_partition(batch[k], stop) for k in keys])
        return {key: offset for key, offset in zip(keys, reached, strict=True)
                if offset is not None}

    async def _process_partition(self, messages: list[ConsumedMessage],
                                 stop: asyncio.Event) -> int | None:
        """Returns the next offset reached (None if nothing was acknowledged)."""
        reached: int | None = None
        pending: int | None = None  # acknowledged without a write yet (ignored types)
        for message in messages:
            if stop.is_set():
                break
            done = await self._process_message(message, stop)
            if done is None:
                break
            if done:
                pending = None
            else:
                pending = message.offset + 1
            reached = message.offset + 1
        if pending is not None:
            await self._store_offsets({messages[0].partition_key: pending})
        return reached

    async def _process_message(self, message: ConsumedMessage,
                               stop: asyncio.Event) -> bool | None:
        """True: acknowledged with a write; False: to acknowledge later; None: stopped."""
        name = self.handler.NAME
        offsets = {message.partition_key: message.offset + 1}
        try:
            event = decode_message(message)
            applies, decoded = prepare_event(self.handler.HANDLES, self.registry, event)
        except UnknownEventType as unknown:
            self.stats.unknown_types[unknown.type] += 1
            return False
        except (MalformedMessage, msgspec.MsgspecError, ValueError, TypeError) as error:
            await self._park_and_advance(message, str(error))
            self.stats.parked_messages += 1
            return True
        if not applies:
            self.stats.ignored += 1
            return False

        async def check(conn: AsyncConnection) -> str | None:
            await lock_stream(conn, name, event.stream_id)
            if await is_handled(conn, name, event.event_id):
                await _advance_offsets(conn, self.consumer_name, offsets)
                return "handled"
            blocking = await first_open_dead_letter(conn, name, event.stream_id)
            if blocking is not None:
                await self._park(conn, message, event, 0,
                                 f"parked behind dead letter #{blocking} of its stream")
                await _advance_offsets(conn, self.consumer_name, offsets)
                return "parked"
            return None

        verdict = await _in_transaction_with_retry(self.engine, check)
        if verdict == "parked":
            self.stats.parked_behind += 1
            return True
        if verdict == "handled":
            self.stats.already_handled += 1
            return True

        outcome = await attempt(self.handler, event, decoded, self.backoff, stop=stop)
        self.stats.failed_attempts += outcome.attempts - (1 if outcome.handled else 0)
        if outcome.interrupted:
            return None

        async def record(conn: AsyncConnection) -> None:
            if outcome.handled:
                await mark_handled(conn, name, event.event_id)
            else:
                await lock_stream(conn, name, event.stream_id)
                await self._park(conn, message, event, outcome.attempts,
                                 outcome.error or "failed")
            await _advance_offsets(conn, self.consumer_name, offsets)

        await _in_transaction_with_retry(self.engine, record)
        if outcome.handled:
            self.stats.handled += 1
        else:
            self.stats.dead_lettered += 1
        return True

    async def _park(self, conn: AsyncConnection, message: ConsumedMessage, event: RecordedEvent,
                    attempts: int, error: str) -> None:
        await park(conn, handler=self.handler.NAME, event=event, topic=message.topic,
                   partition=message.partition, offset=message.offset,
                   payload=message.value or b"", headers=message.headers, attempts=attempts,
                   error=error)
