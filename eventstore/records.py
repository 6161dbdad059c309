"""What the log stores and hands back: metadata, recorded events, log positions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Metadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The envelope's who/why, kept out of event payloads (DESIGN.md decision 3).

    Never holds a credential: actor is the token's issuer and subject only.
    """

    actor_issuer: str | None = None
    actor_subject: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    request_id: str | None = None
    reason: str | None = None


class LogPosition(msgspec.Struct, frozen=True, order=True):
    """A point in log order: (transaction id, position) as the no-skip reader sorts."""

    tx_id: int
    position: int

    @classmethod
    def start(cls) -> LogPosition:
        return cls(0, 0)


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the log, payload still encoded (decode with an EventRegistry)."""

    position: int
    tx_id: int
    stream_id: str
    category: str
    version: int
    event_id: str
    type: str
    schema_version: int
    data: bytes
    metadata: Metadata
    recorded_at: datetime
    hash: bytes

    @property
    def log_position(self) -> LogPosition:
        return LogPosition(self.tx_id, self.position)


class AppendResult(msgspec.Struct, frozen=True):
    stream_id: str
    versions: list[int]
    positions: list[int]

    @property
    def version(self) -> int:
        """The stream's version after the append (0 if nothing was appended)."""
        return self.versions[-1] if self.versions else 0


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event ready to append: already encoded by the registry."""

    event_id: str
    type: str
    schema_version: int
    data: bytes


class ConcurrencyError(Exception):
    """The stream moved on since it was read: the caller decided on stale state."""

    def __init__(self, stream_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(f"stream {stream_id} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class UnknownEventType(Exception):
    """A type tag this code does not know (written by a newer version)."""

    def __init__(self, type_: str, schema_version: int) -> None:
        super().__init__(f"unknown event type {type_!r} (schema version {schema_version})")
        self.type = type_
        self.schema_version = schema_version


def category_of(stream_id: str) -> str:
    """Stream ids are '<category>-<id>' (KurrentDB/Equinox convention)."""
    category, sep, rest = stream_id.partition("-")
    if not sep or not category or not rest:
        raise ValueError(f"stream id {stream_id!r} is not of the form '<category>-<id>'")
    return category


def encode_metadata(metadata: Metadata) -> bytes:
    return msgspec.json.encode(metadata)


_metadata_decoder = msgspec.json.Decoder(Metadata)


def decode_metadata(raw: bytes | str) -> Metadata:
    return _metadata_decoder.decode(raw)


JsonDict = dict[str, Any]
