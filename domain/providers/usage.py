"""Quota usage: telemetry on its own stream category, ``quotausage-<provider id>``.

Usage changes on practically every scan (``provider-model.md`` section 4.7 #4), so samples
stay off the provider streams: the provider stream keeps limits, this one the latest usage per
``(region, project, service type)``. A sample is appended only when a value changed (or, with
``heartbeat``, when the last sample of that key is older), and one event carries every changed
sample of a scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, TypeAlias

import msgspec

from domain.event_catalogue import EventCatalogue
from domain.identity import Actor

from .commands import ObserveProvider
from .errors import InvalidObservation
from .naming import check_provider_id
from .values import QuotaKind, QuotaRecord, ServiceType

UsageKey: TypeAlias = tuple[str, str, ServiceType]
"""``(region, project_id, service_type)``."""


def usage_key(record: QuotaRecord) -> UsageKey:
    return (record.region, record.project_id, record.service_type)


class QuotaUsageEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    provider_id: str
    occurred_at: datetime
    actor: Actor
    scan_id: str | None = None


class QuotaUsageSampled(QuotaUsageEvent, tag="quotausage.sampled", frozen=True, kw_only=True):
    """Usage records (``kind`` usage) that changed since the last sample of their key."""

    samples: tuple[QuotaRecord, ...]


USAGE_EVENT_TYPES: Final[tuple[type[QuotaUsageEvent], ...]] = (QuotaUsageSampled,)
_CATALOGUE: Final = EventCatalogue[QuotaUsageEvent](USAGE_EVENT_TYPES)
USAGE_SCHEMA_VERSIONS: Final = _CATALOGUE.schema_versions
encode_usage_event: Final = _CATALOGUE.encode
decode_usage_event: Final = _CATALOGUE.decode


class QuotaUsageState(msgspec.Struct, frozen=True, kw_only=True):
    """Latest usage per key, and when it was sampled. Never mutate the dicts."""

    provider_id: str = ""
    version: int = 0
    samples: dict[UsageKey, QuotaRecord] = msgspec.field(default_factory=dict)
    sampled_at: dict[UsageKey, datetime] = msgspec.field(default_factory=dict)


class RecordQuotaUsage(msgspec.Struct, frozen=True, kw_only=True):
    provider_id: str
    actor: Actor
    samples: tuple[QuotaRecord, ...]
    observed_at: datetime | None = None
    scan_id: str | None = None


def usage_command(observation: ObserveProvider) -> RecordQuotaUsage:
    """The usage part of an observation, for the usage stream."""
    return RecordQuotaUsage(
        provider_id=observation.provider_id,
        actor=observation.actor,
        samples=tuple(q for q in observation.snapshot.quotas if q.kind == QuotaKind.USAGE),
        observed_at=observation.snapshot.observed_at,
        scan_id=observation.scan_id,
    )


def fold_usage(
    events: Iterable[QuotaUsageEvent], state: QuotaUsageState | None = None
) -> QuotaUsageState:
    state = state if state is not None else QuotaUsageState()
    samples = dict(state.samples)
    sampled_at = dict(state.sampled_at)
    version = state.version
    provider_id = state.provider_id
    for event in events:
        version += 1
        provider_id = event.provider_id
        if isinstance(event, QuotaUsageSampled):
            for record in event.samples:
                samples[usage_key(record)] = record
                sampled_at[usage_key(record)] = event.occurred_at
    return QuotaUsageState(
        provider_id=provider_id, version=version, samples=samples, sampled_at=sampled_at
    )


def decide_usage(
    command: RecordQuotaUsage,
    state: QuotaUsageState,
    *,
    now: datetime,
    heartbeat: timedelta | None = None,
) -> list[QuotaUsageEvent]:
    check_provider_id(command.provider_id)
    at = command.observed_at or now
    problems = [
        f"quotas: {r.region}/{r.project_id}/{r.service_type} is a {r.kind} record, not usage"
        for r in command.samples
        if r.kind != QuotaKind.USAGE
    ]
    keys = [usage_key(r) for r in command.samples]
    if len(set(keys)) != len(keys):
        problems.append("quotas: two usage records for the same region, project and service")
    if problems:
        raise InvalidObservation("usage observation", problems)
    changed = []
    for key, record in sorted(zip(keys, command.samples, strict=True), key=lambda kr: kr[0]):
        previous = state.samples.get(key)
        stale = (
            heartbeat is not None
            and key in state.sampled_at
            and at - state.sampled_at[key] >= heartbeat
        )
        if previous != record or stale:
            changed.append(record)
    if not changed:
        return []
    return [
        QuotaUsageSampled(
            provider_id=command.provider_id,
            occurred_at=at,
            actor=command.actor,
            scan_id=command.scan_id,
            samples=tuple(changed),
        )
    ]
