"""The event registry: old schema versions are upcast on read, version by version."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from eventstore.records import UnknownEventType
from eventstore.registry import EventRegistry


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class Resized(Event, tag="vm.resized"):
    """Version 3: ``cpus`` (v1 called it ``cores``), ``memory_gb`` (added in v3)."""

    cpus: int
    memory_gb: int


def renamed_cores(payload: dict[str, Any]) -> dict[str, Any]:  # v1 -> v2
    return {**{k: v for k, v in payload.items() if k != "cores"}, "cpus": payload["cores"]}


def added_memory(payload: dict[str, Any]) -> dict[str, Any]:  # v2 -> v3
    return {**payload, "memory_gb": 2 * payload["cpus"]}


def registry_at_v3() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Resized, schema_version=3)
    registry.add_upcaster("vm.resized", 1, renamed_cores)
    registry.add_upcaster("vm.resized", 2, added_memory)
    return registry


def test_an_old_payload_is_upcast_through_every_version_before_decoding() -> None:
    registry = registry_at_v3()
    assert registry.decode("vm.resized", 1, b'{"type": "vm.resized", "cores": 4}') == Resized(
        cpus=4, memory_gb=8)
    assert registry.decode("vm.resized", 2, b'{"cpus": 2}') == Resized(cpus=2, memory_gb=4)
    assert registry.decode("vm.resized", 3, b'{"cpus": 1, "memory_gb": 16}') == Resized(
        cpus=1, memory_gb=16)


def test_a_version_without_its_upcaster_or_newer_than_the_code_is_unknown() -> None:
    registry = EventRegistry()
    registry.register(Resized, schema_version=3)
    registry.add_upcaster("vm.resized", 2, added_memory)  # 1 -> 2 is missing
    with pytest.raises(UnknownEventType):
        registry.decode("vm.resized", 1, b'{"cores": 4}')
    with pytest.raises(UnknownEventType):
        registry_at_v3().decode("vm.resized", 4, b'{"cpus": 1, "memory_gb": 1}')
    with pytest.raises(UnknownEventType):
        registry_at_v3().decode("vm.deleted", 1, b"{}")
