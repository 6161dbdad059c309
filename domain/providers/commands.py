"""Provider commands: observations from the ingestion, and operator (admin) decisions.

Every command names the provider (canonical id) and the acting identity: an admin for
operator commands (the API checks the role; the events record who it was), the ingestion's
system identity for observations.
"""

from __future__ import annotations

import msgspec

from domain.identity import Actor

from .values import (
    ObservedProvider,
    ProviderAlias,
    ProviderDetails,
    ProviderStatus,
    ScanScope,
    ScopeFailure,
)


class ProviderCommand(msgspec.Struct, frozen=True, kw_only=True):
    provider_id: str
    actor: Actor


class ObserveProvider(ProviderCommand, frozen=True, kw_only=True):
    """A scan result: the snapshot, which scopes were scanned fine and which failed.

    Only data of scopes in ``scopes_scanned_ok`` can remove or narrow catalogue items; a
    failed scope never removes anything. ``scan_id`` and ``snapshot.observed_at`` (else the
    decision time) are stamped on the events.
    """

    snapshot: ObservedProvider
    scopes_scanned_ok: tuple[ScanScope, ...] = ()
    scopes_failed: tuple[ScopeFailure, ...] = ()
    scan_id: str | None = None


class RegisterProvider(ProviderCommand, frozen=True, kw_only=True):
    """An operator registers a provider ahead of (or instead of) its first scan.

    The registry alias ``details.name`` is always added; ``aliases`` adds others.
    """

    details: ProviderDetails
    status: ProviderStatus = ProviderStatus.ACTIVE
    aliases: tuple[ProviderAlias, ...] = ()
    priority: int = 50
    reason: str = ""


class SetProviderStatus(ProviderCommand, frozen=True, kw_only=True):
    status: ProviderStatus
    reason: str = ""


class AddProviderAlias(ProviderCommand, frozen=True, kw_only=True):
    alias: ProviderAlias


class RemoveProviderAlias(ProviderCommand, frozen=True, kw_only=True):
    alias: ProviderAlias


class SetProviderPriority(ProviderCommand, frozen=True, kw_only=True):
    """Operator priority for the built-in ranking, 0 (avoid) to 100 (prefer); default 50."""

    priority: int
    reason: str = ""
