"""Given/when/then for ingestion: a realistic sequence of observations of one provider."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import msgspec
import pytest

from domain.providers import (
    AddProviderAlias,
    AliasSystem,
    AlreadyRegistered,
    Availability,
    AvailabilityChanged,
    ChangeSource,
    FlavorChanged,
    FlavorRemoved,
    InvalidCommand,
    InvalidObservation,
    ObserveProvider,
    ProviderAlias,
    ProviderAliasAdded,
    ProviderDetails,
    ProviderNotFound,
    ProviderPrioritySet,
    ProviderRegistered,
    ProviderState,
    ProviderStatus,
    ProviderStatusChanged,
    ProviderType,
    QuotaKind,
    QuotaLimitsChanged,
    QuotaValues,
    RegisterProvider,
    ScanScope,
    ScopeFailure,
    ScopeScanFailed,
    ServiceType,
    SetProviderPriority,
    SetProviderStatus,
)
from domain.providers.sources import observe_feeder_messages, observe_tree
from domain.providers.usage import usage_command

from .support import (
    ADMIN,
    CMS,
    INGEST,
    ML,
    NOW,
    PROVIDER_ID,
    T0,
    feeder_message,
    given,
    given_state,
    observed,
    region_of,
    registry_tree,
    summaries,
    usage_after,
)

R1, R2 = "RegionOne", "RegionTwo"
SMALL = "f1a2b3c4-0001-4a1b-9c00-000000000001"
LARGE = "f1a2b3c4-0002-4a1b-9c00-000000000002"
GPU = "f1a2b3c4-0003-4a1b-9c00-000000000003"
HPC = "f1a2b3c4-0004-4a1b-9c00-000000000004"
MEDIUM = "f1a2b3c4-0005-4a1b-9c00-000000000005"
XLARGE = "f1a2b3c4-0006-4a1b-9c00-000000000006"
JAMMY = "1b0c6f2e-aaaa-4c11-8d22-000000000101"
ALMA = "1b0c6f2e-bbbb-4c11-8d22-000000000102"
CUDA = "1b0c6f2e-cccc-4c11-8d22-000000000103"
NOBLE = "1b0c6f2e-dddd-4c11-8d22-000000000104"
PUBLIC_NET = "5bf80ea7-0000-42fc-94e4-000000000201"
PRIVATE_NET = "8103df2e-0000-4588-bd3c-000000000202"
ML_SLA = "3f6c0e2a9d5b4c1e8f7a6b5c4d3e2f10"
CMS_SLA = "7d8e9f0a1b2c4d3e8f6a5b4c3d2e1f00"


def observe(
    tree: dict[str, Any], *, at_minutes: int = 0, scan: str = "scan", **kw: Any
) -> ObserveProvider:
    return observe_tree(
        tree,
        actor=INGEST,
        scan_id=scan,
        observed_at=T0 + timedelta(minutes=at_minutes),
        **kw,
    )


def first_observation() -> ProviderState:
    return observed(observe(registry_tree()))


def compute_of(tree: dict[str, Any], region: str) -> dict[str, Any]:
    service: dict[str, Any] = region_of(tree, region)["compute_services"][0]
    return service


def flavor_in(tree: dict[str, Any], region: str, uuid: str) -> dict[str, Any]:
    flavor: dict[str, Any] = next(
        f for f in compute_of(tree, region)["flavors"] if f["uuid"] == uuid
    )
    return flavor


# --- 1. first observation --------------------------------------------------------------------


def test_the_first_observation_registers_the_provider_and_its_whole_catalogue() -> None:
    state = (
        given()
        .when(observe(registry_tree(), scan="scan-1"))
        .then_summaries(
            ("provider.registered", "CLOUD-EXAMPLE"),
            ("provider.region_added", R1),
            ("provider.region_added", R2),
            ("provider.project_added", CMS),
            ("provider.project_added", ML),
            ("provider.identity_provider_trusted", "https://iam.example.org/"),
            ("provider.user_group_added", ("https://iam.example.org/", "cms")),
            ("provider.user_group_added", ("https://iam.example.org/", "ml-research")),
            ("provider.sla_added", ML_SLA),
            ("provider.sla_added", CMS_SLA),
            ("provider.service_added", R1, "https://cinder.r1.example.org:8776/v3"),
            ("provider.service_added", R1, "https://keystone.example.org:5000/v3"),
            ("provider.service_added", R1, "https://neutron.r1.example.org:9696"),
            ("provider.service_added", R1, "https://nova.r1.example.org:8774/v2.1"),
            ("provider.service_added", R2, "https://keystone.example.org:5000/v3"),
            ("provider.service_added", R2, "https://nova.r2.example.org:8774/v2.1"),
            ("provider.flavor_added", R1, SMALL),
            ("provider.flavor_added", R1, LARGE),
            ("provider.flavor_added", R1, GPU),
            ("provider.flavor_added", R1, HPC),
            ("provider.flavor_added", R2, MEDIUM),
            ("provider.image_added", R1, JAMMY),
            ("provider.image_added", R1, ALMA),
            ("provider.image_added", R1, CUDA),
            ("provider.image_added", R2, ALMA),
            ("provider.network_added", R1, PUBLIC_NET),
            ("provider.network_added", R1, PRIVATE_NET),
            ("provider.quota_limits_changed", R1, CMS, "compute", "limit"),
            ("provider.quota_limits_changed", R1, ML, "block-storage", "limit"),
            ("provider.quota_limits_changed", R1, ML, "compute", "limit"),
            ("provider.quota_limits_changed", R1, ML, "compute", "per_user"),
            ("provider.quota_limits_changed", R1, ML, "network", "limit"),
            ("provider.quota_limits_changed", R2, ML, "compute", "limit"),
            ("provider.availability_changed", "unknown", "available", ()),
        )
    )
    assert state.provider_id == PROVIDER_ID
    assert state.details == ProviderDetails(
        name="CLOUD-EXAMPLE",
        type=ProviderType.OPENSTACK,
        support_emails=("cloud-support@example.org",),
        auth_endpoint="https://keystone.example.org:5000/v3",
    )
    assert state.status == ProviderStatus.ACTIVE
    assert state.aliases == (ProviderAlias(system=AliasSystem.REGISTRY, name="CLOUD-EXAMPLE"),)
    gpu = state.flavors[(R1, GPU)]
    assert (gpu.gpus, gpu.gpu_vendor, gpu.gpu_model, gpu.local_storage) == (
        1,
        "NVIDIA",
        "A100",
        "nvme",
    )
    assert state.flavors[(R1, HPC)].projects == (ML,) and state.flavors[(R1, HPC)].infiniband
    assert state.images[(R1, CUDA)].tags == ("gpu", "infn-cloud")
    assert (
        state.regions[R2].location is not None
        and state.regions[R2].location.site == "EXAMPLE-CATANIA"
    )
    assert state.quotas[(R1, ML, ServiceType.COMPUTE, QuotaKind.LIMIT)].values == QuotaValues(
        cores=120, instances=50, ram_mib=204800
    )
    assert state.availability == Availability.AVAILABLE


def test_every_event_of_an_observation_carries_the_scan_and_the_observation_time() -> None:
    events = given().when(observe(registry_tree(), scan="scan-7", at_minutes=3)).events()
    assert {(e.scan_id, e.occurred_at, e.actor) for e in events} == {
        ("scan-7", T0 + timedelta(minutes=3), INGEST)
    }


def test_re_sending_an_identical_observation_decides_nothing() -> None:
    given_state(first_observation()).when(observe(registry_tree(), at_minutes=5)).then_nothing()


def test_the_catalogue_of_the_state_is_a_fixed_point() -> None:
    state = first_observation()
    snapshot = state.catalogue()
    scopes = tuple(ScanScope(region=r, project_id=p) for r in state.regions for p in state.projects)
    command = ObserveProvider(
        provider_id=PROVIDER_ID, actor=INGEST, snapshot=snapshot, scopes_scanned_ok=scopes
    )
    given_state(state).when(command).then_nothing()


# --- 2. changes ------------------------------------------------------------------------------


def changed_tree() -> dict[str, Any]:
    tree = registry_tree()
    r1, r2 = compute_of(tree, R1), compute_of(tree, R2)
    flavor_in(tree, R1, LARGE)["ram"] = 16384  # resized
    flavor_in(tree, R1, HPC)["projects"].append(CMS)  # access widened
    r1["flavors"] = [f for f in r1["flavors"] if f["uuid"] != SMALL]  # retired
    r2["flavors"].append(
        {
            "uuid": XLARGE,
            "name": "m1.xlarge",
            "is_shared": True,
            "vcpus": 8,
            "ram": 16384,
            "disk": 160,
        }
    )
    r1["images"] = [i for i in r1["images"] if i["uuid"] != JAMMY]
    r1["images"].append(
        {
            "uuid": NOBLE,
            "name": "ubuntu-noble-x86_64",
            "is_shared": True,
            "os_type": "linux",
            "os_distro": "ubuntu",
            "os_version": "24.04",
            "tags": ["infn-cloud"],
        }
    )
    r1["quotas"][0]["cores"] = 160  # ml-research compute limit raised
    r1["quotas"][1]["cores"] = 110  # usage moves: not a provider event
    region_of(tree, R2)["overbooking_cpu"] = 2.0
    tree["identity_providers"][0]["user_groups"][1]["sla"]["end_date"] = "2027-02-28"
    return tree


def test_changes_produce_exactly_the_changed_facts() -> None:
    state = first_observation()
    new_state = (
        given_state(state)
        .when(observe(changed_tree(), at_minutes=10))
        .then_summaries(
            ("provider.region_changed", R2),
            ("provider.sla_changed", CMS_SLA),
            ("provider.flavor_changed", R1, LARGE),
            ("provider.flavor_changed", R1, HPC),
            ("provider.flavor_added", R2, XLARGE),
            ("provider.flavor_removed", R1, SMALL),
            ("provider.image_added", R1, NOBLE),
            ("provider.image_removed", R1, JAMMY),
            ("provider.quota_limits_changed", R1, ML, "compute", "limit"),
        )
    )
    events = given_state(state).when(observe(changed_tree(), at_minutes=10)).events()
    resized = next(e for e in events if isinstance(e, FlavorChanged) and e.flavor.uuid == LARGE)
    assert resized.changed == ("ram_mib",) and resized.flavor.ram_mib == 16384
    widened = next(e for e in events if isinstance(e, FlavorChanged) and e.flavor.uuid == HPC)
    assert widened.changed == ("projects",) and widened.flavor.projects == tuple(sorted((ML, CMS)))
    raised = next(e for e in events if isinstance(e, QuotaLimitsChanged))
    assert raised.previous is not None and raised.previous.values.cores == 120
    assert raised.quota.values.cores == 160
    assert new_state.slas[CMS_SLA].end_date == date(2027, 2, 28)
    given_state(new_state).when(observe(changed_tree(), at_minutes=11)).then_nothing()


def test_quota_usage_goes_to_its_own_stream_only_when_it_changes() -> None:
    first = observe(registry_tree())
    usage = usage_after([usage_command(first)])
    assert len(usage.samples) == 5  # ml-research compute/block/network R1 and R2 compute, cms
    changed = usage_command(observe(changed_tree(), at_minutes=10))
    assert usage_after([usage_command(first)], usage).version == usage.version
    later = usage_after([changed], usage)
    assert later.version == usage.version + 1
    assert later.samples[(R1, ML, ServiceType.COMPUTE)].values.cores == 110


# --- 3. a partially failed scan --------------------------------------------------------------


def limited_tree() -> dict[str, Any]:
    """The Feeder's tree when the RegionTwo / ml-research connection failed: status limited,
    RegionTwo (its only scope) missing; and in RegionOne, which was scanned fine, m1.large
    was retired."""
    tree = changed_tree()
    tree["status"] = "limited"
    tree["regions"] = [r for r in tree["regions"] if r["name"] != R2]
    r1 = compute_of(tree, R1)
    r1["flavors"] = [f for f in r1["flavors"] if f["uuid"] != LARGE]
    return tree


R2_ML = ScanScope(region=R2, project_id=ML)
R2_FAILURE = ScopeFailure(scope=R2_ML, error_kind="connection_error", message="timed out")


def state_after_changes() -> ProviderState:
    return observed(observe(changed_tree(), at_minutes=10), first_observation())


def test_a_failed_scope_removes_nothing_and_changes_availability() -> None:
    state = state_after_changes()
    at = T0 + timedelta(minutes=20)
    new_state = (
        given_state(state)
        .when(observe(limited_tree(), at_minutes=20, scan="scan-3", scopes_failed=[R2_FAILURE]))
        .then(
            FlavorRemoved(
                provider_id=PROVIDER_ID,
                occurred_at=at,
                actor=INGEST,
                scan_id="scan-3",
                region=R1,
                uuid=LARGE,
                name="m1.large",
            ),
            ScopeScanFailed(
                provider_id=PROVIDER_ID,
                occurred_at=at,
                actor=INGEST,
                scan_id="scan-3",
                failure=R2_FAILURE,
            ),
            AvailabilityChanged(
                provider_id=PROVIDER_ID,
                occurred_at=at,
                actor=INGEST,
                scan_id="scan-3",
                from_availability=Availability.AVAILABLE,
                to_availability=Availability.PARTIALLY_AVAILABLE,
                failing_scopes=(R2_ML,),
            ),
        )
    )
    # RegionTwo keeps its region, services, flavours, images and quotas
    assert R2 in new_state.regions
    assert {k for k in new_state.flavors if k[0] == R2} == {(R2, MEDIUM), (R2, XLARGE)}
    assert (R2, ALMA) in new_state.images
    assert (R2, ML, ServiceType.COMPUTE, QuotaKind.LIMIT) in new_state.quotas
    assert new_state.status == ProviderStatus.ACTIVE  # "limited" is not a lifecycle status
    assert new_state.failing_scopes[R2_ML].since == at
    # failing again is no news
    given_state(new_state).when(
        observe(limited_tree(), at_minutes=25, scopes_failed=[R2_FAILURE])
    ).then_nothing()


def test_a_limited_tree_without_known_failures_removes_nothing_outside_its_scopes() -> None:
    given_state(state_after_changes()).when(observe(limited_tree(), at_minutes=20)).then_summaries(
        ("provider.flavor_removed", R1, LARGE),
    )


def test_a_recovered_scope_is_recorded_and_availability_restored() -> None:
    failing = observed(
        observe(limited_tree(), at_minutes=20, scopes_failed=[R2_FAILURE]), state_after_changes()
    )
    recovered_tree = changed_tree()
    r1 = compute_of(recovered_tree, R1)
    r1["flavors"] = [f for f in r1["flavors"] if f["uuid"] != LARGE]
    given_state(failing).when(observe(recovered_tree, at_minutes=30)).then_summaries(
        ("provider.scope_scan_recovered", R2_ML),
        ("provider.availability_changed", "partially_available", "available", ()),
    )


def test_a_provider_whose_every_scope_fails_is_unavailable() -> None:
    state = first_observation()
    failures = [
        ScopeFailure(scope=ScanScope(region=r, project_id=p), error_kind="auth_error")
        for r, p in ((R1, ML), (R1, CMS), (R2, ML))
    ]
    tree = registry_tree()
    tree["status"] = "limited"
    tree["regions"], tree["projects"], tree["identity_providers"] = [], [], []
    events = given_state(state).when(observe(tree, scopes_failed=failures)).events()
    assert [e for e in events if "removed" in type(e).__name__.lower()] == []
    last = events[-1]
    assert isinstance(last, AvailabilityChanged)
    assert last.to_availability == Availability.UNAVAILABLE


# --- 4. maintenance --------------------------------------------------------------------------


def maintenance_tree() -> dict[str, Any]:
    """What the Feeder PUTs for a provider configured in maintenance: an empty tree."""
    tree = registry_tree()
    tree.update(status="maintenance", regions=[], projects=[], identity_providers=[])
    return tree


def test_a_provider_in_maintenance_keeps_its_catalogue() -> None:
    state = state_after_changes()
    at = T0 + timedelta(minutes=40)
    new_state = (
        given_state(state)
        .when(observe(maintenance_tree(), at_minutes=40, scan="m"))
        .then(
            ProviderStatusChanged(
                provider_id=PROVIDER_ID,
                occurred_at=at,
                actor=INGEST,
                scan_id="m",
                from_status=ProviderStatus.ACTIVE,
                to_status=ProviderStatus.MAINTENANCE,
                source=ChangeSource.OBSERVATION,
                reason="reported by the site configuration",
            )
        )
    )
    assert new_state.status == ProviderStatus.MAINTENANCE
    before = msgspec.structs.replace(state.catalogue(), status=None)
    after = msgspec.structs.replace(new_state.catalogue(), status=None)
    assert after == before
    given_state(new_state).when(observe(maintenance_tree(), at_minutes=41)).then_nothing()


def test_data_observed_in_maintenance_still_adds_but_never_removes() -> None:
    in_maintenance = observed(observe(maintenance_tree()), state_after_changes())
    tree = changed_tree()
    tree["status"] = "maintenance"
    r1 = compute_of(tree, R1)
    r1["flavors"] = [f for f in r1["flavors"] if f["uuid"] != LARGE]  # would be a removal
    tree["regions"] = [r for r in tree["regions"] if r["name"] != R2]
    given_state(in_maintenance).when(observe(tree)).then_nothing()


def test_back_to_active_after_maintenance() -> None:
    in_maintenance = observed(observe(maintenance_tree()), state_after_changes())
    given_state(in_maintenance).when(observe(changed_tree(), at_minutes=50)).then_summaries(
        (
            "provider.status_changed",
            "maintenance",
            "active",
            "observation",
            "reported by the site configuration",
        ),
    )


# --- complete snapshots remove configuration -------------------------------------------------


def test_a_region_and_a_project_removed_from_the_configuration_are_removed() -> None:
    tree = registry_tree()
    tree["regions"] = [r for r in tree["regions"] if r["name"] != R2]
    tree["projects"] = [p for p in tree["projects"] if p["uuid"] != CMS]
    tree["identity_providers"][0]["user_groups"].pop(1)  # cms and its SLA
    r1 = region_of(tree, R1)
    for service in r1["compute_services"]:
        service["quotas"] = [q for q in service["quotas"] if q["project"] != CMS]
    state = (
        given_state(first_observation())
        .when(observe(tree))
        .then_summaries(
            ("provider.region_removed", R2),
            ("provider.project_removed", CMS),
            ("provider.user_group_removed", "https://iam.example.org/", "cms"),
            ("provider.sla_removed", CMS_SLA),
        )
    )
    assert not any(k[0] == R2 for k in state.flavors)  # the cascade of region_removed
    assert not any(k[1] == CMS for k in state.quotas)  # the cascade of project_removed


# --- operator commands -----------------------------------------------------------------------


def test_an_operator_sets_the_status_and_the_next_scan_does_not_undo_it() -> None:
    state = first_observation()
    command = SetProviderStatus(
        provider_id=PROVIDER_ID,
        actor=ADMIN,
        status=ProviderStatus.MAINTENANCE,
        reason="hypervisor upgrade",
    )
    in_maintenance = (
        given_state(state)
        .when(command)
        .then(
            ProviderStatusChanged(
                provider_id=PROVIDER_ID,
                occurred_at=NOW,
                actor=ADMIN,
                from_status=ProviderStatus.ACTIVE,
                to_status=ProviderStatus.MAINTENANCE,
                source=ChangeSource.OPERATOR,
                reason="hypervisor upgrade",
            )
        )
    )
    given_state(in_maintenance).when(command).then_nothing()
    # the site configuration still says "active", as it did before: no news
    given_state(in_maintenance).when(observe(registry_tree(), at_minutes=3)).then_nothing()


def test_an_operator_registers_a_provider_with_aliases_and_priority() -> None:
    details = ProviderDetails(name="RECAS-BARI", type=ProviderType.OPENSTACK)
    rally = ProviderAlias(system=AliasSystem.MONITORING, name="recas_bari", region="RegionOne")
    command = RegisterProvider(
        provider_id="recas-bari.openstack",
        actor=ADMIN,
        details=details,
        aliases=(rally,),
        priority=70,
    )
    state = (
        given()
        .when(command)
        .then(
            ProviderRegistered(
                provider_id="recas-bari.openstack",
                occurred_at=NOW,
                actor=ADMIN,
                details=details,
                status=ProviderStatus.ACTIVE,
                source=ChangeSource.OPERATOR,
                aliases=(
                    ProviderAlias(
                        system=AliasSystem.MONITORING, name="recas_bari", region="RegionOne"
                    ),
                    ProviderAlias(system=AliasSystem.REGISTRY, name="RECAS-BARI"),
                ),
                priority=70,
            )
        )
    )
    given_state(state).when(command).then_nothing()
    other = msgspec.structs.replace(
        command, details=msgspec.structs.replace(details, is_public=True)
    )
    given_state(state).when(other).raises(AlreadyRegistered)
    ranker = ProviderAlias(system=AliasSystem.RANKER, name="RECAS-BARI")
    add = AddProviderAlias(provider_id="recas-bari.openstack", actor=ADMIN, alias=ranker)
    with_alias = (
        given_state(state)
        .when(add)
        .then(
            ProviderAliasAdded(
                provider_id="recas-bari.openstack", occurred_at=NOW, actor=ADMIN, alias=ranker
            )
        )
    )
    assert with_alias.alias(AliasSystem.MONITORING, "RegionOne") == "recas_bari"
    assert with_alias.alias(AliasSystem.MONITORING, "RegionTwo") == "RECAS-BARI"
    priority = SetProviderPriority(provider_id="recas-bari.openstack", actor=ADMIN, priority=90)
    given_state(with_alias).when(priority).then(
        ProviderPrioritySet(
            provider_id="recas-bari.openstack",
            occurred_at=NOW,
            actor=ADMIN,
            priority=90,
            previous=70,
        )
    )
    given_state(with_alias).when(msgspec.structs.replace(priority, priority=101)).raises(
        InvalidCommand
    )


def test_operator_commands_need_a_registered_provider() -> None:
    given().when(
        SetProviderStatus(
            provider_id="nowhere.openstack", actor=ADMIN, status=ProviderStatus.MAINTENANCE
        )
    ).raises(ProviderNotFound)


def test_a_registered_provider_is_then_filled_by_its_scans() -> None:
    details = ProviderDetails(name="CLOUD-EXAMPLE", type=ProviderType.OPENSTACK)
    registered = (
        given()
        .when(RegisterProvider(provider_id=PROVIDER_ID, actor=ADMIN, details=details))
        .then_summaries(("provider.registered", "CLOUD-EXAMPLE"))
    )
    events = given_state(registered).when(observe(registry_tree())).events()
    assert [e for e in events if isinstance(e, ProviderRegistered)] == []
    assert [type(e).__name__ for e in events][:2] == [
        "ProviderDetailsChanged",
        "ProviderStatusChanged",  # records the status the configuration reports
    ]


def test_provider_ids_are_checked() -> None:
    command = msgspec.structs.replace(observe(registry_tree()), provider_id="Not An Id")
    given().when(command).raises(InvalidCommand)


# --- Feeder messages -------------------------------------------------------------------------


def test_feeder_messages_fill_the_catalogue_scope_by_scope() -> None:
    first = observe_feeder_messages([feeder_message()], actor=INGEST, scan_id="k-1")
    state = (
        given()
        .when(first)
        .then_summaries(
            ("provider.registered", "CLOUD-EXAMPLE"),
            ("provider.region_added", R1),
            ("provider.project_added", ML),
            ("provider.identity_provider_trusted", "https://iam.example.org/"),
            ("provider.user_group_added", ("https://iam.example.org/", "ml-research")),
            ("provider.sla_added", f"feeder:{'https://iam.example.org/'}|ml-research|{ML}"),
            ("provider.service_added", R1, "https://cinder.r1.example.org:8776/v3"),
            ("provider.service_added", R1, "https://keystone.example.org:5000/v3"),
            ("provider.service_added", R1, "https://neutron.r1.example.org:9696"),
            ("provider.service_added", R1, "https://nova.r1.example.org:8774/v2.1"),
            ("provider.flavor_added", R1, SMALL),
            ("provider.flavor_added", R1, LARGE),
            ("provider.flavor_added", R1, GPU),
            ("provider.flavor_added", R1, HPC),
            ("provider.image_added", R1, JAMMY),
            ("provider.image_added", R1, ALMA),
            ("provider.image_added", R1, CUDA),
            ("provider.network_added", R1, PUBLIC_NET),
            ("provider.network_added", R1, PRIVATE_NET),
            ("provider.quota_limits_changed", R1, ML, "block-storage", "limit"),
            ("provider.quota_limits_changed", R1, ML, "compute", "limit"),
            ("provider.quota_limits_changed", R1, ML, "compute", "per_user"),
            ("provider.quota_limits_changed", R1, ML, "network", "limit"),
            ("provider.availability_changed", "unknown", "available", ()),
        )
    )
    assert state.projects[ML].name is None  # a message carries only the id
    assert state.identity_providers["https://iam.example.org/"].group_claim is None
    given_state(state).when(first).then_nothing()


def test_a_feeder_message_does_not_erase_what_a_tree_reported() -> None:
    state = first_observation()
    message = observe_feeder_messages([feeder_message()], actor=INGEST)
    events = given_state(state).when(message).events()
    # the message knows no project names, group claims, locations or SLA dates: they stay;
    # it adds its synthetic SLA, and removes nothing (RegionTwo and cms were not scanned)
    assert summaries(events) == [
        ("provider.sla_added", f"feeder:https://iam.example.org/|ml-research|{ML}"),
    ]


def test_a_feeder_message_removes_what_its_own_scope_no_longer_sees() -> None:
    state = observed(observe_feeder_messages([feeder_message()], actor=INGEST))
    message = feeder_message()
    compute = message["compute_services"][0]
    compute["flavors"] = [f for f in compute["flavors"] if f["uuid"] not in (SMALL, HPC)]
    given_state(state).when(observe_feeder_messages([message], actor=INGEST)).then_summaries(
        ("provider.flavor_removed", R1, SMALL),
        ("provider.flavor_removed", R1, HPC),
    )


def test_a_private_item_loses_only_the_projects_whose_scope_was_scanned() -> None:
    shared_by_two = feeder_message()
    hpc = next(f for f in shared_by_two["compute_services"][0]["flavors"] if f["uuid"] == HPC)
    hpc["projects"] = [ML, CMS]
    state = observed(observe_feeder_messages([shared_by_two], actor=INGEST))
    assert state.flavors[(R1, HPC)].projects == tuple(sorted((ML, CMS)))
    gone_for_ml = feeder_message()
    compute = gone_for_ml["compute_services"][0]
    compute["flavors"] = [f for f in compute["flavors"] if f["uuid"] != HPC]
    new_state = (
        given_state(state)
        .when(observe_feeder_messages([gone_for_ml], actor=INGEST))
        .then_summaries(("provider.flavor_changed", R1, HPC))
    )
    assert new_state.flavors[(R1, HPC)].projects == (CMS,)  # cms was not scanned


def test_an_observation_naming_a_scope_both_fine_and_failed_is_refused() -> None:
    command = observe(registry_tree())
    bad = msgspec.structs.replace(
        command, scopes_failed=(ScopeFailure(scope=ScanScope(region=R1, project_id=ML)),)
    )
    with pytest.raises(InvalidObservation, match="both scanned fine and failed"):
        given().when(bad).events()


def test_scope_failures_of_a_never_seen_provider_register_it_unavailable() -> None:
    tree = registry_tree()
    tree.update(status="limited", regions=[], projects=[], identity_providers=[])
    failure = ScopeFailure(scope=ScanScope(region=R1, project_id=ML), error_kind="auth_error")
    state = (
        given()
        .when(observe(tree, scopes_failed=[failure]))
        .then_summaries(
            ("provider.registered", "CLOUD-EXAMPLE"),
            ("provider.scope_scan_failed", failure.scope),
            ("provider.availability_changed", "unknown", "unavailable", (failure.scope,)),
        )
    )
    assert state.status == ProviderStatus.ACTIVE
