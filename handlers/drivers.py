"""Background drivers: at most one task per aggregate, woken by events.

The IM deployer (per deployment) and the Rucio replicator (per replication) both keep a
task that brings the outside world in line with one stream, one step at a time, so that
an aggregate's steps never run concurrently. :class:`Drivers` owns those tasks: ``wake``
starts the aggregate's task or wakes the one that waits, and a task is forgotten as soon
as its ``drive`` function returns (the registry's bookkeeping runs in the same loop turn
as the return, so a wake arriving after the driver's last look starts a fresh task).
What a driver does, and when it polls, stays with its handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Drive = Callable[[str, asyncio.Event], Awaitable[None]]


async def sleep_or_woken(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True if ``event`` was set meanwhile (or already)."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


class Drivers:
    """One ``drive(key, wake)`` task per key; ``wake`` is set whenever the key is woken."""

    def __init__(self, name: str, drive: Drive) -> None:
        self._name = name
        self._drive = drive
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._closed = False

    def wake(self, key: str) -> None:
        """Start the key's driver, or wake the one running. Never blocks; a no-op once
        closed."""
        if self._closed:
            return
        wake = self._wakes.setdefault(key, asyncio.Event())
        wake.set()
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run(key, wake),
                                                   name=f"{self._name}:{key}")

    async def _run(self, key: str, wake: asyncio.Event) -> None:
        try:
            await self._drive(key, wake)
        finally:
            # No await between the driver's return and this: no wake can slip in between.
            self._tasks.pop(key, None)
            self._wakes.pop(key, None)

    def running(self) -> list[str]:
        return list(self._tasks)

    async def idle(self) -> None:
        """Until no driver runs (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Cancel every driver (their progress is in the event log) and start no more."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
