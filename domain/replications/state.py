"""The state of one replication, folded from its events."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from domain.identity import Actor

from .events import RuleState


class ReplicationStatus(enum.Enum):
    REQUESTED = "REQUESTED"  # no rule yet
    REPLICATING = "REPLICATING"
    OK = "OK"
    STUCK = "STUCK"
    CANCELLING = "CANCELLING"  # cancelled, some rules not removed yet
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """One rule set: the rules of the first request or of one migration."""

    number: int
    rse_expression: str
    rule_ids: tuple[str, ...] = ()
    state: RuleState | None = None
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0
    removed: bool = False
    abandoned: bool = False  # a migration that failed: its rules (if any) must go
    failure_reason: str | None = None

    @property
    def has_rules(self) -> bool:
        return bool(self.rule_ids)


class ReplicationState(msgspec.Struct, frozen=True, kw_only=True):
    replication_id: str = ""
    version: int = 0
    owner: Actor | None = None
    dids: tuple[str, ...] = ()
    copies: int = 1
    lifetime_seconds: int | None = None
    deployment_id: str | None = None
    requirement_index: int | None = None
    wait: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    generations: tuple[Generation, ...] = ()
    current: int = 0
    migrating_to: int | None = None
    cancelled: bool = False
    cancel_reason: str | None = None
    failed: bool = False
    failure_reason: str | None = None

    @property
    def exists(self) -> bool:
        return bool(self.generations)

    def generation(self, number: int) -> Generation | None:
        if 0 <= number < len(self.generations):
            return self.generations[number]
        return None

    @property
    def current_generation(self) -> Generation:
        return self.generations[self.current]

    @property
    def rse_expression(self) -> str:
        return self.current_generation.rse_expression if self.exists else ""

    @property
    def pending_migration(self) -> Generation | None:
        return self.generation(self.migrating_to) if self.migrating_to is not None else None

    @property
    def rules_to_remove(self) -> tuple[Generation, ...]:
        """Generations whose rules exist in Rucio but are no longer wanted."""
        return tuple(g for g in self.generations if g.has_rules and not g.removed and (
            self.cancelled or g.abandoned
            or (g.number != self.current and g.number != self.migrating_to)))

    @property
    def active(self) -> bool:
        """Neither cancelled nor failed: rules are wanted."""
        return self.exists and not self.cancelled and not self.failed

    @property
    def status(self) -> ReplicationStatus | None:
        if not self.exists:
            return None
        if self.cancelled:
            return (ReplicationStatus.CANCELLING if self.rules_to_remove
                    else ReplicationStatus.CANCELLED)
        if self.failed:
            return ReplicationStatus.FAILED
        current = self.current_generation
        if not current.has_rules:
            return ReplicationStatus.REQUESTED
        if current.state is None:
            return ReplicationStatus.REPLICATING
        return ReplicationStatus(current.state.value)

    @property
    def settled(self) -> bool:
        """Nothing left for the handler to do (it may stop following this replication)."""
        if not self.exists:
            return True
        if self.rules_to_remove:
            return False
        if not self.active:
            return True
        return self.migrating_to is None and self.current_generation.state is RuleState.OK
