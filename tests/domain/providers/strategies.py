"""Hypothesis strategies: random provider catalogues (for the diff property).

Round trips of any msgspec type use tests/msgspec_strategies.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from domain.providers import (
    Flavor,
    Image,
    Location,
    Network,
    ObservedProvider,
    Project,
    ProviderStatus,
    ProviderType,
    QuotaKind,
    QuotaRecord,
    QuotaValues,
    Region,
    Service,
    ServiceType,
    Sla,
    TrustedIdentityProvider,
    UserGroup,
)

# --- random catalogues -----------------------------------------------------------------------

REGIONS = ("r1", "r2", "r3")
PROJECTS = ("p1", "p2", "p3")
ISSUERS = ("https://iam-a.example/", "https://iam-b.example/")
UUIDS = ("u1", "u2", "u3", "u4")
SMALL = st.integers(min_value=0, max_value=3)


def _subset(values: tuple[str, ...], *, min_size: int = 0) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=min_size, unique=True).map(sorted)


@st.composite
def _access(draw: st.DrawFn, projects: list[str]) -> dict[str, Any]:
    shared = draw(st.booleans())
    if shared or not projects:
        return {"is_shared": True, "projects": ()}
    chosen = draw(st.lists(st.sampled_from(projects), min_size=1, unique=True))
    return {"is_shared": False, "projects": tuple(sorted(chosen))}


@st.composite
def catalogues(draw: st.DrawFn) -> ObservedProvider:
    """A complete, valid snapshot of an active provider with random content."""
    regions = draw(_subset(REGIONS, min_size=1))
    projects = draw(_subset(PROJECTS, min_size=1))
    issuers = draw(_subset(ISSUERS, min_size=1))
    idps = [
        TrustedIdentityProvider(
            issuer=i,
            group_claim=draw(st.sampled_from(["groups", "entitlements"])),
            idp_name=draw(st.sampled_from([None, "infn-cc"])),
            protocol=draw(st.sampled_from([None, "openid"])),
        )
        for i in issuers
    ]
    groups = sorted({(i, g) for i in issuers for g in draw(_subset(("g1", "g2")))})
    slas = []
    for n, (issuer, group) in enumerate(groups):
        if draw(st.booleans()):
            start = date(2025, 1, 1) + timedelta(days=draw(SMALL))
            slas.append(
                Sla(
                    sla_id=f"sla-{n}-{draw(st.sampled_from('ab'))}",
                    issuer=issuer,
                    user_group=group,
                    start_date=start,
                    end_date=start + timedelta(days=1 + draw(SMALL)),
                    projects=tuple(draw(_subset(tuple(projects), min_size=1))),
                )
            )
    services, flavors, images, networks, quotas = [], [], [], [], []
    for region in regions:
        for service_type, endpoint in draw(
            st.lists(
                st.sampled_from(
                    [
                        (ServiceType.COMPUTE, "https://nova/"),
                        (ServiceType.NETWORK, "https://neutron/"),
                        (ServiceType.IDENTITY, "https://keystone/"),
                    ]
                ),
                unique=True,
            )
        ):
            services.append(
                Service(
                    region=region, type=service_type, name=f"svc-{draw(SMALL)}", endpoint=endpoint
                )
            )
        for uuid in draw(_subset(UUIDS)):
            gpus = draw(SMALL)
            flavors.append(
                Flavor(
                    region=region,
                    uuid=uuid,
                    name=f"flavor-{draw(SMALL)}",
                    vcpus=draw(SMALL),
                    ram_mib=1024 * draw(SMALL),
                    gpus=gpus,
                    gpu_vendor="NVIDIA" if gpus and draw(st.booleans()) else None,
                    **draw(_access(projects)),
                )
            )
        for uuid in draw(_subset(UUIDS)):
            images.append(
                Image(
                    region=region,
                    uuid=uuid,
                    name=f"image-{draw(SMALL)}",
                    os_distro=draw(st.sampled_from([None, "ubuntu", "almalinux"])),
                    os_version=draw(st.sampled_from([None, "9", "22.04"])),
                    tags=tuple(draw(_subset(("gpu", "infn-cloud")))),
                    created_at=draw(st.sampled_from([None, datetime(2025, 7, 1, tzinfo=UTC)])),
                    **draw(_access(projects)),
                )
            )
        for uuid in draw(_subset(UUIDS)):
            networks.append(
                Network(
                    region=region,
                    uuid=uuid,
                    name=f"net-{draw(SMALL)}",
                    is_router_external=draw(st.booleans()),
                    mtu=draw(st.sampled_from([None, 1450, 1500])),
                    **draw(_access(projects)),
                )
            )
        for project in projects:
            for service_type, kind in draw(
                st.lists(
                    st.sampled_from(
                        [
                            (ServiceType.COMPUTE, QuotaKind.LIMIT),
                            (ServiceType.COMPUTE, QuotaKind.PER_USER),
                            (ServiceType.BLOCK_STORAGE, QuotaKind.LIMIT),
                        ]
                    ),
                    unique=True,
                )
            ):
                quotas.append(
                    QuotaRecord(
                        region=region,
                        project_id=project,
                        service_type=service_type,
                        kind=kind,
                        values=QuotaValues(cores=draw(SMALL), instances=draw(SMALL) - 1),
                    )
                )
    return ObservedProvider(
        name="CLOUD-RANDOM",
        type=ProviderType.OPENSTACK,
        status=ProviderStatus.ACTIVE,
        description=draw(st.sampled_from(["", "a cloud"])),
        is_public=draw(st.booleans()),
        support_emails=tuple(draw(_subset(("a@example.org", "b@example.org")))),
        auth_endpoint="https://keystone/",
        regions=tuple(
            Region(
                name=r,
                overbooking_cpu=draw(st.sampled_from([1.0, 2.0])),
                location=draw(st.sampled_from([None, Location(site=f"SITE-{r}", country="Italy")])),
            )
            for r in regions
        ),
        services=tuple(services),
        projects=tuple(Project(project_id=p, name=f"{p}-{draw(SMALL)}") for p in projects),
        identity_providers=tuple(idps),
        user_groups=tuple(UserGroup(issuer=i, name=g) for i, g in groups),
        slas=tuple(slas),
        flavors=tuple(flavors),
        images=tuple(images),
        networks=tuple(networks),
        quotas=tuple(quotas),
        complete=True,
    )
