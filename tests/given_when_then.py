"""Given/when/then for any pure decider (``decide(command, state, *, now)`` and
``fold(events, state)``), shared by the aggregates' domain tests.

``given(*history).when(command).then(*expected)`` asserts the command decides exactly
``expected`` and returns the state after them; every decided event must also survive the
store's JSON round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import pytest

S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True)
class Decider(Generic[S, E]):
    """The pure functions of one aggregate, the ``now`` its tests decide at by default, and
    optionally the short summary of an event that ``then_summaries`` compares."""

    decide: Callable[..., list[E]]
    fold: Callable[[Iterable[E], S | None], S]
    encode_event: Callable[[E], bytes]
    decode_event: Callable[[bytes], E]
    now: datetime
    summary: Callable[[E], Any] | None = None


class Outcome(Generic[S, E]):
    def __init__(self, decider: Decider[S, E], state: S, command: Any, now: datetime) -> None:
        self.decider = decider
        self.state = state
        self.command = command
        self.now = now

    def events(self) -> list[E]:
        """Decide; every decided event must survive the store's JSON round trip."""
        d = self.decider
        events = d.decide(self.command, self.state, now=self.now)
        for event in events:
            assert d.decode_event(d.encode_event(event)) == event
        return events

    def then(self, *expected: E) -> S:
        """Assert the command decides exactly ``expected``; return the state after them."""
        events = self.events()
        assert events == list(expected)
        return self.decider.fold(events, self.state)

    def then_summaries(self, *expected: Any) -> S:
        """Like :meth:`then`, comparing the decider's ``summary`` of each event."""
        summary = self.decider.summary
        assert summary is not None, "this decider has no event summary"
        events = self.events()
        assert [summary(event) for event in events] == list(expected)
        return self.decider.fold(events, self.state)

    def then_nothing(self) -> S:
        """Assert the command is a no-op (already applied)."""
        return self.then()

    def then_state(self) -> S:
        """Decide without asserting the events; return the state after them."""
        return self.decider.fold(self.events(), self.state)

    def raises(self, error: type[Exception], match: str | None = None) -> Any:
        with pytest.raises(error, match=match) as caught:
            self.decider.decide(self.command, self.state, now=self.now)
        return caught.value


class Given(Generic[S, E]):
    def __init__(self, decider: Decider[S, E], state: S) -> None:
        self.decider = decider
        self.state = state

    def when(self, command: Any, *, now: datetime | None = None) -> Outcome[S, E]:
        return Outcome(self.decider, self.state, command, self.decider.now if now is None else now)
