"""The folded state of every provider and its latest quota usage: what selection reads.

Two tables, one row per provider each: ``provider_states_providers_v<N>`` holds the
``ProviderState`` folded from the ``provider-<id>`` stream, ``provider_states_usage_v<N>`` the
``QuotaUsageState`` folded from ``quotausage-<id>``; both as MessagePack with the stream
version they reached. Readers list the versions (a cheap query) and decode only the states
that changed since they last looked (see the scheduling catalogue in the bootstrap).

Events of one stream arrive in order (one Kafka partition per stream); an event at or below
the stored stream version was applied already and is skipped, so a replay is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
from sqlalchemy import (
    BigInteger,
    Column,
    LargeBinary,
    MetaData,
    Table,
    Text,
    literal,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.providers import EVENT_TYPES_BY_TAG, fold, initial_state
from domain.providers.state import ProviderState
from domain.providers.usage import USAGE_EVENT_TYPES, QuotaUsageState, fold_usage
from eventstore.projection import query_tables, upsert
from eventstore.records import RecordedEvent

NAME: Final = "provider_states"
VERSION: Final = 1
USAGE_TAGS: Final = frozenset(t.__struct_config__.tag for t in USAGE_EVENT_TYPES)

_ENCODER: Final = msgspec.msgpack.Encoder()
_PROVIDER_DECODER: Final = msgspec.msgpack.Decoder(ProviderState)
_USAGE_DECODER: Final = msgspec.msgpack.Decoder(QuotaUsageState)


def encode_state(state: ProviderState | QuotaUsageState) -> bytes:
    return _ENCODER.encode(state)


def decode_provider_state(data: bytes) -> ProviderState:
    return _PROVIDER_DECODER.decode(data)


def decode_usage_state(data: bytes) -> QuotaUsageState:
    return _USAGE_DECODER.decode(data)


class ProviderStatesProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = frozenset(EVENT_TYPES_BY_TAG) | USAGE_TAGS

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()

        def states(part: str) -> Table:
            return Table(
                f"{NAME}_{part}_v{version}", metadata,
                Column("provider_id", Text, primary_key=True),
                Column("stream_version", BigInteger, nullable=False),
                Column("state", LargeBinary, nullable=False),
            )

        return [states("providers"), states("usage")]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        await self.apply_batch(conn, [(event, decoded)], tables)

    async def apply_batch(self, conn: AsyncConnection,
                          items: Sequence[tuple[RecordedEvent, Any]],
                          tables: Sequence[Table]) -> None:
        providers, usage = tables
        by_stream: dict[tuple[bool, str], list[tuple[RecordedEvent, Any]]] = {}
        for event, decoded in items:
            is_usage = event.type in USAGE_TAGS
            by_stream.setdefault((is_usage, decoded.provider_id), []).append((event, decoded))
        # One locking read and one upsert per table. Sorted ids: concurrent batches lock
        # rows in the same order (no deadlocks).
        for is_usage, table in ((False, providers), (True, usage)):
            ids = sorted(provider_id for usage_key, provider_id in by_stream
                         if usage_key == is_usage)
            if not ids:
                continue
            stored = {row.provider_id: row for row in await conn.execute(
                select(table.c.provider_id, table.c.stream_version, table.c.state)
                .where(table.c.provider_id.in_(ids)).order_by(table.c.provider_id)
                .with_for_update())}
            changed: list[dict[str, Any]] = []
            for provider_id in ids:
                events = by_stream[(is_usage, provider_id)]
                row = stored.get(provider_id)
                stream_version = row.stream_version if row is not None else 0
                fresh = [d for e, d in events if e.version > stream_version]
                if not fresh:
                    continue
                state: ProviderState | QuotaUsageState
                if is_usage:
                    state = fold_usage(fresh, decode_usage_state(row.state) if row else None)
                else:
                    state = fold(fresh, decode_provider_state(row.state) if row
                                 else initial_state(provider_id))
                changed.append({"provider_id": provider_id,
                                "stream_version": max(e.version for e, _ in events),
                                "state": encode_state(state)})
            await upsert(conn, table, *changed)


projection = ProviderStatesProjection()


# --- reads -----------------------------------------------------------------------------------


async def stream_versions(conn: AsyncConnection, version: int) -> tuple[dict[str, int],
                                                                         dict[str, int]]:
    """Per provider, the stream version of its folded state and of its usage."""
    providers, usage = query_tables(projection, version)
    both = union_all(
        select(literal(False).label("usage"), providers.c.provider_id,
               providers.c.stream_version),
        select(literal(True).label("usage"), usage.c.provider_id, usage.c.stream_version))
    found: tuple[dict[str, int], dict[str, int]] = ({}, {})
    for row in await conn.execute(both):
        found[1 if row.usage else 0][row.provider_id] = row.stream_version
    return found


async def provider_states(conn: AsyncConnection, version: int,
                          provider_ids: Iterable[str]) -> dict[str, tuple[int, ProviderState]]:
    """The folded states (with their stream versions) of ``provider_ids``."""
    providers, _ = query_tables(projection, version)
    ids = list(provider_ids)
    if not ids:
        return {}
    rows = await conn.execute(select(providers).where(providers.c.provider_id.in_(ids)))
    return {r.provider_id: (r.stream_version, decode_provider_state(r.state)) for r in rows}


async def usage_states(conn: AsyncConnection, version: int,
                       provider_ids: Iterable[str]) -> dict[str, tuple[int, QuotaUsageState]]:
    """The latest usage (with its stream version) of ``provider_ids``."""
    _, usage = query_tables(projection, version)
    ids = list(provider_ids)
    if not ids:
        return {}
    rows = await conn.execute(select(usage).where(usage.c.provider_id.in_(ids)))
    return {r.provider_id: (r.stream_version, decode_usage_state(r.state)) for r in rows}
