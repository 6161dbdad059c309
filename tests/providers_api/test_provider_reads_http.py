"""The scheduling-first reads and the Feeder wiring, over the real system.

A provider is observed through the admin API; the read endpoints (fed by the projections over
Kafka) then show each user group only its sites, and for a site only the flavours and images
its project sees there, flavours sorted and marked when they no longer fit the quota.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.domain.providers.support import feeder_message
from tests.providers_api.support import CMS, ML, Harness

TREE = "/v1/admin/providers/observations/tree"


def observed_tree(providers: Harness, suffix: str) -> dict[str, Any]:
    """The example tree as provider CLOUD-<suffix>, with groups of its own."""
    tree = providers.tree()
    tree["name"] = f"CLOUD-{suffix}"
    for group in tree["identity_providers"][0]["user_groups"]:
        group["name"] = f"{group['name']}-{suffix}"
        group["sla"]["doc_uuid"] = f"{group['sla']['doc_uuid']}-{suffix}"
    return tree


async def test_a_group_sees_its_sites_and_only_what_its_project_sees(
        providers: Harness) -> None:
    suffix = uuid.uuid4().hex[:6].upper()
    provider_id = f"cloud-{suffix.lower()}.openstack"
    admin = providers.admin()
    response = await providers.request("POST", TREE, admin, json=observed_tree(providers, suffix))
    assert response.status_code == 200, response.text
    ml_group, cms_group = f"ml-research-{suffix}", f"cms-{suffix}"
    ml_member, cms_member = providers.user(ml_group), providers.user(f"/{cms_group}")
    stranger = providers.user("somebody-else")

    # Usage samples travel on their own topic (quotausage): wait until both regions' samples
    # are applied before reading headroom, which subtracts them from the limits.
    for region in ("RegionOne", "RegionTwo"):
        await providers.get_when(
            f"/v1/groups/{ml_group}/sites/{provider_id}:{region}/capacity", ml_member,
            lambda b: any(s["serviceType"] == "compute" and s.get("usageSampledAt")
                          for s in b["services"]),
            f"the usage sample of {region}")
    sites = await providers.get_when(
        f"/v1/groups/{ml_group}/sites", ml_member,
        lambda b: len(b["sites"]) == 2 and all(s["headroom"]["cores"] is not None
                                               for s in b["sites"]),
        "the ml group's two sites with their headroom")
    one, two = sites["sites"]
    assert (one["id"], two["id"]) == (f"{provider_id}:RegionOne", f"{provider_id}:RegionTwo")
    assert one["label"] == f"CLOUD-{suffix} - RegionOne"
    assert one["location"] == {"site": "EXAMPLE-BARI", "country": "Italy",
                               "latitude": 41.11, "longitude": 16.87}
    assert one["project"]["id"] == ML and one["project"]["name"] == "ml-research"
    assert one["sla"]["startDate"] == "2025-01-01" and one["sla"]["endDate"] == "2026-12-31"
    assert (one["status"], one["availability"], one["scan"]["failing"]) == (
        "active", "available", False)
    # limits minus the latest usage of ml-research in RegionOne
    assert one["headroom"] == {"cores": 20, "ramMib": 24576, "instances": 19,
                               "publicIps": 26, "volumeGib": 62}

    cms_sites = await providers.get_when(f"/v1/groups/{cms_group}/sites", cms_member,
                                         lambda b: len(b["sites"]) == 1, "the cms site")
    assert [s["id"] for s in cms_sites["sites"]] == [f"{provider_id}:RegionOne"]
    assert cms_sites["sites"][0]["project"]["id"] == CMS

    # not a member: 404, exactly like a group that does not exist; an admin sees it
    for path in (f"/v1/groups/{ml_group}/sites",
                 f"/v1/groups/{ml_group}/sites/{provider_id}:RegionOne/flavors"):
        response = await providers.request("GET", path, stranger)
        assert response.status_code == 404, path
        assert set(response.json()) == {"code", "title", "message"}
    response = await providers.request("GET", f"/v1/groups/{ml_group}/sites", admin)
    assert [s["id"] for s in response.json()["sites"]] == [one["id"], two["id"]]
    # a site that is not one of the group's
    response = await providers.request(
        "GET", f"/v1/groups/{cms_group}/sites/{provider_id}:RegionTwo/flavors", cms_member)
    assert response.status_code == 404
    response = await providers.request(
        "GET", f"/v1/groups/{cms_group}/sites/no-colon/flavors", cms_member)
    assert response.status_code == 400

    # flavours: sorted (gpus, vcpus, ram, disk), the private one only for its project,
    # marked when one more server would exceed the project's headroom
    flavors = (await providers.request(
        "GET", f"/v1/groups/{ml_group}/sites/{provider_id}:RegionOne/flavors",
        ml_member)).json()
    assert flavors["project"] == ML
    assert [(f["name"], f["fitsQuota"], f["overQuota"]) for f in flavors["flavors"]] == [
        ("m1.small", True, []),
        ("m1.large", True, []),
        ("hpc.ib32", False, ["cores", "ramMib"]),
        ("g1.a100x1", False, ["ramMib"]),
    ]
    gpu = flavors["flavors"][3]
    assert (gpu["gpus"], gpu["gpuVendor"], gpu["gpuModel"]) == (1, "NVIDIA", "A100")
    assert gpu["label"] == "16 VCPUs, 64 GB RAM, 200 GB DISK, 1 GPUs NVIDIA A100"
    cms_flavors = (await providers.request(
        "GET", f"/v1/groups/{cms_group}/sites/{provider_id}:RegionOne/flavors",
        cms_member)).json()
    assert [(f["name"], f["fitsQuota"]) for f in cms_flavors["flavors"]] == [
        ("m1.small", True), ("m1.large", True), ("g1.a100x1", True)]

    images = (await providers.request(
        "GET", f"/v1/groups/{ml_group}/sites/{provider_id}:RegionOne/images",
        ml_member)).json()
    assert [(o["label"], len(o["images"])) for o in images["operatingSystems"]] == [
        ("almalinux 9", 1), ("ubuntu 22.04", 2)]
    ubuntu = images["operatingSystems"][1]["images"]
    assert ubuntu[0] == "1b0c6f2e-cccc-4c11-8d22-000000000103"  # the newest first

    capacity = (await providers.request(
        "GET", f"/v1/groups/{ml_group}/sites/{provider_id}:RegionOne/capacity",
        ml_member)).json()
    compute = next(s for s in capacity["services"] if s["serviceType"] == "compute")
    assert (compute["limits"]["cores"], compute["usage"]["cores"],
            compute["perUser"]["cores"], compute["headroom"]["cores"]) == (120, 100, 8, 20)
    assert compute["usageSampledAt"] is not None

    health = (await providers.request(
        "GET", f"/v1/groups/{ml_group}/sites/{provider_id}:RegionOne/health",
        ml_member)).json()
    assert (health["availability"], health["scopesKnown"], health["scopesFailing"]) == (
        "available", 2, 0)
    assert health["projectScope"]["projectId"] == ML

    board = (await providers.request("GET", "/v1/admin/providers", admin)).json()
    row = next(p for p in board if p["providerId"] == provider_id)
    assert (row["regions"], row["projects"], row["slas"], row["flavors"], row["images"]) == (
        2, 2, 2, 5, 4)


async def test_the_feeder_topic_is_consumed_into_observations(providers: Harness) -> None:
    """The bootstrap wires the Feeder consumer on ORCH_FEEDER_TOPIC: a message there shows up
    on the board; a malformed one is parked and does not stop it."""
    name = f"FEEDER-{uuid.uuid4().hex[:6].upper()}"
    producer = AIOKafkaProducer(bootstrap_servers=providers.system.settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(providers.feeder_topic, b"not a Feeder message")
        await producer.send_and_wait(providers.feeder_topic,
                                     json.dumps(feeder_message(provider_name=name)).encode())
    finally:
        await producer.stop()
    admin = providers.admin()
    board = await providers.get_when(
        "/v1/admin/providers", admin,
        lambda b: any(p["name"] == name for p in b), "the Feeder's provider on the board")
    row = next(p for p in board if p["name"] == name)
    assert (row["regions"], row["flavors"], row["images"]) == (1, 4, 3)
    async with providers.system.pool.acquire() as conn:
        payloads = [r["payload"] for r in await conn.fetch(
            "SELECT payload FROM parked_messages WHERE consumer = 'feeder.ingest'")]
    assert b"not a Feeder message" in payloads
