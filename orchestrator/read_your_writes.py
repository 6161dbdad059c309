"""Read-your-writes for the API's read models.

The read models are fed from Kafka, so right after a command a read could miss its
effect for a few milliseconds. Every command this process appends is remembered here
(its stream version, the deployment's owner, and lazily its log position); a read of an
affected deployment waits, bounded by ``wait_s``, until the read model shows it.

- The deployments view keeps each row's ``stream_version``: a read of one deployment
  waits for its row to reach the version this process wrote; a list waits for the
  listed owner's pending writes.
- The resources view has no per-row version: a read waits until the resources
  consumer's stored log position on the stream's partition is at or past the event's
  ``(tx_id, position)`` (partitions are fed in log order, and the stored position moves
  with every message, applied or ignored).

Only writes of this server process are known; with several processes behind a load
balancer, a client reads its writes when its requests stick to one process. After
``wait_s`` the read answers what the view has (never an error): a stalled projection
shows up as staleness, not as a hung API.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore.command_service import CommandResult, CommandService, Decider
from eventstore.records import Metadata

T = TypeVar("T")

WAIT_S = 2.0
"""Longest a read waits for the read model to show this process's write."""
POLL_S = 0.003
REMEMBER_S = 30.0
"""A write older than this is assumed visible (no read waits for it any more)."""


@dataclass
class _Write:
    stream_id: str
    version: int
    owner: tuple[str, str] | None
    at: float
    # (tx_id, position) of the stream's event at ``version``, looked up on first need.
    log_position: tuple[int, int] | None = None
    seen_by: set[str] = field(default_factory=set)


class WrittenVersions:
    """What this process appended recently, per deployment, until each view shows it."""

    def __init__(self, *, wait_s: float = WAIT_S, remember_s: float = REMEMBER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self.remember_s = remember_s
        self.clock = clock
        self._writes: dict[str, _Write] = {}
        self._by_owner: dict[tuple[str, str], set[str]] = {}
        self._order: deque[tuple[float, str]] = deque()

    def record(self, deployment_id: str, stream_id: str, version: int,
               owner: tuple[str, str] | None) -> None:
        now = self.clock()
        self._forget_old(now)
        previous = self._writes.get(deployment_id)
        if previous is not None and previous.version >= version:
            return
        self._writes[deployment_id] = _Write(stream_id, version, owner, now)
        if owner is not None:
            self._by_owner.setdefault(owner, set()).add(deployment_id)
        self._order.append((now, deployment_id))

    def pending(self, view: str, deployment_id: str) -> _Write | None:
        """The write ``view`` has not been seen to show yet, if any."""
        self._forget_old(self.clock())
        write = self._writes.get(deployment_id)
        return write if write is not None and view not in write.seen_by else None

    def pending_of_owner(self, view: str, issuer: str | None,
                         subject: str | None) -> dict[str, int]:
        """Deployment id -> version for the owner's writes ``view`` has not shown yet
        (every owner of ``issuer`` when ``subject`` is None)."""
        if issuer is None or not self._writes:
            return {}
        self._forget_old(self.clock())
        owners = ([(issuer, subject)] if subject is not None
                  else [o for o in self._by_owner if o[0] == issuer])
        found: dict[str, int] = {}
        for owner in owners:
            for deployment_id in self._by_owner.get(owner, ()):
                write = self._writes[deployment_id]
                if view not in write.seen_by:
                    found[deployment_id] = write.version
        return found

    def seen(self, view: str, deployment_id: str, version: int) -> None:
        write = self._writes.get(deployment_id)
        if write is not None and write.version <= version:
            write.seen_by.add(view)

    def _forget_old(self, now: float) -> None:
        while self._order and now - self._order[0][0] > self.remember_s:
            at, deployment_id = self._order.popleft()
            write = self._writes.get(deployment_id)
            if write is None or write.at != at:
                continue  # a newer write of the same deployment is still remembered
            del self._writes[deployment_id]
            if write.owner is not None:
                ids = self._by_owner.get(write.owner)
                if ids is not None:
                    ids.discard(deployment_id)
                    if not ids:
                        del self._by_owner[write.owner]

    async def wait(self, check: Callable[[], Awaitable[tuple[bool, T]]]) -> T:
        """Poll ``check`` until it reports done or ``wait_s`` passed; its last value."""
        deadline = self.clock() + self.wait_s
        while True:
            done, value = await check()
            if done or self.clock() >= deadline:
                return value
            await asyncio.sleep(POLL_S)


class RecordingCommandService(CommandService):
    """The command service, remembering every deployment write for read-your-writes."""

    def __init__(self, *args: Any, written: WrittenVersions, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written = written

    async def execute(self, stream_id: str, decider: Decider[Any, Any, Any], command: Any,
                      metadata: Metadata, **options: Any) -> CommandResult[Any, Any]:
        result = await super().execute(stream_id, decider, command, metadata, **options)
        deployment_id = getattr(result.state, "deployment_id", None)
        if result.append is not None and isinstance(deployment_id, str):
            owner = getattr(result.state, "owner", None)
            self.written.record(
                deployment_id, stream_id, result.append.version,
                (owner.issuer, owner.subject) if owner is not None else None)
        return result


async def event_log_position(conn: AsyncConnection, stream_id: str,
                             version: int) -> tuple[int, int] | None:
    row = (await conn.execute(text(
        "SELECT tx_id::text::bigint AS tx_id, position FROM events "
        "WHERE stream_id = :s AND version = :v"), {"s": stream_id, "v": version})).first()
    return (int(row.tx_id), int(row.position)) if row is not None else None


async def consumer_reached(conn: AsyncConnection, consumer: str, topic: str, partition: int,
                           log_position: tuple[int, int]) -> bool:
    """Whether ``consumer`` has stored a log position at or past ``log_position``."""
    reached = (await conn.execute(text(
        "SELECT (log_tx_id::text::bigint, log_position) >= (:tx, :pos) FROM consumer_offsets "
        "WHERE consumer = :c AND topic = :t AND partition = :p AND log_position IS NOT NULL"),
        {"tx": log_position[0], "pos": log_position[1], "c": consumer, "t": topic,
         "p": partition})).scalar()
    return bool(reached)
