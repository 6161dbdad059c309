"""How a log event looks on Kafka: one topic per category, keyed by stream id.

The value is a self-describing JSON envelope (so outside consumers need nothing
of ours); headers repeat the routing fields so consumers can filter unread.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from eventstore.records import Metadata, RecordedEvent, category_of


class KafkaEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    stream_id: str
    version: int
    position: int
    tx_id: int
    type: str
    schema_version: int
    recorded_at: datetime
    metadata: Metadata
    data: msgspec.Raw
    hash: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(KafkaEnvelope)


def topic_for(prefix: str, category: str) -> str:
    """Topics are plural nouns: stream 'deployment-<id>' goes to '<prefix>.deployments'."""
    return f"{prefix}.{category}s"


def encode(event: RecordedEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) for one event."""
    value = _encoder.encode(KafkaEnvelope(
        event_id=event.event_id, stream_id=event.stream_id, version=event.version,
        position=event.position, tx_id=event.tx_id, type=event.type,
        schema_version=event.schema_version, recorded_at=event.recorded_at,
        metadata=event.metadata, data=msgspec.Raw(event.data), hash=event.hash.hex()))
    headers = [
        ("event_id", event.event_id.encode()),
        ("type", event.type.encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("position", str(event.position).encode()),
    ]
    return event.stream_id.encode(), value, headers


def decode(value: bytes) -> RecordedEvent:
    """Raises msgspec.ValidationError/DecodeError on anything that is not ours."""
    envelope = _decoder.decode(value)
    return RecordedEvent(
        position=envelope.position, tx_id=envelope.tx_id, stream_id=envelope.stream_id,
        category=category_of(envelope.stream_id), version=envelope.version,
        event_id=envelope.event_id, type=envelope.type,
        schema_version=envelope.schema_version, data=bytes(envelope.data),
        metadata=envelope.metadata, recorded_at=envelope.recorded_at,
        hash=bytes.fromhex(envelope.hash))
