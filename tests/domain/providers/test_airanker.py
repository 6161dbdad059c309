"""INFN ai-ranker messages: providers-to-rank v1.1.0, ranked_providers, airanker-dataset v1.1.0."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from domain.deployments import (
    AttemptFailureCause,
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentStatus,
    OperationKind,
    OsRequest,
    PreferredSite,
    RequestedResources,
    Site,
)
from domain.providers import InvalidRankerAnswer, QuotaValues
from domain.providers.airanker import (
    DatasetRow,
    ProviderRow,
    apply_ranker_answer,
    dataset_key,
    dataset_rows,
    encode_message,
    encode_ranked_providers,
    parse_providers_to_rank,
    parse_ranked_providers,
    ranking_fallback,
    to_providers_to_rank,
)
from domain.providers.selection import (
    RANKING_EXTERNAL,
    RANKING_FALLBACK,
    SelectionRequest,
    SelectionResult,
    select_sites,
)
from tests.domain.deployment_support import DEPLOYER, T0, requested

from .support import IAM, NOW, catalogue_provider, observed, usage_after, usage_of

DEPLOYMENT = "11ef8b7c-2f4e-1b2a-9a3d-0242ac120002"

# The documented v1.1.0 shapes (infn-new-orchestrator.md 3.2.1; ai-ranker MSG_VALID_KEYS).
PROVIDER_ROW_KEYS = {
    "provider_name",
    "region_name",
    "vcpus_requ",
    "ram_gb_requ",
    "gpus_requ",
    "floating_ips_requ",
    "n_instances_requ",
    "exact_flavors",
    "storage_gb_requ",
    "n_volumes_requ",
    "vcpus_quota",
    "vcpus_usage",
    "ram_gb_quota",
    "ram_gb_usage",
    "n_instances_quota",
    "n_instances_usage",
    "floating_ips_quota",
    "floating_ips_usage",
    "storage_gb_quota",
    "storage_gb_usage",
    "n_volumes_quota",
    "n_volumes_usage",
    "overbooking_cpu",
    "overbooking_ram",
    "bandwidth_in",
    "bandwidth_out",
    "test_failure_perc_30d",
    "test_failure_perc_7d",
    "test_failure_perc_1d",
}
REQUEST_KEYS = {
    "msg_version",
    "uuid",
    "template_name",
    "user_group",
    "submission_time",
    "providers",
}
DATASET_KEYS = PROVIDER_ROW_KEYS | {
    "uuid",
    "template_name",
    "user_group",
    "status",
    "status_reason",
    "n_failures",
    "tot_failure_time_s",
    "completion_time_s",
    "submission_time",
}


def selection(**overrides: Any) -> SelectionResult:
    fields: dict[str, Any] = dict(
        deployment_id=DEPLOYMENT,
        user_group="g1",
        issuer=IAM,
        requested=RequestedResources(
            vms=2,
            vcpus=4,
            ram_mb=8192,
            disk_gb=40.0,
            public_ips=1,
            volumes=1,
            volumes_gb=100.0,
            os=(OsRequest(distribution="ubuntu", version="22.04"),),
        ),
        template_name="single-vm",
        template_type="vm",
        submitted_at=T0,
    )
    fields.update(overrides)
    states = [observed(catalogue_provider(name)) for name in ("ALPHA", "BETA", "GAMMA")]
    usage = usage_after(
        [
            usage_of(
                "alpha.openstack", "r1", "p1", QuotaValues(cores=10, ram_mib=20480, instances=3)
            ),
        ]
    )
    return select_sites(SelectionRequest(**fields), states, now=NOW, usage=[usage])


def test_providers_to_rank_has_exactly_the_documented_shape() -> None:
    message = to_providers_to_rank(selection())
    raw = msgspec.json.decode(encode_message(message))
    assert set(raw) == REQUEST_KEYS
    assert raw["msg_version"] == "1.1.0" and raw["uuid"] == DEPLOYMENT
    assert raw["submission_time"] == T0.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert len(raw["providers"]) == 3
    for row in raw["providers"]:
        assert set(row) == PROVIDER_ROW_KEYS
        assert all(isinstance(v, float) for k, v in row.items() if not k.endswith("_name"))
    assert list(raw) == sorted(raw)  # sorted keys, as the INFN components write


def test_provider_rows_use_the_chosen_flavours_and_paas_mon_units() -> None:
    message = to_providers_to_rank(selection())
    alpha = next(r for r in message.providers if r.provider_name == "ALPHA")
    assert alpha == ProviderRow(
        provider_name="ALPHA",
        region_name="r1",
        vcpus_requ=4.0,
        ram_gb_requ=8.0,
        gpus_requ=0.0,
        floating_ips_requ=1.0,
        n_instances_requ=2.0,
        exact_flavors=2.0,
        storage_gb_requ=100.0,
        n_volumes_requ=1.0,
        vcpus_quota=100.0,
        vcpus_usage=10.0,
        ram_gb_quota=200.0,
        ram_gb_usage=20.0,
        n_instances_quota=50.0,
        n_instances_usage=3.0,
        floating_ips_quota=-1.0,
        floating_ips_usage=0.0,
        storage_gb_quota=-1.0,
        storage_gb_usage=0.0,
        n_volumes_quota=-1.0,
        n_volumes_usage=0.0,
        overbooking_cpu=1.0,
        overbooking_ram=1.0,
        bandwidth_in=10.0,
        bandwidth_out=10.0,
        test_failure_perc_30d=-1.0,
        test_failure_perc_7d=-1.0,
        test_failure_perc_1d=-1.0,
    )


def test_providers_to_rank_round_trips() -> None:
    message = to_providers_to_rank(selection())
    assert parse_providers_to_rank(encode_message(message)) == message


def test_providers_to_rank_refuses_keys_the_ranker_would_refuse() -> None:
    raw = msgspec.json.decode(encode_message(to_providers_to_rank(selection())))
    raw["providers"][0]["images"] = True
    with pytest.raises(InvalidRankerAnswer, match="unknown keys"):
        parse_providers_to_rank(raw)
    raw = msgspec.json.decode(encode_message(to_providers_to_rank(selection())))
    raw["msg_version"] = "1.0.0"
    with pytest.raises(InvalidRankerAnswer, match="msg_version"):
        parse_providers_to_rank(raw)


# --- ranked_providers ------------------------------------------------------------------------


def answer_for(result: SelectionResult, order: list[str], **extra_rows: Any) -> bytes:
    """An ai-ranker answer: the input rows in ``order``, plus the verdict fields."""
    rows = {
        r.provider_name: msgspec.structs.asdict(r) for r in to_providers_to_rank(result).providers
    }
    ranked = []
    for rank, name in enumerate(order):
        row = rows.get(name) or {"provider_name": name, "region_name": "r1"}
        ranked.append(
            {
                **row,
                "classification": 0.75 * (0.9 - rank / 10),
                "regression": 0.25 * 0.5,
                "resource_exactness": 1.0,
            }
        )
    return msgspec.json.encode(
        {"uuid": extra_rows.get("uuid", DEPLOYMENT), "ranked_providers": ranked}
    )


def test_an_answer_reorders_the_candidates_and_says_so() -> None:
    result = selection()
    assert [c.site.provider_name for c in result.candidates] == ["BETA", "GAMMA", "ALPHA"]
    answer = parse_ranked_providers(answer_for(result, ["ALPHA", "GAMMA", "BETA"]))
    ranked = apply_ranker_answer(result, answer, model_version="rf-10")
    assert [c.site.provider_name for c in ranked.candidates] == ["ALPHA", "GAMMA", "BETA"]
    assert ranked.ranking_method == RANKING_EXTERNAL and ranked.model_version == "rf-10"
    assert ranked.candidates[0].score == pytest.approx(0.75 * 0.9 + 0.125)
    assert ranked.candidates[0].explanation.startswith("ai-ranker rank 1: classification")
    assert ranked.candidates[0].features == result.candidates[-1].features


def test_the_preferred_site_stays_first_and_left_out_sites_follow() -> None:
    result = selection(preferred_site=PreferredSite(provider_id="gamma.openstack"))
    answer = parse_ranked_providers(answer_for(result, ["ALPHA", "UNKNOWN", "GAMMA"]))
    ranked = apply_ranker_answer(result, answer)
    assert [c.site.provider_name for c in ranked.candidates] == ["GAMMA", "ALPHA", "BETA"]


def test_answers_for_another_deployment_or_naming_nobody_are_refused() -> None:
    result = selection()
    with pytest.raises(InvalidRankerAnswer, match="answers"):
        apply_ranker_answer(
            result, parse_ranked_providers(answer_for(result, ["ALPHA"], uuid="other"))
        )
    with pytest.raises(InvalidRankerAnswer, match="none of the candidates"):
        apply_ranker_answer(result, parse_ranked_providers(answer_for(result, ["NOBODY"])))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"nope", "ranked_providers"),
        (b"[]", "not a JSON object"),
        (b'{"ranked_providers": []}', "uuid is missing"),
        (b'{"uuid": "x", "ranked_providers": {}}', "must be a list"),
        (b'{"uuid": "x", "ranked_providers": [{"provider_name": "A"}]}', "missing required field"),
        (
            b'{"uuid": "x", "ranked_providers": [{"provider_name": "A", "region_name": "r",'
            b' "classification": "high", "regression": 0}]}',
            "classification",
        ),
    ],
)
def test_malformed_answers_are_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(InvalidRankerAnswer, match=problem):
        parse_ranked_providers(payload)


def test_ranked_providers_round_trip() -> None:
    result = selection()
    payload = answer_for(result, ["BETA", "ALPHA"])
    answer = parse_ranked_providers(payload)
    assert answer.ranked_providers[0].extra["vcpus_quota"] == 100.0
    assert msgspec.json.decode(encode_ranked_providers(answer)) == msgspec.json.decode(payload)
    assert parse_ranked_providers(encode_ranked_providers(answer)) == answer


def test_the_fallback_keeps_the_built_in_ranking_and_says_why() -> None:
    result = selection()
    fallback = ranking_fallback(result, "no answer within 5 s")
    assert fallback.candidates == result.candidates
    assert fallback.ranking_method == RANKING_FALLBACK
    assert fallback.ranking_note == "no answer within 5 s"


# --- airanker-dataset ------------------------------------------------------------------------


def site_of(result: SelectionResult, name: str) -> Site:
    return next(c.site for c in result.candidates if c.site.provider_name == name)


def attempt(n: int, site: Site, seconds: int) -> DeploymentAttemptStarted:
    return DeploymentAttemptStarted(
        deployment_id=DEPLOYMENT,
        occurred_at=T0 + timedelta(seconds=seconds),
        actor=DEPLOYER,
        operation=1,
        attempt=n,
        site=site,
    )


def failed(
    n: int,
    site: Site,
    seconds: int,
    reason: str = "quota exceeded",
    cause: AttemptFailureCause = AttemptFailureCause.ERROR,
) -> DeploymentAttemptFailed:
    return DeploymentAttemptFailed(
        deployment_id=DEPLOYMENT,
        occurred_at=T0 + timedelta(seconds=seconds),
        actor=DEPLOYER,
        operation=1,
        attempt=n,
        site=site,
        reason=reason,
        cause=cause,
    )


def completed(n: int, site: Site, seconds: int) -> DeploymentCompleted:
    return DeploymentCompleted(
        deployment_id=DEPLOYMENT,
        occurred_at=T0 + timedelta(seconds=seconds),
        actor=DEPLOYER,
        operation=1,
        kind=OperationKind.CREATE,
        status=DeploymentStatus.CREATE_COMPLETE,
        attempt=n,
        site=site,
    )


def test_dataset_rows_from_a_failure_then_a_success_elsewhere() -> None:
    result = selection()
    beta, alpha = site_of(result, "BETA"), site_of(result, "ALPHA")
    events: list[DeploymentEvent] = [
        requested(deployment_id=DEPLOYMENT),
        attempt(1, beta, 10),
        failed(1, beta, 70),
        attempt(2, alpha, 80),
        completed(2, alpha, 410),
    ]
    failed_row, success_row = dataset_rows(result, events, operation=1)
    assert (failed_row.provider_name, failed_row.status, failed_row.status_reason) == (
        "BETA",
        "CREATE_FAILED",
        "quota exceeded",
    )
    assert (failed_row.n_failures, failed_row.tot_failure_time_s) == (1, 60.0)
    assert failed_row.submission_time == (T0 + timedelta(seconds=10)).strftime("%Y-%m-%d %H:%M:%S")
    assert (success_row.provider_name, success_row.status, success_row.status_reason) == (
        "ALPHA",
        "CREATE_COMPLETE",
        None,
    )
    assert (success_row.n_failures, success_row.completion_time_s) == (0, 330.0)
    assert success_row.vcpus_usage == 10.0  # the features at decision time
    raw = msgspec.json.decode(encode_message(success_row))
    assert set(raw) == DATASET_KEYS | {"msg_version"} and raw["msg_version"] == "1.1.0"
    assert dataset_key(success_row) == f"alpha_r1_{DEPLOYMENT}"


def test_retries_on_one_site_make_one_row_and_the_final_reason_wins() -> None:
    result = selection()
    beta = site_of(result, "BETA")
    events: list[DeploymentEvent] = [
        attempt(1, beta, 0),
        failed(1, beta, 30, "timeout"),
        attempt(2, beta, 40),
        failed(2, beta, 100, "IM error"),
        DeploymentFailed(
            deployment_id=DEPLOYMENT,
            occurred_at=T0 + timedelta(seconds=101),
            actor=DEPLOYER,
            operation=1,
            kind=OperationKind.CREATE,
            status=DeploymentStatus.CREATE_FAILED,
            reason="Retries on cloud providers exhausted.",
        ),
    ]
    [row] = dataset_rows(result, events, operation=1)
    assert (row.n_failures, row.tot_failure_time_s) == (2, 90.0)
    assert row.status_reason == "Retries on cloud providers exhausted."


def test_cancelled_and_running_attempts_make_no_row() -> None:
    result = selection()
    beta, alpha = site_of(result, "BETA"), site_of(result, "ALPHA")
    events: list[DeploymentEvent] = [
        attempt(1, beta, 0),
        failed(1, beta, 5, "deleted", AttemptFailureCause.CANCELLED),
        attempt(2, alpha, 10),
    ]
    assert dataset_rows(result, events, operation=1) == []


def test_dataset_rows_are_valid_dataset_structs() -> None:
    result = selection()
    beta = site_of(result, "BETA")
    [row] = dataset_rows(result, [attempt(1, beta, 0), completed(1, beta, 60)], operation=1)
    assert isinstance(row, DatasetRow)
    assert msgspec.json.decode(encode_message(row), type=DatasetRow) == row
