"""The provider events as a storage format (round trips, newer fields), and the usage stream."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.providers import (
    EVENT_TYPES,
    EVENT_TYPES_BY_TAG,
    ProviderEvent,
    QuotaKind,
    QuotaRecord,
    QuotaValues,
    ServiceType,
    decode_event,
    encode_event,
    event_tag,
)
from domain.providers.usage import (
    RecordQuotaUsage,
    decide_usage,
    decode_usage_event,
    encode_usage_event,
)
from tests.msgspec_strategies import strategy_for_type

from .support import INGEST, NOW, usage_after


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=event_tag)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_events_round_trip_through_json(
    event_type: type[ProviderEvent], data: st.DataObject
) -> None:
    event = data.draw(strategy_for_type(event_type))
    assert decode_event(encode_event(event)) == event


def test_an_older_reader_ignores_new_fields() -> None:
    raw = msgspec.json.decode(
        encode_event(
            EVENT_TYPES_BY_TAG["provider.region_removed"](
                provider_id="p.openstack", occurred_at=NOW, actor=INGEST, region_name="r1"
            )
        )
    )
    raw["added_in_a_later_version"] = True
    assert event_tag(decode_event(msgspec.json.encode(raw))) == "provider.region_removed"


# --- the usage stream ------------------------------------------------------------------------


def usage(cores: int) -> RecordQuotaUsage:
    return RecordQuotaUsage(
        provider_id="p.openstack",
        actor=INGEST,
        samples=(
            QuotaRecord(
                region="r1",
                project_id="p1",
                service_type=ServiceType.COMPUTE,
                kind=QuotaKind.USAGE,
                values=QuotaValues(cores=cores),
            ),
        ),
        observed_at=NOW,
    )


def test_usage_samples_are_appended_only_on_change_or_after_a_heartbeat() -> None:
    state = usage_after([usage(10)])
    assert decide_usage(usage(10), state, now=NOW) == []
    [changed] = decide_usage(usage(12), state, now=NOW)
    assert decode_usage_event(encode_usage_event(changed)) == changed
    later = msgspec.structs.replace(usage(10), observed_at=NOW + timedelta(hours=2))
    assert decide_usage(later, state, now=NOW, heartbeat=timedelta(hours=3)) == []
    assert len(decide_usage(later, state, now=NOW, heartbeat=timedelta(hours=1))) == 1


def test_usage_commands_accept_only_usage_records() -> None:
    from domain.providers import InvalidObservation

    limit = msgspec.structs.replace(
        usage(1), samples=(msgspec.structs.replace(usage(1).samples[0], kind=QuotaKind.LIMIT),)
    )
    with pytest.raises(InvalidObservation, match="not usage"):
        decide_usage(limit, usage_after([]), now=NOW)
