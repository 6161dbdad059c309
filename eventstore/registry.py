"""Maps stable type tags to msgspec structs, with upcasters chained on read.

Event rows are never migrated in place (DESIGN.md decision 2): an old schema
version is upcast dict-to-dict, version by version, before it is decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from eventstore.records import NewEvent, RecordedEvent, UnknownEventType

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventRegistry:
    def __init__(self) -> None:
        self._types: dict[str, tuple[type[msgspec.Struct], int]] = {}
        self._tags: dict[type[msgspec.Struct], str] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._encoder = msgspec.json.Encoder()

    def register(self, event_type: type[msgspec.Struct], schema_version: int = 1) -> None:
        tag = event_type.__struct_config__.tag
        if not isinstance(tag, str):
            raise TypeError(f"{event_type.__name__} needs an explicit string tag")
        known = self._types.get(tag)
        if known is not None and known[0] is not event_type:
            raise ValueError(f"tag {tag!r} is already registered to {known[0].__name__}")
        self._types[tag] = (event_type, schema_version)
        self._tags[event_type] = tag
        self._decoders[tag] = msgspec.json.Decoder(event_type)

    def register_all(self, event_types: Iterable[type[msgspec.Struct]],
                     schema_versions: dict[str, int] | None = None) -> None:
        for event_type in event_types:
            tag = event_type.__struct_config__.tag
            version = (schema_versions or {}).get(tag, 1) if isinstance(tag, str) else 1
            self.register(event_type, version)

    def add_upcaster(self, tag: str, from_version: int, upcaster: Upcaster) -> None:
        """`upcaster` turns a payload of `from_version` into one of `from_version + 1`."""
        self._upcasters[(tag, from_version)] = upcaster

    def knows(self, tag: str) -> bool:
        return tag in self._types

    @property
    def tags(self) -> list[str]:
        return sorted(self._types)

    def encode(self, event: msgspec.Struct, event_id: str) -> NewEvent:
        tag = self._tags.get(type(event))
        if tag is None:
            raise UnknownEventType(type(event).__name__, 0)
        return NewEvent(event_id=event_id, type=tag, schema_version=self._types[tag][1],
                        data=self._encoder.encode(event))

    def decode(self, type_: str, schema_version: int, data: bytes) -> msgspec.Struct:
        known = self._types.get(type_)
        if known is None:
            raise UnknownEventType(type_, schema_version)
        current = known[1]
        if schema_version > current:
            raise UnknownEventType(type_, schema_version)
        if schema_version == current:
            return self._decoders[type_].decode(data)  # type: ignore[no-any-return]
        payload: dict[str, Any] = msgspec.json.decode(data)
        for version in range(schema_version, current):
            upcaster = self._upcasters.get((type_, version))
            if upcaster is None:
                raise UnknownEventType(type_, schema_version)
            payload = upcaster(payload)
        payload.setdefault("type", type_)
        return msgspec.convert(payload, known[0])

    def decode_recorded(self, recorded: RecordedEvent) -> msgspec.Struct:
        return self.decode(recorded.type, recorded.schema_version, recorded.data)
