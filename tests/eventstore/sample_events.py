"""A tiny event vocabulary for testing the log itself (no domain behind it)."""

from __future__ import annotations

import uuid

import msgspec

from eventstore.records import NewEvent
from eventstore.registry import EventRegistry


class CounterEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class CounterOpened(CounterEvent, tag="counter.opened"):
    name: str


class CounterIncremented(CounterEvent, tag="counter.incremented"):
    by: int
    note: str = ""


registry = EventRegistry()
registry.register_all([CounterOpened, CounterIncremented])


def incremented(by: int = 1, note: str = "") -> NewEvent:
    return registry.encode(CounterIncremented(by=by, note=note), str(uuid.uuid4()))


def opened(name: str = "c") -> NewEvent:
    return registry.encode(CounterOpened(name=name), str(uuid.uuid4()))


def new_stream(category: str = "counter") -> str:
    return f"{category}-{uuid.uuid4()}"
