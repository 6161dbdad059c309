"""The deployment events as a storage format: round trips, evolution, golden documents."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings

from domain.deployments import (
    EVENT_TYPES,
    DeploymentAttemptStarted,
    DeploymentEvent,
    DeploymentRequested,
    IaasType,
    decode_event,
    encode_event,
    event_tag,
)
from domain.identity import Actor
from tests.msgspec_strategies import strategy_for_type


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=event_tag)
def test_every_event_type_round_trips_through_json(event_type: type[DeploymentEvent]) -> None:
    @settings(max_examples=40, deadline=None)
    @given(strategy_for_type(event_type))
    def round_trip(event: DeploymentEvent) -> None:
        data = encode_event(event)
        assert msgspec.json.decode(data)["type"] == event_tag(event_type)
        decoded = decode_event(data)
        assert type(decoded) is event_type
        assert decoded == event
        # The event store decodes per type (and converts after upcasting): same result.
        assert msgspec.json.decode(data, type=event_type) == event
        assert msgspec.convert(msgspec.json.decode(data), event_type) == event

    round_trip()


def test_unknown_fields_are_ignored_on_decode() -> None:
    event = decode_event(
        b'{"type":"deployment.log_updated","deployment_id":"d","occurred_at":"2025-02-20T10:15:00Z",'
        b'"actor":{"issuer":"i","subject":"s","display_name":"new"},"log":"ok","added_later":[1]}'
    )
    assert event.deployment_id == "d"


def test_an_unknown_tag_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"deployment.teleported","deployment_id":"d"}')


# Golden documents: the storage format of version 1. If one of these stops decoding to the
# same event, stored history no longer reads: add a new tag or an upcaster instead.
GOLDEN_REQUESTED = b"""{
  "type": "deployment.requested",
  "deployment_id": "11ef8b7c-2f4e-1b2a-9a3d-0242ac120002",
  "occurred_at": "2025-02-20T10:15:00Z",
  "actor": {"issuer": "https://iam.example/", "subject": "0c1d"},
  "operation": 1,
  "owner": {"issuer": "https://iam.example/", "subject": "0c1d"},
  "user_group": "g1",
  "template": "tosca_definitions_version: tosca_simple_yaml_1_0\\n",
  "template_identity": {"name": "single-vm", "type": "vm", "hash": "ab12",
                        "version": null, "node_types": ["tosca.nodes.indigo.Compute"]},
  "requested_resources": {"vms": 1, "vcpus": 2, "ram_mb": 4096, "gpus": 0, "disk_gb": 20.0,
                          "volumes": 1, "volumes_gb": 10.0, "public_ips": 1,
                          "os": [{"image": null, "distribution": "ubuntu", "version": "22.04",
                                  "type": "linux", "architecture": null}]},
  "parameters": {"num_cpus": 2, "ports": [22, 80], "extra": {"a": null}},
  "callback": "https://dashboard.example/callback",
  "timeout_mins": 720,
  "provider_timeout_mins": 120,
  "max_providers_retry": 2,
  "keep_last_attempt": true,
  "preferred_site": {"provider_id": "prov-a", "region": null}
}"""

GOLDEN_ATTEMPT_STARTED = b"""{
  "type": "deployment.attempt_started",
  "deployment_id": "d",
  "occurred_at": "2025-02-20T10:16:00.123456+00:00",
  "actor": {"issuer": "urn:paas-orchestrator", "subject": "im-handler"},
  "operation": 1,
  "attempt": 1,
  "site": {"provider_id": "prov-a", "provider_name": "BACKBONE", "region": "cnaf", "project": "p1"},
  "cloud_provider_endpoint": {"cp_endpoint": "https://keystone.example:5000/v3",
                              "iaas_type": "OPENSTACK", "cp_compute_service_id": "svc-42",
                              "region": "cnaf", "vault_uri": null, "im_endpoint": null},
  "deployment_provider": "IM"
}"""


def test_golden_documents_still_decode() -> None:
    requested = decode_event(GOLDEN_REQUESTED)
    assert isinstance(requested, DeploymentRequested)
    assert requested.owner == Actor(issuer="https://iam.example/", subject="0c1d")
    assert requested.occurred_at == datetime(2025, 2, 20, 10, 15, tzinfo=UTC)
    assert requested.requested_resources.os[0].version == "22.04"
    assert requested.parameters == {"num_cpus": 2, "ports": [22, 80], "extra": {"a": None}}
    assert decode_event(encode_event(requested)) == requested

    started = decode_event(GOLDEN_ATTEMPT_STARTED)
    assert isinstance(started, DeploymentAttemptStarted)
    assert started.cloud_provider_endpoint is not None
    assert started.cloud_provider_endpoint.iaas_type == IaasType.OPENSTACK
    assert started.site.provider_name == "BACKBONE"
