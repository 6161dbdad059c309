"""Replication events: the storage format of the ``replication-<id>`` streams.

A replication asks Rucio for copies of some DIDs on an RSE expression, on behalf of an
owner, maybe for a deployment. Its rules come in *generations*: generation 0 is the first
rule set; each migration opens the next one (new rules elsewhere, wait until OK, remove the
old ones). Rucio makes one rule per DID, so a generation holds one rule id per DID.

Tags are stable (``replication.<fact>``); new fields get defaults. No event carries a
credential: the Rucio account's token stays in the handler.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final

import msgspec

from domain.event_catalogue import EventCatalogue
from domain.identity import Actor


class RuleState(enum.Enum):
    """A generation's state, summed over its rules: any STUCK -> STUCK, all OK -> OK."""

    REPLICATING = "REPLICATING"
    OK = "OK"
    STUCK = "STUCK"


class ReplicationEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    replication_id: str
    occurred_at: datetime
    actor: Actor


class ReplicationRequested(ReplicationEvent, tag="replication.requested", frozen=True,
                           kw_only=True):
    """Copies of ``dids`` (``scope:name``) were asked for on ``rse_expression``.

    ``deployment_id``/``requirement_index`` link it to a deployment's data requirement;
    ``wait`` means that deployment waits until the rules are OK.
    """

    owner: Actor
    dids: tuple[str, ...]
    rse_expression: str
    copies: int = 1
    lifetime_seconds: int | None = None
    deployment_id: str | None = None
    requirement_index: int | None = None
    wait: bool = False


class ReplicationRuleCreated(ReplicationEvent, tag="replication.rule_created", frozen=True,
                             kw_only=True):
    """Rucio holds the rules of ``generation`` (one per DID, in the order of ``dids``).

    ``adopted``: they already existed (an earlier try whose answer was lost, or an identical
    rule of the same account) and were taken over instead of created.
    """

    generation: int
    rse_expression: str
    rule_ids: tuple[str, ...]
    adopted: bool = False


class ReplicationStateObserved(ReplicationEvent, tag="replication.state_observed", frozen=True,
                               kw_only=True):
    """A new state or progress of a generation's rules (lock counts summed over its rules)."""

    generation: int
    state: RuleState
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0


class ReplicationMigrationRequested(ReplicationEvent, tag="replication.migration_requested",
                                    frozen=True, kw_only=True):
    """Move the data to ``rse_expression``: generation ``generation`` is opened."""

    generation: int
    rse_expression: str


class ReplicationMigrationCompleted(ReplicationEvent, tag="replication.migration_completed",
                                   frozen=True, kw_only=True):
    """Generation ``generation`` is OK and is now the current one; the previous one's rules
    were removed (recorded by the ``replication.rule_removed`` just before)."""

    generation: int
    previous_generation: int


class ReplicationMigrationFailed(ReplicationEvent, tag="replication.migration_failed",
                                 frozen=True, kw_only=True):
    """The migration could not be started (e.g. an unknown RSE expression); the data stays
    where it was."""

    generation: int
    reason: str


class ReplicationCancelled(ReplicationEvent, tag="replication.cancelled", frozen=True,
                           kw_only=True):
    """The replication was cancelled (by its owner, or because its deployment is deleted);
    every rule it holds is to be removed."""

    reason: str | None = None


class ReplicationRuleRemoved(ReplicationEvent, tag="replication.rule_removed", frozen=True,
                             kw_only=True):
    """Rucio was asked to remove the rules of ``generation`` (``kept``: rule ids another live
    replication still holds, left in place)."""

    generation: int
    rule_ids: tuple[str, ...]
    kept: tuple[str, ...] = ()


class ReplicationFailed(ReplicationEvent, tag="replication.failed", frozen=True, kw_only=True):
    """The rules could not be created (unknown DID, unknown RSE expression, no quota...)."""

    reason: str


EVENT_TYPES: Final[tuple[type[ReplicationEvent], ...]] = (
    ReplicationRequested,
    ReplicationRuleCreated,
    ReplicationStateObserved,
    ReplicationMigrationRequested,
    ReplicationMigrationCompleted,
    ReplicationMigrationFailed,
    ReplicationCancelled,
    ReplicationRuleRemoved,
    ReplicationFailed,
)

_CATALOGUE: Final = EventCatalogue[ReplicationEvent](EVENT_TYPES)
EVENT_TYPES_BY_TAG: Final = _CATALOGUE.types_by_tag
SCHEMA_VERSIONS: Final = _CATALOGUE.schema_versions
encode_event: Final = _CATALOGUE.encode
decode_event: Final = _CATALOGUE.decode
