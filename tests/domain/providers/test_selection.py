"""Selection and the built-in ranking: every rejection reason, preferred and pinned sites."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import msgspec
import pytest

import domain.deployments as deployments
from domain.deployments import (
    DeploymentScheduled,
    OsRequest,
    PreferredSite,
    RankedSite,
    RequestedResources,
    SiteRejection,
)
from domain.providers import (
    ProviderState,
    ProviderStatus,
    ProviderType,
    QuotaValues,
    ScanScope,
    ScopeFailure,
    SetProviderPriority,
    SetProviderStatus,
    decide,
    fold,
)
from domain.providers.selection import (
    RANKING_BUILTIN,
    ComputeNodeRequest,
    RejectionReason,
    SelectionRequest,
    SelectionResult,
    SuccessStats,
    select_sites,
    to_record_scheduling,
)
from domain.providers.usage import QuotaUsageState

from .support import (
    ADMIN,
    IAM,
    NOW,
    catalogue_provider,
    make_flavor,
    make_image,
    observed,
    usage_after,
    usage_of,
)

OTHER_IAM = "https://other-iam.example.org/"
DEPLOYMENT = "11ef8b7c-2f4e-1b2a-9a3d-0242ac120002"
UBUNTU = OsRequest(distribution="ubuntu", version="22.04")
R = RejectionReason


def request(**overrides: object) -> SelectionRequest:
    fields: dict[str, object] = dict(
        deployment_id=DEPLOYMENT,
        user_group="g1",
        issuer=IAM,
        requested=RequestedResources(vms=1, vcpus=2, ram_mb=4096, disk_gb=20.0, os=(UBUNTU,)),
        template_name="single-vm",
        template_type="vm",
    )
    fields.update(overrides)
    return SelectionRequest(**fields)  # type: ignore[arg-type]


def provider(name: str, **kw: object) -> ProviderState:
    return observed(catalogue_provider(name, **kw))  # type: ignore[arg-type]


def in_status(state: ProviderState, status: ProviderStatus) -> ProviderState:
    command = SetProviderStatus(provider_id=state.provider_id, actor=ADMIN, status=status)
    return fold(decide(command, state, now=NOW), state)


def with_priority(state: ProviderState, priority: int) -> ProviderState:
    command = SetProviderPriority(provider_id=state.provider_id, actor=ADMIN, priority=priority)
    return fold(decide(command, state, now=NOW), state)


def used(name: str, cores: int, ram_mib: int = 0, instances: int = 0) -> QuotaUsageState:
    values = QuotaValues(cores=cores, ram_mib=ram_mib, instances=instances)
    return usage_after([usage_of(f"{name.lower()}.openstack", "r1", "p1", values)])


def ids(result: SelectionResult) -> list[str]:
    return [c.site.provider_id for c in result.candidates]


def rejections(result: SelectionResult) -> set[tuple[str, RejectionReason]]:
    return {(r.site.provider_id, r.reason) for r in result.rejected}


@dataclass
class Case:
    name: str
    providers: Callable[[], list[ProviderState]]
    request: SelectionRequest = field(default_factory=request)
    usage: Callable[[], list[QuotaUsageState]] = list
    candidates: list[str] = field(default_factory=list)
    rejected: set[tuple[str, RejectionReason]] = field(default_factory=set)
    failure: str | None = None


CASES = [
    Case("feasible", lambda: [provider("ALPHA")], candidates=["alpha.openstack"]),
    Case(
        "identity provider not trusted",
        lambda: [provider("ALPHA", issuer=OTHER_IAM)],
        rejected={("alpha.openstack", R.IDENTITY_PROVIDER_NOT_TRUSTED)},
        failure="1 identity_provider_not_trusted",
    ),
    Case(
        "SLA of the same group name under another issuer",
        lambda: [provider("ALPHA", issuer=OTHER_IAM, trusted=[IAM, OTHER_IAM])],
        rejected={("alpha.openstack", R.NOT_ENTITLED)},
    ),
    Case(
        "SLA expired",
        lambda: [provider("ALPHA", sla_dates=(date(2024, 1, 1), date(2024, 12, 31)))],
        rejected={("alpha.openstack", R.SLA_EXPIRED)},
    ),
    Case(
        "SLA not yet valid",
        lambda: [provider("ALPHA", sla_dates=(date(2026, 1, 1), date(2026, 12, 31)))],
        rejected={("alpha.openstack", R.SLA_NOT_YET_VALID)},
    ),
    Case(
        "no image for the requested OS",
        lambda: [provider("ALPHA", images=[make_image("r1", "ubuntu", "20.04")])],
        rejected={("alpha.openstack", R.NO_IMAGE)},
    ),
    Case(
        "no flavour that fits",
        lambda: [provider("ALPHA")],
        request=request(requested=RequestedResources(vms=1, vcpus=64, ram_mb=4096, os=(UBUNTU,))),
        rejected={("alpha.openstack", R.NO_FLAVOR)},
    ),
    Case(
        "quota exhausted",
        lambda: [provider("ALPHA")],
        usage=lambda: [used("ALPHA", cores=99)],
        rejected={("alpha.openstack", R.QUOTA_EXHAUSTED)},
    ),
    Case(
        "per-user limit exceeded",
        lambda: [provider("ALPHA", per_user=QuotaValues(cores=1))],
        rejected={("alpha.openstack", R.QUOTA_EXHAUSTED)},
    ),
    Case(
        "provider not active",
        lambda: [in_status(provider("ALPHA"), ProviderStatus.MAINTENANCE)],
        rejected={("alpha.openstack", R.PROVIDER_NOT_ACTIVE)},
    ),
    Case(
        "provider of the wrong type",
        lambda: [provider("ALPHA", provider_type=ProviderType.KUBERNETES)],
        rejected={("alpha.openstack", R.UNSUPPORTED_PROVIDER_TYPE)},
    ),
    Case(
        "another site pinned by the user",
        lambda: [provider("ALPHA"), provider("BETA")],
        request=request(pinned_site=PreferredSite(provider_id="beta.openstack")),
        candidates=["beta.openstack"],
        rejected={("alpha.openstack", R.PINNED_ELSEWHERE)},
    ),
    Case(
        "pinned site infeasible: fails with its reason",
        lambda: [provider("ALPHA"), provider("BETA", images=[])],
        request=request(pinned_site=PreferredSite(provider_id="beta.openstack", region="r1")),
        rejected={("alpha.openstack", R.PINNED_ELSEWHERE), ("beta.openstack", R.NO_IMAGE)},
        failure="The chosen site beta.openstack/r1 cannot run this deployment: "
        "beta.openstack/r1: No image for ubuntu 22.04 in r1 for project p1",
    ),
    Case(
        "pinned site the group has no SLA for",
        lambda: [provider("ALPHA")],
        request=request(pinned_site=PreferredSite(provider_id="gamma.openstack")),
        rejected={("alpha.openstack", R.PINNED_ELSEWHERE), ("gamma.openstack", R.NOT_ENTITLED)},
        failure="The group g1 has no SLA on gamma.openstack",
    ),
    Case(
        "preferred site first when feasible",
        lambda: [with_priority(provider("ALPHA"), 100), provider("BETA")],
        request=request(preferred_site=PreferredSite(provider_id="beta.openstack")),
        candidates=["beta.openstack", "alpha.openstack"],
    ),
    Case(
        "preferred site infeasible: the others are ranked",
        lambda: [provider("ALPHA"), provider("BETA", flavors=[])],
        request=request(preferred_site=PreferredSite(provider_id="beta.openstack")),
        candidates=["alpha.openstack"],
        rejected={("beta.openstack", R.NO_FLAVOR)},
    ),
    Case(
        "GPU vendor and model must match",
        lambda: [
            provider(
                "ALPHA",
                flavors=[
                    make_flavor(
                        "r1", "a100", 16, 65536, 200, 1, gpu_vendor="NVIDIA", gpu_model="A100"
                    )
                ],
            ),
            provider(
                "BETA",
                flavors=[
                    make_flavor("r1", "t4", 16, 65536, 200, 1, gpu_vendor="NVIDIA", gpu_model="T4")
                ],
            ),
        ],
        request=request(
            nodes=(
                ComputeNodeRequest(
                    node="gpu_node",
                    vcpus=8,
                    ram_mb=32000,
                    gpus=1,
                    gpu_vendor="nvidia",
                    gpu_model="a100",
                    os=UBUNTU,
                ),
            ),
        ),
        candidates=["alpha.openstack"],
        rejected={("beta.openstack", R.NO_FLAVOR)},
    ),
    Case(
        "no SLA for the group anywhere",
        lambda: [provider("ALPHA", group="someone-else")],
        failure="The group g1 has no SLA on any site",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_selection(case: Case) -> None:
    result = select_sites(case.request, case.providers(), now=NOW, usage=case.usage())
    assert ids(result) == case.candidates
    assert rejections(result) == case.rejected
    if case.failure is not None:
        assert result.failure is not None and case.failure in result.failure
    else:
        assert (result.failure is None) == bool(case.candidates)


def test_every_rejection_reason_is_covered_by_the_table() -> None:
    covered = {reason for case in CASES for _, reason in case.rejected}
    assert covered == set(RejectionReason)


def test_rejections_explain_themselves() -> None:
    result = select_sites(request(), [provider("ALPHA")], now=NOW, usage=[used("ALPHA", 99)])
    [rejection] = result.rejected
    assert rejection.message == "cores: needs 2, 1 of 100 left for project p1 in r1"
    assert rejection.sla_id == "sla-ALPHA"


# --- ranking ---------------------------------------------------------------------------------


def test_more_quota_headroom_ranks_first() -> None:
    result = select_sites(
        request(),
        [provider("ALPHA"), provider("BETA")],
        now=NOW,
        usage=[used("ALPHA", 90), used("BETA", 10)],
    )
    assert ids(result) == ["beta.openstack", "alpha.openstack"]
    alpha = result.candidates[1].features
    assert alpha.headroom == pytest.approx(0.08)  # (100 - 90 - 2) / 100
    assert result.candidates[0].features.headroom == pytest.approx(0.88)


def test_the_recent_success_rate_of_the_template_on_the_site_counts_most() -> None:
    stats = [
        SuccessStats(
            provider_id="alpha.openstack", region="r1", template_type="vm", attempts=10, successes=9
        ),
        SuccessStats(
            provider_id="beta.openstack", region="r1", template_type="vm", attempts=10, successes=1
        ),
    ]
    result = select_sites(
        request(),
        [provider("ALPHA"), provider("BETA")],
        now=NOW,
        usage=[used("ALPHA", 80), used("BETA", 0)],
        stats=stats,
    )
    assert ids(result) == ["alpha.openstack", "beta.openstack"]
    best = result.candidates[0]
    assert best.features.success_rate == pytest.approx(10 / 12)
    assert best.explanation == (
        "score 0.637 = 0.3 x headroom 0.18 + 0.2 x flavour exactness 1.00"
        " + 0.4 x success rate 0.83 (9/10 recent) + 0.1 x priority 0.50"
    )
    assert best.score == pytest.approx(0.3 * 0.18 + 0.2 + 0.4 * 10 / 12 + 0.05, abs=1e-6)


def test_flavour_exactness_and_operator_priority_count() -> None:
    inexact = provider("ALPHA", flavors=[make_flavor("r1", "big", 4, 8192, 40)])
    result = select_sites(request(), [inexact, with_priority(provider("BETA"), 80)], now=NOW)
    assert ids(result) == ["beta.openstack", "alpha.openstack"]
    assert [c.features.flavour_exactness for c in result.candidates] == [1.0, 0.0]
    assert result.candidates[0].features.priority == 0.8


def test_a_site_whose_latest_scan_failed_is_penalised_not_rejected() -> None:
    failing = catalogue_provider("ALPHA")
    failure = ScopeFailure(scope=ScanScope(region="r1", project_id="p1"))
    alpha = observed(
        msgspec.structs.replace(
            failing,
            scopes_scanned_ok=(),
            scopes_failed=(failure,),
            snapshot=msgspec.structs.replace(failing.snapshot, quotas=()),
        ),
        observed(failing),
    )
    result = select_sites(request(), [alpha, provider("BETA")], now=NOW)
    assert ids(result) == ["beta.openstack", "alpha.openstack"]
    assert not result.candidates[1].features.scan_healthy
    assert "latest scan failed" in result.candidates[1].explanation


def test_ties_are_broken_by_the_site_key_whatever_the_input_order() -> None:
    states = [provider(name) for name in ("DELTA", "ALPHA", "CHARLIE", "BRAVO")]
    first = select_sites(request(), states, now=NOW)
    for seed in range(5):
        shuffled = states[:]
        random.Random(seed).shuffle(shuffled)
        assert select_sites(request(), shuffled, now=NOW) == first
    assert ids(first) == sorted(ids(first))


def test_sizes_are_derived_from_the_totals_without_node_details() -> None:
    totals = RequestedResources(vms=2, vcpus=8, ram_mb=16384, disk_gb=80.0, os=(UBUNTU,))
    result = select_sites(request(requested=totals), [provider("ALPHA")], now=NOW)
    [choice] = result.candidates[0].features.flavours
    assert (choice.flavor_name, choice.instances, choice.exact) == ("medium", 2, True)
    assert result.candidates[0].features.resource("cores") is not None
    cores = result.candidates[0].features.resource("cores")
    assert cores is not None and cores.needed == 8


def test_each_site_is_a_region_of_a_project_of_the_group() -> None:
    result = select_sites(request(), [provider("ALPHA", regions=("r1", "r2"))], now=NOW)
    assert [(c.site.region, c.site.project) for c in result.candidates] == [
        ("r1", "p1"),
        ("r2", "p1"),
    ]
    assert result.candidates[0].site.provider_name == "ALPHA"
    assert result.ranking_method == RANKING_BUILTIN


# --- into the deployment aggregate -----------------------------------------------------------


def test_the_result_feeds_record_scheduling_and_the_deployment_accepts_it() -> None:
    from tests.domain.deployment_support import SCHEDULER, requested

    pin = PreferredSite(provider_id="beta.openstack")
    result = select_sites(request(pinned_site=pin), [provider("ALPHA"), provider("BETA")], now=NOW)
    command = to_record_scheduling(result, operation=1, actor=SCHEDULER)
    # issue 4: the command also carries the features, explanation and rejection message
    [chosen] = result.candidates
    assert command.candidates == (
        RankedSite(
            site=chosen.site,
            score=chosen.score,
            features=msgspec.json.decode(msgspec.json.encode(chosen.features)),
            explanation=chosen.explanation,
            sla_id=chosen.sla_id,
            ranker_name=chosen.ranker_name,
        ),
    )
    assert command.rejected == (
        SiteRejection(
            site=result.rejected[0].site,
            reason="pinned_elsewhere",
            message=result.rejected[0].message,
            sla_id=result.rejected[0].sla_id,
        ),
    )
    history = deployments.fold([requested(preferred_site=pin)])
    [event] = deployments.decide(command, history, now=NOW)
    assert isinstance(event, DeploymentScheduled)
    assert event.ranking_method == RANKING_BUILTIN
    assert event.candidates == command.candidates


def test_an_empty_result_is_recordable() -> None:
    from tests.domain.deployment_support import SCHEDULER

    result = select_sites(request(), [provider("ALPHA", images=[])], now=NOW)
    command = to_record_scheduling(result, operation=1, actor=SCHEDULER)
    assert command.candidates == ()
    assert [r.reason for r in command.rejected] == ["no_image"]
    assert result.failure is not None
