"""The AI ranker's training rows (``airanker-dataset`` v1.1.0), from the deployment events.

Replaces paas-mon's log scraping: the ``deployment.scheduled`` event carries every candidate's
features as seen at decision time, and the attempt events say how each site did. For each
deployment the projection keeps the few events that matter (``airanker_dataset_events_v<N>``;
the template text and inputs of the request are dropped, they are not training data) and,
whenever an attempt or outcome event arrives, recomputes the rows of its operation with
:func:`domain.providers.airanker.dataset_rows` into ``airanker_dataset_rows_v<N>``.

Rows are ordered by ``row_position`` (the log position of the event that last produced
them), so an exporter can page with "rows after position P". A SQL view of the dataset::

    SELECT row FROM airanker_dataset_rows_v<N> ORDER BY row_position, deployment_id, seq;
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, Table, Text, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.deployments import (
    DeploymentEvent,
    DeploymentRequested,
    decode_event,
    encode_event,
)
from domain.providers.airanker import (
    DatasetRow,
    dataset_key,
    dataset_rows,
    recorded_selection,
)
from eventstore.projection import query_tables
from eventstore.records import RecordedEvent

NAME: Final = "airanker_dataset"
VERSION: Final = 1
KEPT_TYPES: Final = frozenset({
    "deployment.requested",
    "deployment.retry_requested",
    "deployment.scheduled",
    "deployment.attempt_started",
    "deployment.attempt_failed",
    "deployment.completed",
    "deployment.failed",
})


def _slim(event: DeploymentEvent) -> DeploymentEvent:
    if isinstance(event, DeploymentRequested):
        return msgspec.structs.replace(event, template="", parameters={})
    return event


class AirankerDatasetProjection:
    NAME = NAME
    VERSION = VERSION
    HANDLES = KEPT_TYPES

    def tables(self, version: int) -> list[Table]:
        metadata = MetaData()
        events = Table(
            f"{NAME}_events_v{version}", metadata,
            Column("deployment_id", Text, primary_key=True),
            Column("stream_version", BigInteger, primary_key=True),
            Column("event", LargeBinary, nullable=False),
        )
        rows = Table(
            f"{NAME}_rows_v{version}", metadata,
            Column("deployment_id", Text, primary_key=True),
            Column("operation", Integer, primary_key=True),
            Column("seq", Integer, primary_key=True),
            Column("key", Text, nullable=False),
            Column("row_position", BigInteger, nullable=False, index=True),
            Column("row", JSONB, nullable=False),
        )
        return [events, rows]

    async def apply(self, conn: AsyncConnection, event: RecordedEvent, decoded: Any,
                    tables: Sequence[Table]) -> None:
        events_table, rows_table = tables
        await conn.execute(insert(events_table).values(
            deployment_id=decoded.deployment_id, stream_version=event.version,
            event=encode_event(_slim(decoded))).on_conflict_do_nothing())
        if event.type in ("deployment.requested", "deployment.retry_requested",
                          "deployment.scheduled"):
            return  # rows need an attempt of a scheduled operation: none yet
        stored = await conn.execute(
            select(events_table.c.event)
            .where(events_table.c.deployment_id == decoded.deployment_id)
            .order_by(events_table.c.stream_version))
        history = [decode_event(r.event) for r in stored]
        operation = decoded.operation  # every other kept type has one
        result = recorded_selection(history, operation=operation)
        if result is None:
            return
        rows = dataset_rows(result, history, operation=operation)
        await conn.execute(rows_table.delete().where(
            (rows_table.c.deployment_id == decoded.deployment_id)
            & (rows_table.c.operation == operation)))
        if rows:
            await conn.execute(insert(rows_table), [
                {"deployment_id": decoded.deployment_id, "operation": operation, "seq": seq,
                 "key": dataset_key(row), "row_position": event.position,
                 "row": msgspec.to_builtins(row)}
                for seq, row in enumerate(rows)])


projection = AirankerDatasetProjection()


async def dataset(conn: AsyncConnection, version: int, *, after_position: int = 0,
                  limit: int = 1000) -> list[tuple[int, str, DatasetRow]]:
    """Rows produced after log position ``after_position``: (position, Kafka key, row)."""
    _, rows_table = query_tables(projection, version)
    result = await conn.execute(
        select(rows_table.c.row_position, rows_table.c.key, rows_table.c.row)
        .where(rows_table.c.row_position > after_position)
        .order_by(rows_table.c.row_position, rows_table.c.deployment_id, rows_table.c.seq)
        .limit(limit))
    return [(r.row_position, r.key, msgspec.convert(r.row, DatasetRow)) for r in result]
