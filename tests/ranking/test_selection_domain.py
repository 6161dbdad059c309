"""Selection and ranking, pure (given/when/then), beyond the rejection table of
tests/domain/providers/test_selection.py: data locality, what the scheduled event records,
the rebuilt selection that feeds the AI ranker's dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import msgspec
import pytest

import domain.deployments as deployments
from domain.deployments import (
    CompleteDeployment,
    DeploymentScheduled,
    StartAttempt,
)
from domain.deployments.values import PreferredSite, RankedSite
from domain.providers import ProviderState
from domain.providers.airanker import (
    RankedProvider,
    RankedProviders,
    apply_ranker_answer,
    dataset_rows,
    encode_ranked_providers,
    parse_ranked_providers,
    ranking_fallback,
    recorded_selection,
    to_providers_to_rank,
)
from domain.providers.selection import (
    RANKING_EXTERNAL,
    RANKING_FALLBACK,
    RejectionReason,
    SelectionRequest,
    candidate_of,
    data_sites_for,
    failure_message,
    parse_rse_sites,
    ranked_site,
    select_sites,
    to_record_scheduling,
)
from tests.domain.deployment_support import SCHEDULER, requested
from tests.domain.providers.support import NOW
from tests.domain.providers.test_selection import provider, request

from .support import OPEN_SLA

BETA_DISK = PreferredSite(provider_id="beta.openstack", region="r1")


def open_provider(name: str, **kw: object) -> ProviderState:
    return provider(name, sla_dates=OPEN_SLA, **kw)


# --- data locality ---------------------------------------------------------------------------


@dataclass
class LocalityCase:
    name: str
    data_sites: tuple[PreferredSite, ...]
    order: list[str]
    local: dict[str, bool | None] = field(default_factory=dict)


LOCALITY_CASES = [
    LocalityCase("no data requested: the built-in order, no locality feature", (),
                 ["alpha.openstack", "beta.openstack"],
                 {"alpha.openstack": None, "beta.openstack": None}),
    LocalityCase("data near beta's region: beta first", (BETA_DISK,),
                 ["beta.openstack", "alpha.openstack"],
                 {"alpha.openstack": False, "beta.openstack": True}),
    LocalityCase("data near beta, any region: beta first",
                 (PreferredSite(provider_id="beta.openstack"),),
                 ["beta.openstack", "alpha.openstack"]),
    LocalityCase("data near another region of beta: no bonus",
                 (PreferredSite(provider_id="beta.openstack", region="elsewhere"),),
                 ["alpha.openstack", "beta.openstack"],
                 {"alpha.openstack": False, "beta.openstack": False}),
    LocalityCase("data near both: the built-in order", (BETA_DISK,
                 PreferredSite(provider_id="alpha.openstack")),
                 ["alpha.openstack", "beta.openstack"]),
]


@pytest.mark.parametrize("case", LOCALITY_CASES, ids=[c.name for c in LOCALITY_CASES])
def test_data_locality(case: LocalityCase) -> None:
    # given two equal sites, when the request names the sites close to its data
    result = select_sites(request(data_sites=case.data_sites),
                          [open_provider("ALPHA"), open_provider("BETA")], now=NOW)
    # then the site close to the data ranks higher, and the feature says so
    assert [c.site.provider_id for c in result.candidates] == case.order
    for candidate in result.candidates:
        if candidate.site.provider_id in case.local:
            assert candidate.features.data_local == case.local[candidate.site.provider_id]


def test_locality_never_beats_a_pin_or_feasibility() -> None:
    result = select_sites(
        request(data_sites=(BETA_DISK,), pinned_site=PreferredSite(provider_id="alpha.openstack")),
        [open_provider("ALPHA"), open_provider("BETA")], now=NOW)
    assert [c.site.provider_id for c in result.candidates] == ["alpha.openstack"]
    result = select_sites(request(data_sites=(BETA_DISK,)),
                          [open_provider("ALPHA"), open_provider("BETA", images=[])],
                          now=NOW)
    assert [c.site.provider_id for c in result.candidates] == ["alpha.openstack"]


def test_the_rse_map_names_sites_and_rejects_nonsense() -> None:
    sites = parse_rse_sites({"BETA_DISK": "beta.openstack/r1", "ALPHA_TAPE": "alpha.openstack"})
    assert sites == {"BETA_DISK": BETA_DISK,
                     "ALPHA_TAPE": PreferredSite(provider_id="alpha.openstack")}
    assert data_sites_for({"UNKNOWN_RSE", "BETA_DISK"}, sites) == (BETA_DISK,)
    assert data_sites_for(set(), sites) == ()
    for bad in ("", "/r1", "a/b/c"):
        with pytest.raises(ValueError, match="provider_id"):
            parse_rse_sites({"RSE": bad})


# --- what the event records ------------------------------------------------------------------


def test_the_scheduled_event_keeps_features_explanations_and_messages() -> None:
    # given a selection with a candidate and a rejection
    result = select_sites(request(), [open_provider("ALPHA"), open_provider("BETA", flavors=[])],
                          now=NOW)
    # when it is recorded
    command = to_record_scheduling(ranking_fallback(result, "no answer within 5 s"),
                                   operation=1, actor=SCHEDULER)
    [event] = deployments.decide(command, deployments.fold([requested()]), now=NOW)
    # then the event carries what the ranking saw and why sites were rejected
    assert isinstance(event, DeploymentScheduled)
    assert event.ranking_method == RANKING_FALLBACK
    assert event.ranking_note == "no answer within 5 s"
    [candidate] = event.candidates
    assert candidate_of(candidate) == result.candidates[0]
    [rejection] = event.rejected
    assert rejection.reason == RejectionReason.NO_FLAVOR
    assert rejection.message is not None and rejection.message.startswith("No flavour fits")
    # and it survives the event's JSON round trip
    decoded = deployments.decode_event(deployments.encode_event(event))
    assert decoded == event


def test_a_stored_site_without_features_is_not_a_candidate_to_rebuild() -> None:
    with pytest.raises(msgspec.ValidationError):
        candidate_of(RankedSite(site=ranked_site(select_sites(
            request(), [open_provider("ALPHA")], now=NOW).candidates[0]).site,
            features={"headroom": "lots"}))


def test_the_failure_names_the_pinned_site_and_its_reason() -> None:
    pin = PreferredSite(provider_id="beta.openstack")
    result = select_sites(request(pinned_site=pin),
                          [open_provider("ALPHA"), open_provider("BETA", images=[])],
                          now=NOW)
    assert result.failure == failure_message(result.request, result.rejected)
    assert result.failure is not None
    assert result.failure.startswith("The chosen site beta.openstack cannot run")
    assert "No image for ubuntu 22.04" in result.failure


# --- the external ranker's answer ------------------------------------------------------------


def test_the_answer_model_version_is_parsed_and_recorded() -> None:
    result = select_sites(request(), [open_provider("ALPHA"), open_provider("BETA")],
                          now=NOW)
    message = to_providers_to_rank(result)
    answer = RankedProviders(uuid=message.uuid, model_version="rf-12", ranked_providers=tuple(
        RankedProvider(provider_name=row.provider_name, region_name=row.region_name,
                       classification=0.5, regression=0.1 * i)
        for i, row in enumerate(message.providers)))
    parsed = parse_ranked_providers(encode_ranked_providers(answer))
    assert parsed.model_version == "rf-12"
    ranked = apply_ranker_answer(result, parsed, model_version=parsed.model_version)
    command = to_record_scheduling(ranked, operation=1, actor=SCHEDULER)
    assert command.ranking_method == RANKING_EXTERNAL and command.model_version == "rf-12"
    assert [c.site.provider_id for c in command.candidates] == ["alpha.openstack",
                                                                "beta.openstack"]


# --- the dataset from events -----------------------------------------------------------------


def test_the_recorded_selection_gives_the_same_training_rows_as_the_live_one() -> None:
    # given a deployment scheduled on two sites, which completes on the first
    now = NOW
    history = [requested()]
    result = select_sites(
        SelectionRequest(**{**msgspec.structs.asdict(request()),
                            "deployment_id": history[0].deployment_id,
                            "template_name": history[0].template_identity.name}),
        [open_provider("ALPHA"), open_provider("BETA")], now=now)
    state = deployments.fold(history)
    for command in (
        to_record_scheduling(result, operation=1, actor=SCHEDULER),
        StartAttempt(deployment_id=state.deployment_id, actor=SCHEDULER, operation=1, attempt=1,
                     site=result.candidates[0].site),
        CompleteDeployment(deployment_id=state.deployment_id, actor=SCHEDULER, operation=1),
    ):
        now = now + timedelta(minutes=3)
        events = deployments.decide(command, state, now=now)
        history.extend(events)
        state = deployments.fold(events, state)
    # when the selection is rebuilt from the events alone
    rebuilt = recorded_selection(history, operation=1)
    # then it yields the same rows as the selection the handler had in hand
    assert rebuilt is not None
    assert [c.site for c in rebuilt.candidates] == [c.site for c in result.candidates]
    live_rows = dataset_rows(result, history, operation=1)
    assert dataset_rows(rebuilt, history, operation=1) == live_rows
    [row] = live_rows
    assert row.status == "CREATE_COMPLETE" and row.completion_time_s == 180.0
    assert recorded_selection(history[:1], operation=1) is None
