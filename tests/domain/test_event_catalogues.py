"""Every aggregate's events as a storage format: stable tags under the aggregate's prefix, a
schema version per tag, frozen structs tagged by ``type`` that accept unknown fields (older
code reads newer events), and no field named like a secret."""

from __future__ import annotations

import msgspec
import msgspec.inspect as mi
import pytest

from domain import deployments, providers, replications
from domain.event_catalogue import event_tag
from domain.providers import usage

SECRET_WORDS = ("token", "password", "secret", "private_key", "credential", "refresh")


def _field_names(info: mi.Type, seen: set[type]) -> set[str]:
    names: set[str] = set()
    if isinstance(info, mi.StructType) and info.cls not in seen:
        seen.add(info.cls)
        for field in info.fields:
            names.add(field.name)
            names |= _field_names(field.type, seen)
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            names |= _field_names(member, seen)
    elif isinstance(info, mi.VarTupleType | mi.ListType):
        names |= _field_names(info.item_type, seen)
    elif isinstance(info, mi.DictType):
        names |= _field_names(info.value_type, seen)
    return names


def secret_field_names(event_type: type[msgspec.Struct]) -> set[str]:
    """The names of ``event_type``'s fields (nested ones included) that look like a secret."""
    names = _field_names(mi.type_info(event_type), set())
    return {name for name in names for word in SECRET_WORDS if word in name}


CATALOGUES = [
    pytest.param("deployment.", deployments.EVENT_TYPES, deployments.SCHEMA_VERSIONS,
                 deployments.DeploymentEvent, id="deployment"),
    pytest.param("provider.", providers.EVENT_TYPES, providers.SCHEMA_VERSIONS,
                 providers.ProviderEvent, id="provider"),
    pytest.param("quotausage.", usage.USAGE_EVENT_TYPES, usage.USAGE_SCHEMA_VERSIONS,
                 usage.QuotaUsageEvent, id="quotausage"),
    pytest.param("replication.", replications.EVENT_TYPES, replications.SCHEMA_VERSIONS,
                 replications.ReplicationEvent, id="replication"),
]

ALL_EVENT_TYPES = [
    *deployments.EVENT_TYPES, *providers.EVENT_TYPES, *usage.USAGE_EVENT_TYPES,
    *replications.EVENT_TYPES,
]


@pytest.mark.parametrize(("prefix", "event_types", "schema_versions", "base"), CATALOGUES)
def test_every_event_type_has_a_stable_tag_and_a_schema_version(
        prefix: str, event_types: tuple[type[msgspec.Struct], ...],
        schema_versions: dict[str, int], base: type[msgspec.Struct]) -> None:
    tags = [event_tag(t) for t in event_types]
    assert len(set(tags)) == len(tags)
    assert all(tag.startswith(prefix) for tag in tags)
    assert schema_versions == dict.fromkeys(tags, 1)
    assert all(issubclass(t, base) for t in event_types)


@pytest.mark.parametrize("event_type", ALL_EVENT_TYPES, ids=event_tag)
def test_events_are_frozen_tagged_and_accept_unknown_fields(
        event_type: type[msgspec.Struct]) -> None:
    config = event_type.__struct_config__
    assert config.frozen
    assert config.tag_field == "type"
    assert not config.forbid_unknown_fields


@pytest.mark.parametrize("event_type", ALL_EVENT_TYPES, ids=event_tag)
def test_no_event_has_a_field_for_a_secret(event_type: type[msgspec.Struct]) -> None:
    assert not secret_field_names(event_type)
