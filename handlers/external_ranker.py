"""The external ranker over Kafka: INFN's ai-ranker protocol (``infn-new-orchestrator.md`` 2.5).

One exchange per ranking: publish the ``providers-to-rank`` v1.1.0 request (key: the
deployment id) on the request topic, then read the answer topic for the ``ranked_providers``
message with the same ``uuid`` until the deadline.

Each exchange reads the answer topic with its own group-less consumer, positioned at the end
of every partition *before* the request is published, so it sees exactly the answers written
after its question: several orchestrator processes can rank at once, an answer for another
deployment (or a late one for an earlier request) is skipped, and a late answer that arrives
after the deadline is read by nobody: it is harmless. A malformed answer is logged (with its
topic, partition and offset, so it can be found in the ranker's topic, which keeps it) and
skipped; it never fails the ranking: the caller falls back to the built-in ranking.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from domain.providers.airanker import (
    ProvidersToRank,
    RankedProviders,
    encode_message,
    parse_ranked_providers,
)
from domain.providers.errors import InvalidRankerAnswer
from eventstore.relay import ensure_topics

log = logging.getLogger(__name__)

SETUP_TIMEOUT_SECONDS = 10.0
"""How long connecting to Kafka may take before the ranker counts as unreachable."""


class KafkaExternalRanker:
    """:class:`handlers.ranking.ExternalRanker` over Kafka."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        request_topic: str,
        answer_topic: str,
        deadline_seconds: float = 5.0,
        client_id: str = "orchestrator-ranking",
    ) -> None:
        if deadline_seconds <= 0:
            raise ValueError("the external ranker's deadline must be positive")
        self.bootstrap_servers = bootstrap_servers
        self.request_topic = request_topic
        self.answer_topic = answer_topic
        self.deadline_seconds = deadline_seconds
        self.client_id = client_id
        self._topics_ready = False

    async def rank(self, request: ProvidersToRank) -> RankedProviders | None:
        """The answer to ``request``, or ``None`` if none usable came within the deadline;
        raises (``TimeoutError``, Kafka errors) when Kafka cannot be reached."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id, acks="all"
        )
        try:
            await asyncio.wait_for(self._prepare(consumer, producer), SETUP_TIMEOUT_SECONDS)
            await producer.send_and_wait(
                self.request_topic, encode_message(request), key=request.uuid.encode()
            )
            return await self._await_answer(consumer, request.uuid)
        finally:
            await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)

    async def _prepare(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        if not self._topics_ready:
            await ensure_topics(self.bootstrap_servers, [self.request_topic, self.answer_topic], 1)
            self._topics_ready = True
        await asyncio.gather(consumer.start(), producer.start())
        partitions = await producer.partitions_for(self.answer_topic)  # fetches metadata
        if not partitions:
            raise RuntimeError(f"the answer topic {self.answer_topic} has no partitions")
        assigned = [TopicPartition(self.answer_topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for partition in assigned:  # resolve the end offsets now, before the request goes out
            await consumer.position(partition)

    async def _await_answer(self, consumer: AIOKafkaConsumer, uuid: str) -> RankedProviders | None:
        deadline = time.monotonic() + self.deadline_seconds
        while (left := deadline - time.monotonic()) > 0:
            batch = await consumer.getmany(timeout_ms=max(1, int(left * 1000)))
            for records in batch.values():
                for record in records:
                    answer = self._parse(record)
                    if answer is not None and answer.uuid == uuid:
                        return answer
        log.warning("no ranked_providers answer for %s within %g s", uuid, self.deadline_seconds)
        return None

    @staticmethod
    def _parse(record: object) -> RankedProviders | None:
        value = getattr(record, "value", None)
        try:
            if value is None:
                raise InvalidRankerAnswer("ranked_providers: empty message")
            return parse_ranked_providers(value)
        except InvalidRankerAnswer as error:
            log.warning(
                "skipping a malformed ranked_providers message at %s[%s]@%s: %s",
                getattr(record, "topic", "?"),
                getattr(record, "partition", "?"),
                getattr(record, "offset", "?"),
                error,
            )
            return None
