"""What every aggregate's events module needs: stable tags, schema versions, a JSON codec.

An aggregate lists its event classes once (``EVENT_TYPES``) and builds an
:class:`EventCatalogue` from them; its tag map, schema versions, ``encode_event`` and
``decode_event`` come from the catalogue, so they cannot drift from that list.
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar, Union

import msgspec

E = TypeVar("E", bound=msgspec.Struct)


def event_tag(event_type: type[msgspec.Struct] | msgspec.Struct) -> str:
    """The stable tag (stored event type) of an event class or instance."""
    tag = event_type.__struct_config__.tag
    if not isinstance(tag, str):  # pragma: no cover - every event class sets one
        raise TypeError(f"{event_type!r} has no string tag")
    return tag


class EventCatalogue(Generic[E]):
    """The events of one aggregate: tag -> class, schema version per tag, JSON codec."""

    def __init__(self, event_types: tuple[type[E], ...]) -> None:
        self.types_by_tag: Final[dict[str, type[E]]] = {event_tag(t): t for t in event_types}
        self.schema_versions: Final[dict[str, int]] = {tag: 1 for tag in self.types_by_tag}
        """Current schema version per tag, recorded by the store with each event."""
        self._encoder: Final = msgspec.json.Encoder()
        # A union of the tagged classes: the decoder dispatches on the ``type`` tag. ``X | Y``
        # cannot spell a union built from a runtime tuple, hence ``Union[...]``.
        self._decoder: Final[msgspec.json.Decoder[Any]] = msgspec.json.Decoder(
            Union[event_types]  # noqa: UP007
        )

    def encode(self, event: E) -> bytes:
        """JSON of an event, including its ``type`` tag."""
        return self._encoder.encode(event)

    def decode(self, data: bytes | str) -> E:
        """The event a JSON document holds, dispatched on its ``type`` tag.

        Raises ``msgspec.ValidationError`` for an unknown tag or an invalid payload.
        """
        event: E = self._decoder.decode(data)
        return event
