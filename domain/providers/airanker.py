"""INFN's ai-ranker messages, as pure converters (``infn-new-orchestrator.md`` 2.5, 2.7, 3.2).

- ``providers-to-rank`` v1.1.0 (paas-mon provider-selector -> ai-ranker):
  :class:`ProvidersToRank`, built from a :class:`SelectionResult` by
  :func:`to_providers_to_rank`;
- ``ranked_providers`` (ai-ranker -> orchestrator): :class:`RankedProviders`, parsed by
  :func:`parse_ranked_providers` and applied by :func:`apply_ranker_answer`;
- ``airanker-dataset`` v1.1.0 (training rows): :class:`DatasetRow`, produced from a
  selection and the deployment's events by :func:`dataset_rows`.

The provider row keys are exactly the ai-ranker's ``MSG_VALID_KEYS["1.1.0"]`` (its loader
rejects any other key); numbers are floats, as paas-mon sends them. Sizes follow paas-mon:
``*_requ`` are the chosen flavours' sizes times instances (not the raw request), RAM in GiB
(MiB / 1024), storage in GB, and ``exact_flavors`` counts instances on exact flavours.
Unknown limits are sent as ``-1`` (OpenStack's "unlimited"), unknown usage as ``0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from domain.deployments.events import (
    DeploymentAttemptFailed,
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentRequested,
    DeploymentScheduled,
)
from domain.deployments.values import AttemptFailureCause, OperationKind

from .errors import InvalidRankerAnswer
from .selection import (
    RANKING_EXTERNAL,
    RANKING_FALLBACK,
    Candidate,
    SelectionRequest,
    SelectionResult,
    candidate_of,
)

MSG_VERSION: Final = "1.1.0"
SUBMISSION_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"
"""``providers-to-rank.submission_time``: the validated template's timestamp format."""
DATASET_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
"""``airanker-dataset.submission_time``, as the dataset-collector writes it."""


class ProviderRow(msgspec.Struct, frozen=True, kw_only=True):
    """One candidate site in ``providers-to-rank`` v1.1.0 (all numbers floats); the
    ``airanker-dataset`` row carries the same fields after its outcome."""

    provider_name: str
    region_name: str
    vcpus_requ: float
    ram_gb_requ: float
    gpus_requ: float
    floating_ips_requ: float
    n_instances_requ: float
    exact_flavors: float
    storage_gb_requ: float
    n_volumes_requ: float
    vcpus_quota: float
    vcpus_usage: float
    ram_gb_quota: float
    ram_gb_usage: float
    n_instances_quota: float
    n_instances_usage: float
    floating_ips_quota: float
    floating_ips_usage: float
    storage_gb_quota: float
    storage_gb_usage: float
    n_volumes_quota: float
    n_volumes_usage: float
    overbooking_cpu: float
    overbooking_ram: float
    bandwidth_in: float
    bandwidth_out: float
    test_failure_perc_30d: float
    test_failure_perc_7d: float
    test_failure_perc_1d: float


class ProvidersToRank(msgspec.Struct, frozen=True, kw_only=True):
    """The ``providers-to-rank`` message (Kafka key: ``uuid``)."""

    msg_version: str
    uuid: str
    template_name: str
    user_group: str
    submission_time: str
    providers: tuple[ProviderRow, ...]


class RankedProvider(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``ranked_providers``: the input row plus the ranker's verdict.

    ``classification`` and ``regression`` are already weighted (0.75 / 0.25 by default;
    ``-0.75``/``-0.25`` or ``-1`` when a model failed); the rest of the input row is echoed
    and kept in ``extra``.
    """

    provider_name: str
    region_name: str
    classification: float
    regression: float
    resource_exactness: float | None = None
    extra: dict[str, Any] = {}

    @property
    def score(self) -> float:
        return self.classification + self.regression


class RankedProviders(msgspec.Struct, frozen=True, kw_only=True):
    """The answer; ``model_version`` is an optional top-level key naming the model that
    ranked (the ai-ranker does not send it today; the event records it when present)."""

    uuid: str
    ranked_providers: tuple[RankedProvider, ...]
    model_version: str | None = None


class DatasetRow(ProviderRow, frozen=True, kw_only=True):
    """One ``airanker-dataset`` v1.1.0 row: a (deployment, site) outcome joined with the
    site's ``providers-to-rank`` row (Kafka key :func:`dataset_key`)."""

    msg_version: str
    uuid: str
    template_name: str
    user_group: str
    submission_time: str
    status: str
    status_reason: str | None
    n_failures: int
    tot_failure_time_s: float
    completion_time_s: float


_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def encode_message(message: ProvidersToRank | DatasetRow) -> bytes:
    """JSON with sorted keys, as the INFN components write it."""
    return _ENCODER.encode(message)


# --- providers-to-rank -------------------------------------------------------------------


def provider_row(candidate: Candidate) -> ProviderRow:
    """The ``providers-to-rank`` row of a candidate, from its features at decision time."""
    f = candidate.features

    def limit(resource: str, divisor: float = 1.0) -> float:
        use = f.resource(resource)
        if use is None or use.limit is None or use.limit < 0:
            return -1.0
        return use.limit / divisor

    def usage(resource: str, divisor: float = 1.0) -> float:
        use = f.resource(resource)
        return (use.usage or 0) / divisor if use is not None else 0.0

    def needed(resource: str) -> float:
        use = f.resource(resource)
        return float(use.needed) if use is not None else 0.0

    return ProviderRow(
        provider_name=candidate.ranker_name or candidate.site.provider_name,
        region_name=candidate.site.region or "",
        vcpus_requ=float(sum(c.vcpus * c.instances for c in f.flavours)),
        ram_gb_requ=sum(c.ram_mib * c.instances for c in f.flavours) / 1024,
        gpus_requ=float(sum(c.gpus * c.instances for c in f.flavours)),
        floating_ips_requ=needed("public_ips"),
        n_instances_requ=float(sum(c.instances for c in f.flavours)),
        exact_flavors=float(sum(c.instances for c in f.flavours if c.exact)),
        storage_gb_requ=needed("gigabytes"),
        n_volumes_requ=needed("volumes"),
        vcpus_quota=limit("cores"),
        vcpus_usage=usage("cores"),
        ram_gb_quota=limit("ram_mib", 1024),
        ram_gb_usage=usage("ram_mib", 1024),
        n_instances_quota=limit("instances"),
        n_instances_usage=usage("instances"),
        floating_ips_quota=limit("public_ips"),
        floating_ips_usage=usage("public_ips"),
        storage_gb_quota=limit("gigabytes"),
        storage_gb_usage=usage("gigabytes"),
        n_volumes_quota=limit("volumes"),
        n_volumes_usage=usage("volumes"),
        overbooking_cpu=float(f.overbooking_cpu),
        overbooking_ram=float(f.overbooking_ram),
        bandwidth_in=float(f.bandwidth_in),
        bandwidth_out=float(f.bandwidth_out),
        test_failure_perc_30d=float(f.test_failure_perc_30d),
        test_failure_perc_7d=float(f.test_failure_perc_7d),
        test_failure_perc_1d=float(f.test_failure_perc_1d),
    )


def to_providers_to_rank(result: SelectionResult) -> ProvidersToRank:
    """The request for the external ranker: every candidate, in built-in order.

    One row per ranker key ``(provider_name, region_name)``: when a group reaches a region
    through two projects, the ranker sees the first (best) one, as it keys by that pair.
    """
    request = result.request
    submitted = request.submitted_at or result.decided_at
    rows: list[ProviderRow] = []
    keys: set[tuple[str, str]] = set()
    for candidate in result.candidates:
        row = provider_row(candidate)
        if (row.provider_name, row.region_name) not in keys:
            keys.add((row.provider_name, row.region_name))
            rows.append(row)
    return ProvidersToRank(
        msg_version=MSG_VERSION,
        uuid=request.deployment_id,
        template_name=request.template_name,
        user_group=request.user_group,
        submission_time=_utc(submitted).strftime(SUBMISSION_TIME_FORMAT),
        providers=tuple(rows),
    )


def parse_providers_to_rank(data: bytes | str | Mapping[str, Any]) -> ProvidersToRank:
    """Strict decode of a ``providers-to-rank`` message (unknown keys are errors, as in the
    ai-ranker's own check)."""
    try:
        if isinstance(data, bytes | str):
            raw = msgspec.json.decode(data)
        else:
            raw = dict(data)
        if not isinstance(raw, dict):
            raise InvalidRankerAnswer("providers-to-rank: not a JSON object")
        if raw.get("msg_version") != MSG_VERSION:
            raise InvalidRankerAnswer(
                f"providers-to-rank: msg_version {raw.get('msg_version')!r} is not {MSG_VERSION}"
            )
        allowed = set(ProviderRow.__struct_fields__)
        for i, row in enumerate(raw.get("providers") or []):
            unknown = set(row) - allowed if isinstance(row, dict) else set()
            if unknown:
                raise InvalidRankerAnswer(
                    f"providers-to-rank: providers[{i}] has unknown keys {sorted(unknown)}"
                )
        return msgspec.convert(raw, ProvidersToRank, strict=False)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRankerAnswer(f"providers-to-rank: {exc}") from None


# --- ranked_providers ----------------------------------------------------------------------

_VERDICT_FIELDS = {
    "provider_name",
    "region_name",
    "classification",
    "regression",
    "resource_exactness",
}


def parse_ranked_providers(data: bytes | str | Mapping[str, Any]) -> RankedProviders:
    """A ``ranked_providers`` answer; raises :class:`InvalidRankerAnswer` when malformed."""
    try:
        raw = msgspec.json.decode(data) if isinstance(data, bytes | str) else dict(data)
    except msgspec.DecodeError as exc:
        raise InvalidRankerAnswer(f"ranked_providers: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidRankerAnswer("ranked_providers: not a JSON object")
    uuid = raw.get("uuid")
    rows = raw.get("ranked_providers")
    if not isinstance(uuid, str) or not uuid:
        raise InvalidRankerAnswer("ranked_providers: uuid is missing")
    if not isinstance(rows, list):
        raise InvalidRankerAnswer("ranked_providers: ranked_providers must be a list")
    model_version = raw.get("model_version")
    if model_version is not None and not isinstance(model_version, str):
        raise InvalidRankerAnswer("ranked_providers: model_version must be a string")
    parsed: list[RankedProvider] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidRankerAnswer(f"ranked_providers[{i}]: not an object")
        try:
            verdict = msgspec.convert(
                {k: v for k, v in row.items() if k in _VERDICT_FIELDS}, RankedProvider
            )
        except msgspec.ValidationError as exc:
            raise InvalidRankerAnswer(f"ranked_providers[{i}]: {exc}") from None
        extra = {k: v for k, v in row.items() if k not in _VERDICT_FIELDS}
        parsed.append(msgspec.structs.replace(verdict, extra=extra))
    return RankedProviders(
        uuid=uuid, ranked_providers=tuple(parsed), model_version=model_version
    )


def encode_ranked_providers(answer: RankedProviders) -> bytes:
    """The answer as the ai-ranker writes it (verdict and echoed row in one object)."""
    rows = []
    for row in answer.ranked_providers:
        fields = {
            **row.extra,
            "provider_name": row.provider_name,
            "region_name": row.region_name,
            "classification": row.classification,
            "regression": row.regression,
        }
        if row.resource_exactness is not None:
            fields["resource_exactness"] = row.resource_exactness
        rows.append(fields)
    message: dict[str, Any] = {"uuid": answer.uuid, "ranked_providers": rows}
    if answer.model_version is not None:
        message["model_version"] = answer.model_version
    return _ENCODER.encode(message)


def apply_ranker_answer(
    result: SelectionResult, answer: RankedProviders, *, model_version: str | None = None
) -> SelectionResult:
    """The selection re-ranked by the external ranker.

    Candidates take the answer's order and score (``classification + regression``); the
    user's preferred site stays first; candidates the answer leaves out (it may filter by a
    threshold) follow in built-in order; rows for unknown sites are ignored. An answer for
    another deployment, or one that names none of the candidates, raises
    :class:`InvalidRankerAnswer` (the caller then uses :func:`ranking_fallback`).
    """
    if answer.uuid != result.request.deployment_id:
        raise InvalidRankerAnswer(
            f"ranked_providers answers {answer.uuid}, not {result.request.deployment_id}"
        )
    position: dict[tuple[str, str], tuple[int, RankedProvider]] = {}
    for i, row in enumerate(answer.ranked_providers):
        position.setdefault((row.provider_name.casefold(), row.region_name.casefold()), (i, row))
    ranked: list[tuple[int, int, Candidate]] = []
    matched = 0
    for built_in, candidate in enumerate(result.candidates):
        key = (
            (candidate.ranker_name or candidate.site.provider_name).casefold(),
            (candidate.site.region or "").casefold(),
        )
        found = position.get(key)
        if found is None:
            ranked.append((len(position) + built_in, built_in, candidate))
            continue
        matched += 1
        index, row = found
        explanation = (
            f"{RANKING_EXTERNAL} rank {index + 1}: classification {row.classification:.3f} "
            f"+ regression {row.regression:.3f}"
            + (
                f", resource exactness {row.resource_exactness:.2f}"
                if row.resource_exactness is not None
                else ""
            )
            + f" (built-in: {candidate.explanation})"
        )
        ranked.append(
            (
                index,
                built_in,
                msgspec.structs.replace(
                    candidate, score=round(row.score, 6), explanation=explanation
                ),
            )
        )
    if result.candidates and not matched:
        raise InvalidRankerAnswer("ranked_providers names none of the candidates")
    ordered = sorted(ranked, key=lambda t: (not t[2].preferred, t[0], t[1]))
    return msgspec.structs.replace(
        result,
        ranking_method=RANKING_EXTERNAL,
        model_version=model_version,
        candidates=tuple(c for _, _, c in ordered),
    )


def ranking_fallback(result: SelectionResult, reason: str) -> SelectionResult:
    """The built-in ranking, marked as used because the external ranker failed (``reason``:
    e.g. "no answer within 5 s")."""
    return msgspec.structs.replace(result, ranking_method=RANKING_FALLBACK, ranking_note=reason)


# --- airanker-dataset ----------------------------------------------------------------------


def dataset_key(row: DatasetRow) -> str:
    """The Kafka key the dataset-collector uses: ``<provider>_<region>_<uuid>``, lower case."""
    return f"{row.provider_name}_{row.region_name}_{row.uuid}".lower()


class _SiteRun:
    """Consecutive attempts of one operation on one site."""

    def __init__(self, site_key: tuple[str, str | None], started: datetime) -> None:
        self.site_key = site_key
        self.first_started = started
        self.last_started = started
        self.failures = 0
        self.failure_time_s = 0.0
        self.reason: str | None = None
        self.status: str | None = None
        self.completion_time_s = 0.0
        self.counted = False


def dataset_rows(
    result: SelectionResult, events: Sequence[DeploymentEvent], *, operation: int
) -> list[DatasetRow]:
    """Training rows for the create ``operation`` scheduled by ``result``, from the
    deployment's events (replacing paas-mon's log scraping, same semantics):

    one row per run of consecutive attempts on a site, ``CREATE_COMPLETE`` when the run ended
    in success (``completion_time_s`` from its first attempt to completion), else
    ``CREATE_FAILED`` with the last reason (the deployment's final reason when it failed for
    good), ``n_failures`` and ``tot_failure_time_s`` over the run's failed attempts. Cancelled
    attempts are not the site's fault and count for nothing; a run still going has no row;
    sites that were not candidates (no row to join) are skipped.
    """
    request_event = next(
        (e for e in events if isinstance(e, DeploymentRequested) and e.operation == 1), None
    )
    template_name = result.request.template_name or (
        request_event.template_identity.name if request_event is not None else ""
    )
    rows_by_site: dict[tuple[str, str | None], ProviderRow] = {}
    for candidate in result.candidates:
        rows_by_site.setdefault(
            (candidate.site.provider_id, candidate.site.region), provider_row(candidate)
        )
    runs: list[_SiteRun] = []
    attempt_sites: dict[int, tuple[str, str | None]] = {}
    for event in events:
        match event:
            case DeploymentAttemptStarted() if event.operation == operation:
                key = (event.site.provider_id, event.site.region)
                attempt_sites[event.attempt] = key
                if runs and runs[-1].site_key == key and runs[-1].status != "CREATE_COMPLETE":
                    runs[-1].last_started = event.occurred_at
                    runs[-1].status = None
                else:
                    runs.append(_SiteRun(key, event.occurred_at))
            case DeploymentAttemptFailed() if event.operation == operation:
                run = _run_of(runs, attempt_sites.get(event.attempt))
                if run is None:
                    continue
                if event.cause == AttemptFailureCause.CANCELLED:
                    run.status = "CREATE_FAILED" if run.failures else None
                    continue
                run.failures += 1
                run.failure_time_s += (event.occurred_at - run.last_started).total_seconds()
                run.reason = event.reason
                run.status = "CREATE_FAILED"
                run.counted = True
            case DeploymentCompleted() if (
                event.operation == operation and event.kind == OperationKind.CREATE
            ):
                run = runs[-1] if runs else None
                if run is None:
                    continue
                run.status = "CREATE_COMPLETE"
                run.completion_time_s = (event.occurred_at - run.first_started).total_seconds()
                run.counted = True
            case DeploymentFailed() if (
                event.operation == operation and event.kind == OperationKind.CREATE
            ):
                if runs and runs[-1].status == "CREATE_FAILED":
                    runs[-1].reason = event.reason
    rows: list[DatasetRow] = []
    for run in runs:
        row = rows_by_site.get(run.site_key)
        if row is None or run.status is None or not run.counted:
            continue
        rows.append(
            DatasetRow(
                msg_version=MSG_VERSION,
                uuid=result.request.deployment_id,
                template_name=template_name,
                user_group=result.request.user_group,
                submission_time=_utc(run.last_started).strftime(DATASET_TIME_FORMAT),
                status=run.status,
                status_reason=run.reason if run.status == "CREATE_FAILED" else None,
                n_failures=run.failures,
                tot_failure_time_s=run.failure_time_s,
                completion_time_s=run.completion_time_s,
                **msgspec.structs.asdict(row),
            )
        )
    return rows


def recorded_selection(
    events: Sequence[DeploymentEvent], *, operation: int
) -> SelectionResult | None:
    """The selection that ``deployment.scheduled`` recorded for ``operation``, rebuilt from a
    deployment's events (``None`` before it is scheduled). Candidates recorded without
    features (events older than the features field) are left out: they have no dataset row.
    """
    requested = next((e for e in events if isinstance(e, DeploymentRequested)), None)
    scheduled = next(
        (e for e in reversed(events)
         if isinstance(e, DeploymentScheduled) and e.operation == operation),
        None,
    )
    if requested is None or scheduled is None:
        return None
    candidates = []
    for ranked in scheduled.candidates:
        if not ranked.features:
            continue
        try:
            candidates.append(candidate_of(ranked))
        except msgspec.ValidationError:
            continue
    return SelectionResult(
        request=SelectionRequest(
            deployment_id=requested.deployment_id,
            user_group=requested.user_group or "",
            issuer=requested.owner.issuer,
            requested=requested.requested_resources,
            template_name=requested.template_identity.name,
            template_type=requested.template_identity.type,
            pinned_site=requested.preferred_site,
            submitted_at=requested.occurred_at,
        ),
        decided_at=scheduled.occurred_at,
        ranking_method=scheduled.ranking_method,
        candidates=tuple(candidates),
        rejected=(),
        model_version=scheduled.model_version,
        ranking_note=scheduled.ranking_note,
    )


def _run_of(runs: Iterable[_SiteRun], key: tuple[str, str | None] | None) -> _SiteRun | None:
    found = None
    for run in runs:
        if run.site_key == key:
            found = run
    return found


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment
