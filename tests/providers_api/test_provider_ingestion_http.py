"""Provider ingestion through the admin API, over the real system (Postgres, Kafka, OIDC).

A realistic sequence of observations of one provider with two regions, flavours, images and
quotas, then changes, then a partially failed scan, then maintenance, produces exactly the
expected events; re-sending an identical observation produces none; malformed and partial
input is a 400 naming the problem, and changes nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from domain.providers import ScanScope
from tests.domain.providers.support import feeder_message, region_of, summaries
from tests.providers_api.support import ML, PROVIDER_ID, Harness

TREE = "/v1/admin/providers/observations/tree"
FEEDER = "/v1/admin/providers/observations/feeder"

FIRST_SCAN = [
    "provider.registered",
    *["provider.region_added"] * 2,
    *["provider.project_added"] * 2,
    "provider.identity_provider_trusted",
    *["provider.user_group_added"] * 2,
    *["provider.sla_added"] * 2,
    *["provider.service_added"] * 6,
    *["provider.flavor_added"] * 5,
    *["provider.image_added"] * 4,
    *["provider.network_added"] * 2,
    *["provider.quota_limits_changed"] * 6,
    "provider.availability_changed",
]

LARGE = "f1a2b3c4-0002-4a1b-9c00-000000000002"
CUDA_IMAGE = "1b0c6f2e-cccc-4c11-8d22-000000000103"


async def total_events(providers: Harness) -> int:
    async with providers.system.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events"))


def changed_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """m1.large grows to 8 VCPUs, the CUDA image goes, a flavour appears in RegionTwo, the
    ml-research compute limit shrinks and its usage drops."""
    tree = copy.deepcopy(tree)
    one = region_of(tree, "RegionOne")["compute_services"][0]
    next(f for f in one["flavors"] if f["uuid"] == LARGE)["vcpus"] = 8
    one["images"] = [m for m in one["images"] if m["uuid"] != CUDA_IMAGE]
    for quota in one["quotas"]:
        if quota["project"] == ML and not quota["per_user"]:
            quota["cores"] = 100 if not quota["usage"] else 90
    region_of(tree, "RegionTwo")["compute_services"][0]["flavors"].append(
        {"uuid": "f1a2b3c4-0006-4a1b-9c00-000000000006", "name": "m1.xlarge", "vcpus": 8,
         "ram": 16384, "disk": 80})
    return tree


async def test_an_observation_sequence_appends_exactly_the_changes(providers: Harness) -> None:
    admin = providers.admin()

    # 1. first scan: everything is new
    tree = providers.tree()
    response = await providers.request("POST", TREE, admin, json=tree)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["providerId"] == PROVIDER_ID
    assert body["events"] == FIRST_SCAN
    assert body["usageEvents"] == ["quotausage.sampled"]
    assert body["status"] == "active" and body["availability"] == "available"
    events = await providers.events()
    assert [type(e).__struct_config__.tag for e in events] == FIRST_SCAN  # type: ignore[misc]
    # who made the change: the admin, in the events and in the log's metadata
    assert {(e.actor.issuer, e.actor.subject) for e in events} == {
        (providers.issuer.issuer, admin.subject)}
    recorded = await providers.system.store.read_stream(f"provider-{PROVIDER_ID}")
    assert {r.metadata.actor_subject for r in recorded} == {admin.subject}

    # 2. the identical observation again: nothing
    version = len(events)
    response = await providers.request("POST", TREE, admin, json=tree)
    assert response.status_code == 200
    assert (response.json()["events"], response.json()["usageEvents"]) == ([], [])
    assert len(await providers.events()) == version

    # 3. changes: exactly them, in natural-key order, usage on its own stream
    tree = changed_tree(tree)
    response = await providers.request("POST", TREE, admin, json=tree)
    assert response.status_code == 200, response.text
    assert response.json()["usageEvents"] == ["quotausage.sampled"]
    events = await providers.events()
    assert summaries(events[version:]) == [
        ("provider.flavor_changed", "RegionOne", LARGE),
        ("provider.flavor_added", "RegionTwo", "f1a2b3c4-0006-4a1b-9c00-000000000006"),
        ("provider.image_removed", "RegionOne", CUDA_IMAGE),
        ("provider.quota_limits_changed", "RegionOne", ML, "compute", "limit"),
    ]
    assert events[version].changed == ("vcpus",)  # type: ignore[attr-defined]
    version = len(events)

    # 4. a partially failed scan: RegionTwo's only connection failed, so the Feeder's tree
    #    lacks the region and says "limited"; nothing is removed, the outcome is recorded
    partial = copy.deepcopy(tree)
    partial["status"] = "limited"
    partial["regions"] = [r for r in partial["regions"] if r["name"] != "RegionTwo"]
    response = await providers.request(
        "POST", TREE, admin, json=partial, params={"failedScope": f"RegionTwo/{ML}"})
    assert response.status_code == 200, response.text
    assert response.json()["events"] == ["provider.scope_scan_failed",
                                         "provider.availability_changed"]
    assert response.json()["availability"] == "partially_available"
    events = await providers.events()
    failed, availability = events[version:]
    assert failed.failure.scope == ScanScope(region="RegionTwo", project_id=ML)  # type: ignore[attr-defined]
    assert (availability.from_availability, availability.to_availability) == (  # type: ignore[attr-defined]
        "available", "partially_available")
    # the same failure again is the same streak: nothing new
    response = await providers.request(
        "POST", TREE, admin, json=partial, params={"failedScope": f"RegionTwo/{ML}"})
    assert response.json()["events"] == []
    version = len(events)

    # 5. maintenance: the Feeder empties the tree; the status changes, the catalogue stays
    maintenance = copy.deepcopy(tree)
    maintenance.update(status="maintenance", regions=[], projects=[], identity_providers=[])
    response = await providers.request("POST", TREE, admin, json=maintenance)
    assert response.status_code == 200, response.text
    assert response.json()["events"] == ["provider.status_changed"]
    events = await providers.events()
    assert len(events) == version + 1
    status = events[-1]
    assert (status.from_status, status.to_status, status.source) == (  # type: ignore[attr-defined]
        "active", "maintenance", "observation")

    # the board (a projection) shows it, catalogue counts unchanged
    board = await providers.get_when(
        f"/v1/admin/providers/{PROVIDER_ID}", admin,
        lambda b: b["provider"]["status"] == "maintenance", "the board shows maintenance")
    provider = board["provider"]
    assert (provider["regions"], provider["flavors"], provider["images"]) == (2, 6, 3)
    assert provider["availability"] == "partially_available"
    assert [(s["region"], s["projectId"], s["failing"]) for s in board["scopes"]] == [
        ("RegionOne", "5b2e4d6f8a0c4e1b9d7f5a3c1e0b2d4f", False),
        ("RegionOne", ML, False),
        ("RegionTwo", ML, True),
    ]


async def test_feeder_messages_through_the_api(providers: Harness) -> None:
    admin = providers.admin()
    message = feeder_message(provider_name="FEEDER-SITE")
    response = await providers.request("POST", FEEDER, admin, json=message)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["providerId"] == "feeder-site.openstack"
    assert body["events"][0] == "provider.registered"
    assert "provider.flavor_added" in body["events"]
    # re-sent (alone or in a list): nothing
    for again in (message, [message]):
        response = await providers.request("POST", FEEDER, admin, json=again)
        assert response.status_code == 200
        assert (response.json()["events"], response.json()["usageEvents"]) == ([], [])


async def test_malformed_or_partial_input_is_a_400_and_changes_nothing(
        providers: Harness) -> None:
    admin = providers.admin()
    before = await total_events(providers)

    no_name = providers.tree()
    del no_name["name"]
    gpu_vendor_without_gpu = providers.tree()
    gpu_vendor_without_gpu["name"] = "BROKEN-SITE"
    region_of(gpu_vendor_without_gpu, "RegionOne")["compute_services"][0]["flavors"][0][
        "gpu_vendor"] = "NVIDIA"
    unknown_project = providers.tree()
    unknown_project["name"] = "BROKEN-SITE"
    unknown_project["identity_providers"][0]["user_groups"][0]["sla"]["project"] = "nope"
    wrong_type = providers.tree()
    wrong_type["regions"][0]["overbooking_cpu"] = "lots"
    cases = [
        (TREE, no_name, "name"),
        (TREE, gpu_vendor_without_gpu,
         "regions[0].compute_services[0].flavors[0]: gpu_vendor and gpu_model must be null"),
        (TREE, unknown_project, "'nope' is not one of the provider's projects"),
        (TREE, wrong_type, "overbooking_cpu"),
        (FEEDER, feeder_message(msg_version="0.1"), "msg_version"),
        (FEEDER, {**feeder_message(), "project_id": ""}, "project_id"),
    ]
    for path, body, expected in cases:
        response = await providers.request("POST", path, admin, json=body)
        assert response.status_code == 400, (expected, response.text)
        error = response.json()
        assert error["code"] == 400 and error["title"] == "Bad Request"
        assert expected in error["message"], (expected, error["message"])
    response = await providers.request(
        "POST", TREE, admin, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    response = await providers.request("POST", TREE, admin, json=providers.tree(),
                                       params={"failedScope": "no-slash"})
    assert response.status_code == 400
    assert "failedScope" in response.json()["message"]
    assert await total_events(providers) == before


async def test_only_admins_ingest(providers: Harness) -> None:
    before = await total_events(providers)
    member = providers.user("ml-research")
    response = await providers.request("POST", TREE, member, json=providers.tree())
    assert response.status_code == 403
    assert response.json()["message"] == "Only administrators can perform this operation"
    response = await providers.request("POST", TREE, None, json=providers.tree())
    assert response.status_code == 401
    response = await providers.request("GET", "/v1/admin/providers", member)
    assert response.status_code == 403
    assert await total_events(providers) == before


async def test_operator_commands_record_who_made_them(providers: Harness) -> None:
    admin = providers.admin()
    base = "/v1/admin/providers"
    registration = {"name": "NEW-SITE", "type": "kubernetes", "status": "maintenance",
                    "aliases": [{"system": "monitoring", "name": "new_site"}],
                    "reason": "onboarding"}
    response = await providers.request("POST", base, admin, json=registration)
    assert response.status_code == 201, response.text
    assert response.json()["events"] == ["provider.registered"]
    provider_id = response.json()["providerId"]
    assert provider_id == "new-site.kubernetes"
    # the same registration again changes nothing; a different one conflicts
    response = await providers.request("POST", base, admin, json=registration)
    assert response.json()["events"] == []
    response = await providers.request("POST", base, admin,
                                       json={**registration, "description": "other"})
    assert response.status_code == 409
    response = await providers.request("POST", base, admin, json={**registration, "x": 1})
    assert response.status_code == 400

    steps = [
        ("PUT", f"{base}/{provider_id}/status", {"json": {"status": "active",
                                                          "reason": "tests passed"}},
         ["provider.status_changed"]),
        ("PUT", f"{base}/{provider_id}/status", {"json": {"status": "active"}}, []),
        ("PUT", f"{base}/{provider_id}/priority", {"json": {"priority": 80}},
         ["provider.priority_set"]),
        ("POST", f"{base}/{provider_id}/aliases",
         {"json": {"system": "ranker", "name": "NEW-SITE-k8s"}}, ["provider.alias_added"]),
        ("DELETE", f"{base}/{provider_id}/aliases",
         {"params": {"system": "ranker", "name": "NEW-SITE-k8s"}}, ["provider.alias_removed"]),
    ]
    for method, path, arguments, expected in steps:
        response = await providers.request(method, path, admin, **arguments)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["events"] == expected, path
    recorded = await providers.system.store.read_stream(f"provider-{provider_id}")
    assert [(r.type, r.metadata.actor_subject, r.metadata.reason) for r in recorded] == [
        ("provider.registered", admin.subject, "onboarding"),
        ("provider.status_changed", admin.subject, "tests passed"),
        ("provider.priority_set", admin.subject, None),
        ("provider.alias_added", admin.subject, None),
        ("provider.alias_removed", admin.subject, None),
    ]

    for method, path, arguments, status in [
        ("PUT", f"{base}/nobody.openstack/status", {"json": {"status": "active"}}, 404),
        ("PUT", f"{base}/{provider_id}/priority", {"json": {"priority": 150}}, 400),
        ("PUT", f"{base}/{provider_id}/status", {"json": {"status": "sleeping"}}, 400),
        ("DELETE", f"{base}/{provider_id}/aliases", {"params": {"system": "x", "name": "y"}},
         400),
    ]:
        response = await providers.request(method, path, admin, **arguments)
        assert response.status_code == status, (path, response.text)
        assert set(response.json()) == {"code", "title", "message"}
