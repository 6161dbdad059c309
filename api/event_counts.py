"""The first read model on the API: how many events of each type the log holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency


class EventCountView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    category: str
    type: str
    count: int
    last_position: int
    last_recorded_at: datetime


EventCountsReader = Callable[[], Awaitable[list[EventCountView]]]


class EventCountsController(Controller):
    path = "/v1/event-counts"
    tags = ["log"]

    @get("/", operation_id="listEventCounts")
    async def list_event_counts(self, event_counts_reader: NamedDependency[EventCountsReader]
                                ) -> list[EventCountView]:
        """Events in the log per category and type, from the `event_counts` projection."""
        return await event_counts_reader()
