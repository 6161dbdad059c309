"""Builders and given/when/then for the provider aggregate and selection tests."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import msgspec

from domain.identity import Actor, system_actor
from domain.providers import (
    Flavor,
    Image,
    ObservedProvider,
    ObserveProvider,
    Project,
    ProviderEvent,
    ProviderState,
    ProviderStatus,
    ProviderType,
    QuotaKind,
    QuotaRecord,
    QuotaValues,
    Region,
    ScanScope,
    ServiceType,
    Sla,
    TrustedIdentityProvider,
    UserGroup,
    decide,
    decode_event,
    encode_event,
    event_tag,
    fold,
)
from domain.providers.usage import QuotaUsageState, RecordQuotaUsage, decide_usage, fold_usage
from tests.given_when_then import Decider, Given

DATA = Path(__file__).parent / "data"

INGEST = system_actor("provider-ingest")
ADMIN = Actor(issuer="https://iam.example.org/", subject="admin-sub")
T0 = datetime(2025, 10, 3, 7, 5, 33, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)

PROVIDER_ID = "cloud-example.openstack"
ML = "9a1f3c5e7b9d4f0a8c6e4b2d0f1a3c5e"  # ml-research project
CMS = "5b2e4d6f8a0c4e1b9d7f5a3c1e0b2d4f"  # cms-analysis project
IAM = "https://iam.example.org/"


@cache
def _tree_text() -> str:
    return (DATA / "registry_tree.json").read_text()


def registry_tree() -> dict[str, Any]:
    """A fresh copy of the provider tree of provider-model.md 9.1 (2 regions, 5 flavours,
    3 images, quotas), to edit per test."""
    tree: dict[str, Any] = json.loads(_tree_text())
    return copy.deepcopy(tree)


def region_of(tree: dict[str, Any], name: str) -> dict[str, Any]:
    region: dict[str, Any] = next(r for r in tree["regions"] if r["name"] == name)
    return region


def feeder_message(**overrides: Any) -> dict[str, Any]:
    """A Feeder v1.4.0 message for CLOUD-EXAMPLE RegionOne / ml-research (9.3, filled in
    from the tree of 9.1)."""
    r1 = region_of(registry_tree(), "RegionOne")
    compute = r1["compute_services"][0]
    message: dict[str, Any] = {
        "msg_version": "1.4.0",
        "timestamp": "2025-10-03T07:05:33+00:00",
        "provider_name": "CLOUD-EXAMPLE",
        "provider_type": "openstack",
        "region_name": "RegionOne",
        "identity_endpoint": "https://keystone.example.org:5000/v3",
        "issuer_endpoint": IAM,
        "issuer_name": "infn-cc",
        "issuer_protocol": "openid",
        "issuer_audience": None,
        "user_group": "ml-research",
        "project_id": ML,
        "overbooking_cpu": 1.0,
        "overbooking_ram": 1.0,
        "bandwidth_in": 10.0,
        "bandwidth_out": 10.0,
        "compute_services": [
            {
                "endpoint": compute["endpoint"],
                "name": compute["name"],
                "type": "compute",
                "flavors": compute["flavors"],
                "images": compute["images"],
                "quotas": [q for q in compute["quotas"] if q["project"] == ML],
            }
        ],
        "block_storage_services": r1["block_storage_services"],
        "network_services": r1["network_services"],
        "object_store_services": [],
    }
    message.update(overrides)
    return message


# --- event summaries -------------------------------------------------------------------------


def summary(event: ProviderEvent) -> tuple[Any, ...]:
    """``(tag, natural key...)``: what an event is about, for compact expectations."""
    tag = event_tag(event)
    fields = msgspec.structs.asdict(event)
    if "details" in fields:
        return (tag, fields["details"].name)
    if "failure" in fields:
        return (tag, fields["failure"].scope)
    if "uuid" in fields:  # flavour, image, network removed
        return (tag, fields["region"], fields["uuid"])
    for entity in ("flavor", "image", "network"):
        if entity in fields:
            item = fields[entity]
            return (tag, item.region, item.uuid)
    if "service" in fields:
        return (tag, fields["service"].region, fields["service"].endpoint)
    if "quota" in fields:
        q = fields["quota"]
        return (tag, q.region, q.project_id, q.service_type.value, q.kind.value)
    for name in ("region", "project", "identity_provider", "user_group", "sla"):
        if name in fields and isinstance(fields[name], msgspec.Struct):
            value = fields[name]
            key = {
                "region": lambda v: v.name,
                "project": lambda v: v.project_id,
                "identity_provider": lambda v: v.issuer,
                "user_group": lambda v: (v.issuer, v.name),
                "sla": lambda v: v.sla_id,
            }[name](value)
            return (tag, key)
    rest = {
        k: v
        for k, v in fields.items()
        if k not in {"provider_id", "occurred_at", "actor", "scan_id"}
    }
    return (tag, *(v.value if hasattr(v, "value") else v for v in rest.values()))


def summaries(events: Sequence[ProviderEvent]) -> list[tuple[Any, ...]]:
    return [summary(e) for e in events]


# --- given / when / then ---------------------------------------------------------------------


DECIDER: Decider[ProviderState, ProviderEvent] = Decider(
    decide=decide, fold=fold, encode_event=encode_event, decode_event=decode_event, now=NOW,
    summary=summary,
)


def given(*events: ProviderEvent) -> Given[ProviderState, ProviderEvent]:
    return Given(DECIDER, fold(events))


def given_state(state: ProviderState) -> Given[ProviderState, ProviderEvent]:
    return Given(DECIDER, state)


def observed(command: ObserveProvider, state: ProviderState | None = None) -> ProviderState:
    """The state after observing ``command`` (from ``state`` or nothing)."""
    base = state if state is not None else fold(())
    return fold(decide(command, base, now=NOW), base)


def usage_after(
    commands: Sequence[RecordQuotaUsage], state: QuotaUsageState | None = None
) -> QuotaUsageState:
    state = state or QuotaUsageState()
    for command in commands:
        state = fold_usage(decide_usage(command, state, now=NOW), state)
    return state


# --- hand-built catalogues (selection tests) -------------------------------------------------

DEFAULT_LIMITS = QuotaValues(cores=100, ram_mib=204800, instances=50)

DEFAULT_FLAVORS = (
    ("small", 2, 4096, 20, 0),
    ("medium", 4, 8192, 40, 0),
    ("large", 8, 16384, 80, 0),
)


def make_flavor(
    region: str,
    name: str,
    vcpus: int,
    ram_mib: int,
    disk_gib: int,
    gpus: int = 0,
    **extra: Any,
) -> Flavor:
    return Flavor(
        region=region,
        uuid=f"{region}-{name}",
        name=name,
        vcpus=vcpus,
        ram_mib=ram_mib,
        disk_gib=disk_gib,
        gpus=gpus,
        **extra,
    )


def make_image(region: str, distro: str, version: str, **extra: Any) -> Image:
    return Image(
        region=region,
        uuid=f"{region}-{distro}-{version}",
        name=f"{distro}-{version}",
        os_type="Linux",
        os_distro=distro,
        os_version=version,
        **extra,
    )


def catalogue_provider(
    name: str,
    *,
    regions: Sequence[str] = ("r1",),
    project: str = "p1",
    group: str = "g1",
    issuer: str = IAM,
    trusted: Sequence[str] | None = None,  # default: the SLA's issuer
    sla_dates: tuple[date | None, date | None] = (date(2025, 1, 1), date(2026, 12, 31)),
    flavors: Sequence[Flavor] | None = None,
    images: Sequence[Image] | None = None,
    limits: QuotaValues | None = DEFAULT_LIMITS,
    per_user: QuotaValues | None = None,
    provider_type: ProviderType = ProviderType.OPENSTACK,
) -> ObserveProvider:
    """An observation of a small provider: one project of ``group`` in each region."""
    trusted = [issuer] if trusted is None else list(trusted)
    flavors = (
        [make_flavor(r, *spec) for r in regions for spec in DEFAULT_FLAVORS]
        if flavors is None
        else list(flavors)
    )
    images = [make_image(r, "ubuntu", "22.04") for r in regions] if images is None else list(images)
    quotas = []
    for region in regions:
        if limits is not None:
            quotas.append(
                QuotaRecord(
                    region=region,
                    project_id=project,
                    service_type=ServiceType.COMPUTE,
                    kind=QuotaKind.LIMIT,
                    values=limits,
                )
            )
        if per_user is not None:
            quotas.append(
                QuotaRecord(
                    region=region,
                    project_id=project,
                    service_type=ServiceType.COMPUTE,
                    kind=QuotaKind.PER_USER,
                    values=per_user,
                )
            )
    snapshot = ObservedProvider(
        name=name,
        type=provider_type,
        status=ProviderStatus.ACTIVE,
        description="",
        is_public=False,
        support_emails=(),
        regions=tuple(Region(name=r) for r in regions),
        projects=(Project(project_id=project, name=project),),
        identity_providers=tuple(
            TrustedIdentityProvider(issuer=i, group_claim="groups") for i in trusted
        ),
        user_groups=(UserGroup(issuer=issuer, name=group),),
        slas=(
            Sla(
                sla_id=f"sla-{name}",
                issuer=issuer,
                user_group=group,
                start_date=sla_dates[0],
                end_date=sla_dates[1],
                projects=(project,),
            ),
        ),
        flavors=tuple(flavors),
        images=tuple(images),
        quotas=tuple(quotas),
        complete=True,
    )
    provider_id = name.lower() + ".openstack"
    return ObserveProvider(
        provider_id=provider_id,
        actor=INGEST,
        snapshot=snapshot,
        scopes_scanned_ok=tuple(ScanScope(region=r, project_id=project) for r in regions),
    )


def usage_of(provider_id: str, region: str, project: str, values: QuotaValues) -> RecordQuotaUsage:
    return RecordQuotaUsage(
        provider_id=provider_id,
        actor=INGEST,
        samples=(
            QuotaRecord(
                region=region,
                project_id=project,
                service_type=ServiceType.COMPUTE,
                kind=QuotaKind.USAGE,
                values=values,
            ),
        ),
    )
