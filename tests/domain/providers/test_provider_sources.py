"""The observed shapes: strict parsing with clear problems, and normalisation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.providers import (
    InvalidObservation,
    ProviderStatus,
    QuotaKind,
    QuotaValues,
    ScanScope,
    ServiceType,
)
from domain.providers.naming import canonical_provider_id
from domain.providers.sources import (
    observe_feeder_messages,
    observe_tree,
    parse_feeder_message,
    parse_provider_tree,
    snapshot_from_tree,
)
from domain.providers.values import ProviderType

from .support import CMS, INGEST, ML, feeder_message, region_of, registry_tree

Edit = Callable[[dict[str, Any]], None]


def r1(tree: dict[str, Any]) -> dict[str, Any]:
    return region_of(tree, "RegionOne")


def nova(tree: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = r1(tree)["compute_services"][0]
    return service


def test_a_tree_is_normalised_with_explicit_units_and_natural_keys() -> None:
    snapshot, scopes = snapshot_from_tree(parse_provider_tree(json.dumps(registry_tree())))
    assert snapshot.complete and snapshot.status == ProviderStatus.ACTIVE
    small = next(f for f in snapshot.flavors if f.name == "m1.small")
    assert (small.region, small.vcpus, small.ram_mib, small.disk_gib) == ("RegionOne", 1, 2048, 20)
    jammy = next(i for i in snapshot.images if i.name == "ubuntu-jammy-x86_64")
    assert jammy.os_type == "Linux"
    assert jammy.created_at == datetime(2025, 7, 16, 10, 26, 41, tzinfo=UTC)
    per_user = next(q for q in snapshot.quotas if q.kind == QuotaKind.PER_USER)
    assert per_user.values == QuotaValues(cores=8, ram_mib=16384, instances=4)
    assert per_user.service_type == ServiceType.COMPUTE
    assert scopes == (
        ScanScope(region="RegionOne", project_id=CMS),
        ScanScope(region="RegionOne", project_id=ML),
        ScanScope(region="RegionTwo", project_id=ML),
    )
    assert {(s.sla_id, s.user_group, s.projects) for s in snapshot.slas} == {
        ("3f6c0e2a9d5b4c1e8f7a6b5c4d3e2f10", "ml-research", (ML,)),
        ("7d8e9f0a1b2c4d3e8f6a5b4c3d2e1f00", "cms", (CMS,)),
    }


@pytest.mark.parametrize(
    ("status", "expected", "complete"),
    [
        ("active", ProviderStatus.ACTIVE, True),
        ("limited", None, False),
        ("maintenance", ProviderStatus.MAINTENANCE, False),
        ("removed", ProviderStatus.REMOVED, False),
    ],
)
def test_the_registry_status_maps_to_a_status_and_completeness(
    status: str, expected: ProviderStatus | None, complete: bool
) -> None:
    tree = registry_tree()
    tree["status"] = status
    snapshot, _ = snapshot_from_tree(parse_provider_tree(tree))
    assert (snapshot.status, snapshot.complete) == (expected, complete)


def _set(path: list[Any], value: Any) -> Edit:
    def edit(tree: dict[str, Any]) -> None:
        node: Any = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _delete(path: list[Any]) -> Edit:
    def edit(tree: dict[str, Any]) -> None:
        node: Any = tree
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def _append_duplicate(list_path: list[Any]) -> Edit:
    def edit(tree: dict[str, Any]) -> None:
        node: Any = tree
        for key in list_path:
            node = node[key]
        node.append(dict(node[0]))

    return edit


FLAVOR0 = ["regions", 0, "compute_services", 0, "flavors", 0]
IMAGE0 = ["regions", 0, "compute_services", 0, "images", 0]
QUOTA0 = ["regions", 0, "compute_services", 0, "quotas", 0]
SLA0 = ["identity_providers", 0, "user_groups", 0, "sla"]

BAD_TREES: list[tuple[str, Edit, str]] = [
    ("no name", _delete(["name"]), "missing required field `name`"),
    ("unknown type", _set(["type"], "vmware"), "at `$.type`"),
    ("unknown status", _set(["status"], "broken"), "at `$.status`"),
    ("region without name", _delete(["regions", 1, "name"]), "at `$.regions[1]`"),
    ("flavor without uuid", _delete([*FLAVOR0, "uuid"]), "flavors[0]"),
    ("negative vcpus", _set([*FLAVOR0, "vcpus"], -2), "flavors[0].vcpus"),
    (
        "quota below -1",
        _set(["regions", 0, "block_storage_services", 0, "quotas", 0, "gigabytes"], -5),
        "gigabytes",
    ),
    ("unknown quota type", _set([*QUOTA0, "type"], "gpu"), "quotas[0].type"),
    (
        "latitude out of range",
        _set(["regions", 0, "location", "latitude"], 100),
        "location.latitude",
    ),
    ("not a date", _set([*SLA0, "start_date"], "soon"), "sla.start_date"),
    (
        "gpu vendor without gpu",
        _set([*FLAVOR0, "gpu_vendor"], "NVIDIA"),
        "regions[0].compute_services[0].flavors[0]: gpu_vendor and gpu_model must be null",
    ),
    (
        "duplicate flavour",
        _append_duplicate(FLAVOR0[:-1]),
        "regions[0].compute_services[0].flavors: uuid 'f1a2b3c4-0001-4a1b-9c00-000000000001' "
        "appears twice",
    ),
    (
        "private image without project",
        _set([*IMAGE0, "is_shared"], False),
        "images[0].projects: a private item needs at least one project",
    ),
    (
        "private flavour of a foreign project",
        _set(["regions", 0, "compute_services", 0, "flavors", 3, "projects"], ["someone-else"]),
        "flavors[3].projects: 'someone-else' is not one of the provider's projects",
    ),
    (
        "quota of a foreign project",
        _set([*QUOTA0, "project"], "someone-else"),
        "quotas[0].project: 'someone-else' is not one of the provider's projects",
    ),
    ("quota without project", _delete([*QUOTA0, "project"]), "quotas[0].project: required"),
    (
        "two limits for one project",
        _set(["regions", 0, "compute_services", 0, "quotas", 1, "usage"], False),
        "a second limit compute quota for project",
    ),
    (
        "usage and per-user",
        _set(["regions", 0, "compute_services", 0, "quotas", 1, "per_user"], True),
        "usage and per_user cannot both be true",
    ),
    (
        "compute quota in a network service",
        _set(["regions", 0, "network_services", 0, "quotas", 0, "type"], "compute"),
        "a compute quota in a network service",
    ),
    (
        "SLA dates reversed",
        _set([*SLA0, "end_date"], "2024-01-01"),
        "start_date must be before end_date",
    ),
    (
        "SLA of an unknown project",
        _set([*SLA0, "project"], "nope"),
        "sla.project: 'nope' is not one of the provider's projects",
    ),
    ("duplicate region", _append_duplicate(["regions"]), "regions: name 'RegionOne' appears"),
    ("duplicate project", _append_duplicate(["projects"]), "projects: uuid"),
    (
        "bad service name",
        _set(["regions", 0, "compute_services", 0, "name"], "nova"),
        "'nova' is not a compute service",
    ),
    ("bad os type", _set([*IMAGE0, "os_type"], "Solaris"), "os_type: 'Solaris' is not one of"),
    (
        "same SLA for two groups",
        _set(
            ["identity_providers", 0, "user_groups", 1, "sla", "doc_uuid"],
            "3f6c0e2a9d5b4c1e8f7a6b5c4d3e2f10",
        ),
        "is already the SLA of another group",
    ),
]


@pytest.mark.parametrize(
    ("edit", "problem"), [(e, p) for _, e, p in BAD_TREES], ids=[name for name, _, _ in BAD_TREES]
)
def test_a_malformed_or_partial_tree_is_refused_with_the_problem_named(
    edit: Edit, problem: str
) -> None:
    tree = registry_tree()
    edit(tree)
    with pytest.raises(InvalidObservation) as caught:
        observe_tree(tree, actor=INGEST)
    assert problem in caught.value.message
    assert caught.value.message.startswith("Invalid provider tree: ")


def test_garbage_is_refused() -> None:
    with pytest.raises(InvalidObservation, match="Invalid provider tree"):
        parse_provider_tree(b"{not json")
    with pytest.raises(InvalidObservation, match="Expected `object`"):
        parse_provider_tree(b"[]")


def test_every_problem_is_reported_at_once() -> None:
    tree = registry_tree()
    nova(tree)["flavors"][0]["gpu_vendor"] = "NVIDIA"
    nova(tree)["images"][0]["os_type"] = "Plan9"
    with pytest.raises(InvalidObservation) as caught:
        parse_provider_tree(tree)
    assert len(caught.value.problems) == 2


def test_unknown_fields_are_ignored() -> None:
    tree = registry_tree()
    tree["uid"] = "abc"
    nova(tree)["flavors"][0]["schema_type"] = "private_extended"
    parse_provider_tree(tree)


# --- Feeder messages -------------------------------------------------------------------------


def test_a_feeder_message_is_one_scope_scanned_fine() -> None:
    command = observe_feeder_messages([json.dumps(feeder_message())], actor=INGEST, scan_id="k")
    assert command.provider_id == "cloud-example.openstack"
    assert command.scopes_scanned_ok == (ScanScope(region="RegionOne", project_id=ML),)
    snapshot = command.snapshot
    assert not snapshot.complete
    assert snapshot.observed_at == datetime(2025, 10, 3, 7, 5, 33, tzinfo=UTC)
    assert {q.project_id for q in snapshot.quotas} == {ML}
    assert snapshot.identity_providers[0].idp_name == "infn-cc"


def test_messages_of_one_run_merge_into_one_observation() -> None:
    cms = feeder_message(project_id=CMS, user_group="cms")
    cms["compute_services"][0]["quotas"] = [
        {"type": "compute", "project": CMS, "usage": False, "per_user": False, "cores": 40}
    ]
    cms["block_storage_services"] = []
    cms["network_services"] = []
    command = observe_feeder_messages([feeder_message(), cms], actor=INGEST)
    assert len(command.scopes_scanned_ok) == 2
    assert len(command.snapshot.slas) == 2
    assert len({(f.region, f.uuid) for f in command.snapshot.flavors}) == len(
        command.snapshot.flavors
    )


BAD_MESSAGES: list[tuple[str, Edit, str]] = [
    ("unsupported version", _set(["msg_version"], "2.0.0"), "'2.0.0' is not supported"),
    ("no project", _delete(["project_id"]), "missing required field `project_id`"),
    ("no region", _delete(["region_name"]), "missing required field `region_name`"),
    (
        "quota of another project",
        _set(["compute_services", 0, "quotas", 0, "project"], CMS),
        "is not the message's project",
    ),
    (
        "bad flavour",
        _set(["compute_services", 0, "flavors", 0, "ram"], "lots"),
        "compute_services[0].flavors[0].ram",
    ),
]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [(e, p) for _, e, p in BAD_MESSAGES],
    ids=[name for name, _, _ in BAD_MESSAGES],
)
def test_a_malformed_feeder_message_is_refused(edit: Edit, problem: str) -> None:
    message = feeder_message()
    edit(message)
    with pytest.raises(InvalidObservation) as caught:
        parse_feeder_message(message)
    assert problem in caught.value.message


def test_messages_of_two_providers_or_a_repeated_scope_are_refused() -> None:
    other = feeder_message(provider_name="ANOTHER")
    with pytest.raises(InvalidObservation, match="is not CLOUD-EXAMPLE"):
        observe_feeder_messages([feeder_message(), other], actor=INGEST)
    with pytest.raises(InvalidObservation, match="repeats message 0"):
        observe_feeder_messages([feeder_message(), feeder_message()], actor=INGEST)
    with pytest.raises(InvalidObservation, match="no message"):
        observe_feeder_messages([], actor=INGEST)


# --- canonical ids --------------------------------------------------------------------------


def test_canonical_ids_are_stable_slugs_of_the_registry_key() -> None:
    assert canonical_provider_id("CLOUD-CNAF-T1", "openstack") == "cloud-cnaf-t1.openstack"
    assert canonical_provider_id("Cloud Veneto", ProviderType.KUBERNETES) == (
        "cloud-veneto.kubernetes"
    )
