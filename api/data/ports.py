"""What the data controllers need; the bootstrap implements the read model over
``projections/replications.py`` (the API never imports projections)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import msgspec

DATA = "data"
"""Application-state key of the DataApi."""


class ReplicationView(msgspec.Struct, kw_only=True):
    id: str
    status: str
    dids: list[str]
    copies: int
    rse_expression: str
    created_at: datetime
    updated_at: datetime
    owner_issuer: str | None = None
    owner_subject: str | None = None
    deployment_id: str | None = None
    requirement_index: int | None = None
    wait: bool = False
    lifetime_seconds: int | None = None
    rule_ids: list[str] = msgspec.field(default_factory=list)
    rule_state: str | None = None
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0
    migration_rse_expression: str | None = None
    migration_rule_ids: list[str] = msgspec.field(default_factory=list)
    migration_rule_state: str | None = None
    reason: str | None = None
    stream_version: int = 0


class ReplicationReadModel(Protocol):
    async def get(self, replication_id: str) -> ReplicationView | None: ...

    async def list(self, *, owner_issuer: str | None, owner_subject: str | None,
                   deployment_id: str | None, offset: int,
                   limit: int) -> tuple[list[ReplicationView], int]: ...


@dataclass
class DataApi:
    replications: ReplicationReadModel
    # False when no Rucio is configured: requests would never be carried out.
    rucio_configured: bool = True
