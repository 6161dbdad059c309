"""Site selection and the built-in ranking: pure, deterministic, explained.

Given a deployment request and the catalogue (provider states, usage, recent outcomes),
:func:`select_sites` computes the candidate sites, rejects each infeasible one with a reason
code and a message, and ranks the rest. A *site* is a provider region used through one of the
user group's projects (``Site(provider_id, provider_name, region, project)``).

Candidates: the group's SLAs (matched by group name), each SLA project, each region where
that project has quota limits (every region of the provider when it has none at all).

Rejections, first failing check wins, in this order:

``pinned_elsewhere``
    the user pinned another site (only the pinned site is evaluated);
``provider_not_active``
    the provider's operational status is not ``active``;
``unsupported_provider_type``
    the provider is not of the kind the deployment needs (OpenStack for VMs);
``identity_provider_not_trusted``
    the provider does not trust the request's issuer;
``not_entitled``
    the SLA is for the same group name under another issuer, or a pinned site the group
    has no SLA for;
``sla_not_yet_valid`` / ``sla_expired``
    the decision date is outside the SLA's dates;
``no_image``
    some requested operating system (or named image) has no image visible to the project;
``no_flavor``
    some compute node has no flavour visible to the project that fits it;
``quota_exhausted``
    the chosen flavours (and requested volumes and public IPs) exceed what is left of the
    project's quota, or a per-user limit.

Ranking (features in [0, 1], see :class:`RankingWeights`)::

    score = 0.3 * headroom + 0.2 * flavour_exactness + 0.4 * success_rate + 0.1 * priority
            - 0.2 * (the site's latest scan failed)

- ``headroom``: the smallest fraction of a constrained quota left after placing this request
  (``(limit - usage - needed) / limit`` over cores, RAM, instances, volumes, GB, public IPs
  that are limited and needed); 1 when all are unlimited, 0.5 when the site reports no quota;
- ``flavour_exactness``: share of instances whose flavour matches the request exactly;
- ``success_rate``: recent outcomes of this template type on this site, Laplace-smoothed
  ``(successes + 1) / (attempts + 2)`` (0.5 without history);
- ``priority``: the operator priority of the provider / 100 (default 0.5).

Data locality: when the request names ``data_sites`` (the sites close to a Rucio RSE that
already holds the deployment's input data, from :func:`data_sites_for`), a site admitted by one
of them gets ``+ 0.2 * data_local`` (``RankingWeights.data_locality``); without data sites the
term is absent and the score is the formula above.

Candidates are ordered by: the user's preferred site first (when feasible), then score
(descending), then ``(provider_id, region, project)``. Scores are rounded to 6 decimals so that
the order does not depend on float noise.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime

import msgspec

from domain.deployments.commands import RecordScheduling
from domain.deployments.values import (
    OsRequest,
    PreferredSite,
    RankedSite,
    RequestedResources,
    Site,
    SiteRejection,
)
from domain.identity import Actor

from .state import ProviderState, RegionCatalogue
from .usage import QuotaUsageState
from .values import (
    AliasSystem,
    Flavor,
    Image,
    ProviderStatus,
    ProviderType,
    QuotaKind,
    QuotaValues,
    ScanScope,
    ServiceType,
    Sla,
    visible_to,
)

RANKING_BUILTIN = "builtin-v1"
RANKING_EXTERNAL = "ai-ranker"
RANKING_FALLBACK = "builtin-v1-fallback"
"""``ranking_method`` values: the built-in ranking, the external ranker's, and the built-in
one used because the external ranker did not answer in time (or answered nonsense)."""


class RejectionReason(enum.StrEnum):
    PINNED_ELSEWHERE = "pinned_elsewhere"
    PROVIDER_NOT_ACTIVE = "provider_not_active"
    UNSUPPORTED_PROVIDER_TYPE = "unsupported_provider_type"
    IDENTITY_PROVIDER_NOT_TRUSTED = "identity_provider_not_trusted"
    NOT_ENTITLED = "not_entitled"
    SLA_NOT_YET_VALID = "sla_not_yet_valid"
    SLA_EXPIRED = "sla_expired"
    NO_IMAGE = "no_image"
    NO_FLAVOR = "no_flavor"
    QUOTA_EXHAUSTED = "quota_exhausted"


# --- inputs ----------------------------------------------------------------------------------


class ComputeNodeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One compute node of the template (sizes per instance), as the TOSCA layer extracts it.

    ``ram_mb`` and ``disk_gb`` are decimal (TOSCA: 1 GB = 1000 MB); flavours are in MiB/GiB.
    Comparisons accept a flavour of the same number of binary units as exact (the INFN
    convention "8 GB" = 8192 MiB) and never reject a flavour that is large enough.
    """

    node: str
    instances: int = 1
    vcpus: int | None = None
    ram_mb: float | None = None
    disk_gb: float | None = None
    gpus: int | None = None
    gpu_vendor: str | None = None
    gpu_model: str | None = None
    infiniband: bool = False
    instance_type: str | None = None
    os: OsRequest | None = None


class SelectionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a deployment asks for.

    ``pinned_site`` is a hard choice (the dashboard's scheduling-first site; the deployment
    aggregate stores it as ``preferred_site`` and refuses candidates outside it), while
    ``preferred_site`` only puts a feasible site first. Without ``nodes`` the node sizes are
    derived from the ``requested`` totals (one node group of ``vms`` equal instances).
    """

    deployment_id: str
    user_group: str
    issuer: str
    requested: RequestedResources
    nodes: tuple[ComputeNodeRequest, ...] = ()
    template_name: str = ""
    template_type: str | None = None
    provider_type: ProviderType = ProviderType.OPENSTACK
    preferred_site: PreferredSite | None = None
    pinned_site: PreferredSite | None = None
    submitted_at: datetime | None = None
    data_sites: tuple[PreferredSite, ...] = ()
    """Sites close to an RSE already holding the requested data (ranked higher)."""


class SuccessStats(msgspec.Struct, frozen=True, kw_only=True):
    """Recent attempts of a template type on a site (a projection of deployment events)."""

    provider_id: str
    region: str | None
    template_type: str | None
    attempts: int
    successes: int


class SiteHealth(msgspec.Struct, frozen=True, kw_only=True):
    """Test (Rally) failure percentages of a site; ``-1`` = unknown, as paas-mon reports."""

    provider_id: str
    region: str | None
    test_failure_perc_1d: float = -1.0
    test_failure_perc_7d: float = -1.0
    test_failure_perc_30d: float = -1.0


class RankingWeights(msgspec.Struct, frozen=True, kw_only=True):
    headroom: float = 0.3
    flavour_exactness: float = 0.2
    success_rate: float = 0.4
    priority: float = 0.1
    unreachable_penalty: float = 0.2
    data_locality: float = 0.2


# --- outputs ---------------------------------------------------------------------------------


class FlavourChoice(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    instances: int
    flavor_uuid: str
    flavor_name: str
    vcpus: int
    ram_mib: int
    disk_gib: int
    gpus: int
    exact: bool


class ImageChoice(msgspec.Struct, frozen=True, kw_only=True):
    os: OsRequest
    image_uuid: str
    image_name: str


class ResourceUse(msgspec.Struct, frozen=True, kw_only=True):
    """A quota'd resource at decision time: limit (``None`` unknown, -1 unlimited), latest
    usage (``None`` unknown), what this request needs, and the per-user limit if any."""

    resource: str
    needed: int
    limit: int | None = None
    usage: int | None = None
    per_user_limit: int | None = None

    def left(self) -> int | None:
        """What is left before placing the request; ``None`` when unlimited or unknown."""
        if self.limit is None or self.limit < 0:
            return None
        return self.limit - (self.usage or 0)


class SiteFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the ranking used, as seen at decision time (also the ranker's inputs)."""

    headroom: float
    flavour_exactness: float
    success_rate: float
    priority: float
    scan_healthy: bool = True
    recent_attempts: int = 0
    recent_successes: int = 0
    resources: tuple[ResourceUse, ...] = ()
    flavours: tuple[FlavourChoice, ...] = ()
    images: tuple[ImageChoice, ...] = ()
    overbooking_cpu: float = 1.0
    overbooking_ram: float = 1.0
    bandwidth_in: float = 10.0
    bandwidth_out: float = 10.0
    test_failure_perc_1d: float = -1.0
    test_failure_perc_7d: float = -1.0
    test_failure_perc_30d: float = -1.0
    data_local: bool | None = None
    """``None``: the request names no data sites; else whether this site is close to data."""

    def resource(self, name: str) -> ResourceUse | None:
        for use in self.resources:
            if use.resource == name:
                return use
        return None


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    site: Site
    sla_id: str
    score: float
    features: SiteFeatures
    explanation: str
    preferred: bool = False
    ranker_name: str = ""


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    site: Site
    reason: RejectionReason
    message: str
    sla_id: str | None = None


class SelectionResult(msgspec.Struct, frozen=True, kw_only=True):
    """Ranked candidates (best first) and rejected sites; ``failure`` says why no site is
    left (``None`` when there are candidates)."""

    request: SelectionRequest
    decided_at: datetime
    ranking_method: str
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]
    failure: str | None = None
    model_version: str | None = None
    ranking_note: str | None = None


def to_record_scheduling(
    result: SelectionResult, *, operation: int, actor: Actor
) -> RecordScheduling:
    """The deployment command recording this decision: every candidate with its score,
    features (as seen now), explanation and SLA, every rejection with its reason code and
    message, and how the ranking was made (method, model version, note)."""
    return RecordScheduling(
        deployment_id=result.request.deployment_id,
        actor=actor,
        operation=operation,
        candidates=tuple(ranked_site(c) for c in result.candidates),
        ranking_method=result.ranking_method,
        model_version=result.model_version,
        rejected=tuple(
            SiteRejection(site=r.site, reason=r.reason.value, message=r.message, sla_id=r.sla_id)
            for r in result.rejected
        ),
        ranking_note=result.ranking_note,
    )


def ranked_site(candidate: Candidate) -> RankedSite:
    """A candidate as the deployment event stores it (features as plain JSON)."""
    return RankedSite(
        site=candidate.site,
        score=candidate.score,
        # plain JSON (lists, not tuples): equal to what the event store gives back
        features=msgspec.json.decode(msgspec.json.encode(candidate.features)),
        explanation=candidate.explanation,
        sla_id=candidate.sla_id,
        ranker_name=candidate.ranker_name or None,
    )


def candidate_of(ranked: RankedSite, *, preferred: bool = False) -> Candidate:
    """The candidate a stored :class:`RankedSite` records (inverse of :func:`ranked_site`).

    Raises ``msgspec.ValidationError`` when the stored features are not a ``SiteFeatures``
    (an event recorded before features were stored has none).
    """
    return Candidate(
        site=ranked.site,
        sla_id=ranked.sla_id or "",
        score=ranked.score if ranked.score is not None else 0.0,
        features=msgspec.convert(ranked.features, SiteFeatures),
        explanation=ranked.explanation or "",
        preferred=preferred,
        ranker_name=ranked.ranker_name or "",
    )


# --- data locality ---------------------------------------------------------------------------


def parse_rse_sites(mapping: Mapping[str, str]) -> dict[str, PreferredSite]:
    """The RSE-to-site configuration ``{"RSE_NAME": "provider_id[/region]"}`` as sites.

    Raises ``ValueError`` naming the first entry that is not ``provider_id[/region]``.
    """
    sites: dict[str, PreferredSite] = {}
    for rse, where in mapping.items():
        if not isinstance(rse, str) or not rse or not isinstance(where, str):
            raise ValueError(f"RSE {rse!r}: expected a string 'provider_id[/region]'")
        provider_id, _, region = where.strip().partition("/")
        if not provider_id or "/" in region:
            raise ValueError(f"RSE {rse}: {where!r} is not 'provider_id[/region]'")
        sites[rse] = PreferredSite(provider_id=provider_id, region=region or None)
    return sites


def data_sites_for(
    rses: Iterable[str], rse_sites: Mapping[str, PreferredSite]
) -> tuple[PreferredSite, ...]:
    """The sites close to ``rses`` (the RSEs holding the data), in RSE name order; RSEs
    without a configured site are not near any site."""
    found: list[PreferredSite] = []
    for rse in sorted(set(rses)):
        site = rse_sites.get(rse)
        if site is not None and site not in found:
            found.append(site)
    return tuple(found)


# --- selection -------------------------------------------------------------------------------


class _NodeGroup(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    instances: int
    vcpus: int | None
    ram_mb: float | None
    disk_gb: float | None
    gpus: int | None
    gpu_vendor: str | None
    gpu_model: str | None
    infiniband: bool
    instance_type: str | None


def node_groups(request: SelectionRequest) -> tuple[tuple[_NodeGroup, ...], tuple[OsRequest, ...]]:
    """The compute node groups to place (instances > 0) and the distinct OS requests."""
    if request.nodes:
        groups = tuple(
            _NodeGroup(
                node=n.node,
                instances=n.instances,
                vcpus=n.vcpus,
                ram_mb=n.ram_mb,
                disk_gb=n.disk_gb,
                gpus=n.gpus,
                gpu_vendor=n.gpu_vendor,
                gpu_model=n.gpu_model,
                infiniband=n.infiniband,
                instance_type=n.instance_type,
            )
            for n in request.nodes
            if n.instances > 0
        )
        oses = [n.os for n in request.nodes if n.instances > 0 and n.os is not None]
    else:
        r = request.requested
        groups = ()
        if r.vms > 0:
            groups = (
                _NodeGroup(
                    node="vm",
                    instances=r.vms,
                    vcpus=math.ceil(r.vcpus / r.vms) if r.vcpus else None,
                    ram_mb=r.ram_mb / r.vms if r.ram_mb else None,
                    disk_gb=r.disk_gb / r.vms if r.disk_gb else None,
                    gpus=math.ceil(r.gpus / r.vms) if r.gpus else None,
                    gpu_vendor=None,
                    gpu_model=None,
                    infiniband=False,
                    instance_type=None,
                ),
            )
        oses = list(r.os)
    distinct: list[OsRequest] = []
    for os_request in oses:
        if os_request not in distinct and any(
            v is not None for v in msgspec.structs.astuple(os_request)
        ):
            distinct.append(os_request)
    return groups, tuple(distinct)


def select_sites(
    request: SelectionRequest,
    providers: Iterable[ProviderState],
    *,
    now: datetime,
    usage: Iterable[QuotaUsageState] = (),
    stats: Iterable[SuccessStats] = (),
    health: Iterable[SiteHealth] = (),
    weights: RankingWeights | None = None,
) -> SelectionResult:
    """Candidates, rejections and the built-in ranking for ``request`` (see module doc)."""
    context = _Context(
        request=request,
        now=now,
        usage={u.provider_id: u for u in usage},
        stats={(s.provider_id, s.region, s.template_type): s for s in stats},
        health={(h.provider_id, h.region): h for h in health},
        weights=weights or RankingWeights(),
    )
    groups, oses = node_groups(request)
    candidates: list[Candidate] = []
    rejected: list[Rejection] = []
    pinned_seen = False
    for state in sorted(providers, key=lambda s: s.provider_id):
        if not state.registered:
            continue
        for site, sla in _sites(state, request, now.date()):
            pin = request.pinned_site
            if pin is not None and not pin.admits(site):
                rejected.append(
                    Rejection(
                        site=site,
                        reason=RejectionReason.PINNED_ELSEWHERE,
                        message=f"The user pinned {_where(pin.provider_id, pin.region)}",
                        sla_id=sla.sla_id,
                    )
                )
                continue
            pinned_seen = True
            outcome = _evaluate(context, state, site, sla, groups, oses)
            if isinstance(outcome, Rejection):
                rejected.append(outcome)
            else:
                candidates.append(outcome)
    pin = request.pinned_site
    if pin is not None and not pinned_seen:
        known = {s.provider_id: s for s in providers}.get(pin.provider_id)
        rejected.append(
            Rejection(
                site=Site(
                    provider_id=pin.provider_id,
                    provider_name=known.name if known is not None else pin.provider_id,
                    region=pin.region,
                ),
                reason=RejectionReason.NOT_ENTITLED,
                message=f"The group {request.user_group} has no SLA on "
                f"{_where(pin.provider_id, pin.region)}",
            )
        )
    ordered = _order(candidates, request.preferred_site)
    return SelectionResult(
        request=request,
        decided_at=now,
        ranking_method=RANKING_BUILTIN,
        candidates=ordered,
        rejected=tuple(rejected),
        failure=None if ordered else failure_message(request, rejected),
    )


def _order(
    candidates: Iterable[Candidate], preferred: PreferredSite | None
) -> tuple[Candidate, ...]:
    marked = [
        msgspec.structs.replace(c, preferred=True)
        if preferred is not None and preferred.admits(c.site)
        else c
        for c in candidates
    ]
    return tuple(
        sorted(
            marked,
            key=lambda c: (
                not c.preferred,
                -c.score,
                c.site.provider_id,
                c.site.region or "",
                c.site.project or "",
            ),
        )
    )


def failure_message(request: SelectionRequest, rejected: Sequence[Rejection]) -> str:
    """Why no site can run ``request``, from its rejections (the deployment's failure)."""
    if request.pinned_site is not None:
        pin = request.pinned_site
        reasons = [
            f"{_where(r.site.provider_id, r.site.region)}: {r.message}"
            for r in rejected
            if r.reason != RejectionReason.PINNED_ELSEWHERE
        ]
        return (
            f"The chosen site {_where(pin.provider_id, pin.region)} cannot run this "
            f"deployment: " + "; ".join(reasons)
        )
    if not rejected:
        return f"The group {request.user_group} has no SLA on any site"
    counts: dict[str, int] = {}
    for r in rejected:
        counts[r.reason.value] = counts.get(r.reason.value, 0) + 1
    summary = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return f"No site can run this deployment ({len(rejected)} rejected: {summary})"


def _where(provider_id: str, region: str | None) -> str:
    return f"{provider_id}/{region}" if region else provider_id


def _sites(state: ProviderState, request: SelectionRequest, today: date) -> list[tuple[Site, Sla]]:
    """The group's sites on this provider, each with the SLA that grants it: when several
    do, one of the request's issuer first, then one valid today, then the longest valid."""

    def preference(sla: Sla) -> tuple[bool, bool, date, str]:
        valid = (sla.start_date is None or sla.start_date <= today) and (
            sla.end_date is None or today <= sla.end_date
        )
        return (sla.issuer == request.issuer, valid, sla.end_date or date.max, sla.sla_id)

    slas = sorted(
        (s for s in state.slas.values() if s.user_group == request.user_group),
        key=preference,
        reverse=True,
    )
    found: dict[tuple[str, str], tuple[Site, Sla]] = {}
    for sla in slas:
        for project_id in sla.projects:
            for region in state.regions_of_project.get(project_id) or sorted(state.regions):
                key = (region, project_id)
                if key not in found:
                    site = Site(
                        provider_id=state.provider_id,
                        provider_name=state.name,
                        region=region,
                        project=project_id,
                    )
                    found[key] = (site, sla)
    return [found[k] for k in sorted(found)]


class _Context(msgspec.Struct, frozen=True, kw_only=True):
    request: SelectionRequest
    now: datetime
    usage: Mapping[str, QuotaUsageState]
    stats: Mapping[tuple[str, str | None, str | None], SuccessStats]
    health: Mapping[tuple[str, str | None], SiteHealth]
    weights: RankingWeights


def _evaluate(
    context: _Context,
    state: ProviderState,
    site: Site,
    sla: Sla,
    groups: tuple[_NodeGroup, ...],
    oses: tuple[OsRequest, ...],
) -> Candidate | Rejection:
    request = context.request
    region = site.region or ""
    project = site.project or ""

    def reject(reason: RejectionReason, message: str) -> Rejection:
        return Rejection(site=site, reason=reason, message=message, sla_id=sla.sla_id)

    if state.status != ProviderStatus.ACTIVE:
        return reject(
            RejectionReason.PROVIDER_NOT_ACTIVE, f"{state.name} is in status {state.status}"
        )
    assert state.details is not None
    if state.details.type != request.provider_type:
        return reject(
            RejectionReason.UNSUPPORTED_PROVIDER_TYPE,
            f"{state.name} is a {state.details.type} provider, the deployment needs "
            f"{request.provider_type}",
        )
    if request.issuer not in state.identity_providers:
        return reject(
            RejectionReason.IDENTITY_PROVIDER_NOT_TRUSTED,
            f"{state.name} does not trust the identity provider {request.issuer}",
        )
    if sla.issuer != request.issuer:
        return reject(
            RejectionReason.NOT_ENTITLED,
            f"SLA {sla.sla_id} is for the group {sla.user_group} of {sla.issuer}",
        )
    today = context.now.date()
    if sla.start_date is not None and today < sla.start_date:
        return reject(
            RejectionReason.SLA_NOT_YET_VALID,
            f"SLA {sla.sla_id} starts on {sla.start_date.isoformat()}",
        )
    if sla.end_date is not None and today > sla.end_date:
        return reject(
            RejectionReason.SLA_EXPIRED, f"SLA {sla.sla_id} ended on {sla.end_date.isoformat()}"
        )

    images: list[ImageChoice] = []
    catalogue = state.by_region.get(region)
    for os_request in oses:
        image = _best_image(os_request, catalogue, project)
        if image is None:
            return reject(
                RejectionReason.NO_IMAGE,
                f"No image for {_describe_os(os_request)} in {region} for project {project}",
            )
        images.append(ImageChoice(os=os_request, image_uuid=image.uuid, image_name=image.name))

    flavours: list[FlavourChoice] = []
    for group in groups:
        flavor = _first_fitting(catalogue, group, project)
        if flavor is None:
            return reject(
                RejectionReason.NO_FLAVOR,
                f"No flavour fits {_describe_node(group)} in {region} for project {project}",
            )
        flavours.append(
            FlavourChoice(
                node=group.node,
                instances=group.instances,
                flavor_uuid=flavor.uuid,
                flavor_name=flavor.name,
                vcpus=flavor.vcpus,
                ram_mib=flavor.ram_mib,
                disk_gib=flavor.disk_gib,
                gpus=flavor.gpus,
                exact=_exact(group, flavor),
            )
        )

    resources = _resources(context, state, region, project, flavours)
    for use in resources:
        left = use.left()
        if left is not None and use.needed > left:
            return reject(
                RejectionReason.QUOTA_EXHAUSTED,
                f"{use.resource}: needs {use.needed}, {max(left, 0)} of {use.limit} left "
                f"for project {project} in {region}",
            )
        if use.per_user_limit is not None and 0 <= use.per_user_limit < use.needed:
            return reject(
                RejectionReason.QUOTA_EXHAUSTED,
                f"{use.resource}: needs {use.needed}, the per-user limit is {use.per_user_limit}",
            )
    return _rank(context, state, site, sla, flavours, images, resources)


_QUOTA_RESOURCES: tuple[tuple[str, ServiceType, str], ...] = (
    ("cores", ServiceType.COMPUTE, "cores"),
    ("ram_mib", ServiceType.COMPUTE, "ram_mib"),
    ("instances", ServiceType.COMPUTE, "instances"),
    ("public_ips", ServiceType.NETWORK, "public_ips"),
    ("volumes", ServiceType.BLOCK_STORAGE, "volumes"),
    ("gigabytes", ServiceType.BLOCK_STORAGE, "gigabytes"),
)


def _resources(
    context: _Context,
    state: ProviderState,
    region: str,
    project: str,
    flavours: list[FlavourChoice],
) -> tuple[ResourceUse, ...]:
    requested = context.request.requested
    needed = {
        "cores": sum(f.vcpus * f.instances for f in flavours),
        "ram_mib": sum(f.ram_mib * f.instances for f in flavours),
        "instances": sum(f.instances for f in flavours),
        "public_ips": requested.public_ips,
        "volumes": requested.volumes,
        "gigabytes": math.ceil(requested.volumes_gb),
    }
    usage_state = context.usage.get(state.provider_id)
    uses = []
    for resource, service_type, field in _QUOTA_RESOURCES:
        limit = _quota_value(state, region, project, service_type, QuotaKind.LIMIT, field)
        per_user = _quota_value(state, region, project, service_type, QuotaKind.PER_USER, field)
        used = None
        if usage_state is not None:
            sample = usage_state.samples.get((region, project, service_type))
            if sample is not None:
                used = getattr(sample.values, field)
        uses.append(
            ResourceUse(
                resource=resource,
                needed=needed[resource],
                limit=limit,
                usage=used,
                per_user_limit=per_user,
            )
        )
    return tuple(uses)


def _quota_value(
    state: ProviderState,
    region: str,
    project: str,
    service_type: ServiceType,
    kind: QuotaKind,
    field: str,
) -> int | None:
    record = state.quotas.get((region, project, service_type, kind))
    if record is None:
        return None
    value: int | None = getattr(record.values, field)
    return value


def _rank(
    context: _Context,
    state: ProviderState,
    site: Site,
    sla: Sla,
    flavours: list[FlavourChoice],
    images: list[ImageChoice],
    resources: tuple[ResourceUse, ...],
) -> Candidate:
    request = context.request
    weights = context.weights
    region = site.region or ""
    has_quota = any(use.limit is not None for use in resources)
    fractions = [
        (left - use.needed) / use.limit
        for use in resources
        if use.needed > 0
        and use.limit is not None
        and use.limit > 0
        and (left := use.left()) is not None
    ]
    if fractions:
        headroom = max(0.0, min(1.0, min(fractions)))
    else:
        headroom = 1.0 if has_quota else 0.5
    instances = sum(f.instances for f in flavours)
    exactness = sum(f.instances for f in flavours if f.exact) / instances if instances else 1.0
    stats = context.stats.get((state.provider_id, site.region, request.template_type))
    attempts = stats.attempts if stats is not None else 0
    successes = min(stats.successes, attempts) if stats is not None else 0
    success_rate = (successes + 1) / (attempts + 2)
    priority = state.priority / 100
    healthy = ScanScope(region=region, project_id=site.project or "") not in state.failing_scopes
    data_local = (
        any(near.admits(site) for near in request.data_sites) if request.data_sites else None
    )
    score = round(
        weights.headroom * headroom
        + weights.flavour_exactness * exactness
        + weights.success_rate * success_rate
        + weights.priority * priority
        - (0.0 if healthy else weights.unreachable_penalty)
        + (weights.data_locality if data_local else 0.0),
        6,
    )
    health = context.health.get((state.provider_id, site.region))
    region_info = state.regions.get(region)
    features = SiteFeatures(
        headroom=round(headroom, 6),
        flavour_exactness=round(exactness, 6),
        success_rate=round(success_rate, 6),
        priority=priority,
        scan_healthy=healthy,
        recent_attempts=attempts,
        recent_successes=successes,
        resources=resources,
        flavours=tuple(flavours),
        images=tuple(images),
        overbooking_cpu=region_info.overbooking_cpu if region_info else 1.0,
        overbooking_ram=region_info.overbooking_ram if region_info else 1.0,
        bandwidth_in=region_info.bandwidth_in if region_info else 10.0,
        bandwidth_out=region_info.bandwidth_out if region_info else 10.0,
        test_failure_perc_1d=health.test_failure_perc_1d if health else -1.0,
        test_failure_perc_7d=health.test_failure_perc_7d if health else -1.0,
        test_failure_perc_30d=health.test_failure_perc_30d if health else -1.0,
        data_local=data_local,
    )
    explanation = (
        f"score {score:.3f} = {weights.headroom:g} x headroom {headroom:.2f}"
        + ("" if fractions else " (no limited quota)" if has_quota else " (no quota data)")
        + f" + {weights.flavour_exactness:g} x flavour exactness {exactness:.2f}"
        + f" + {weights.success_rate:g} x success rate {success_rate:.2f}"
        + f" ({successes}/{attempts} recent)"
        + f" + {weights.priority:g} x priority {priority:.2f}"
        + ("" if healthy else f" - {weights.unreachable_penalty:g} (latest scan failed)")
        + (f" + {weights.data_locality:g} (close to the data)" if data_local else "")
    )
    return Candidate(
        site=site,
        sla_id=sla.sla_id,
        score=score,
        features=features,
        explanation=explanation,
        ranker_name=state.alias(AliasSystem.RANKER, site.region),
    )


# --- matching --------------------------------------------------------------------------------

_MIB_IN_MB = 1.048576
_GIB_IN_GB = 1.073741824


def _first_fitting(
    catalogue: RegionCatalogue | None, group: _NodeGroup, project: str
) -> Flavor | None:
    """The first flavour, in the catalogue's order, visible to ``project`` that fits.

    The flavours are sorted by (gpus, vcpus, ...): within each GPU count, those with fewer
    vCPUs than needed cannot fit and are skipped by bisection (same answer as a linear scan).
    """
    if catalogue is None:
        return None
    flavors = catalogue.flavors
    if group.instance_type is not None or not group.vcpus:
        return next((f for f in flavors if visible_to(f, project) and _fits(group, f)), None)
    start, count = 0, len(flavors)
    while start < count:
        end = bisect.bisect_right(flavors, flavors[start].gpus, lo=start, key=_gpus_of)
        first = bisect.bisect_left(flavors, group.vcpus, lo=start, hi=end, key=_vcpus_of)
        for flavor in flavors[first:end]:
            if visible_to(flavor, project) and _fits(group, flavor):
                return flavor
        start = end
    return None


def _gpus_of(flavor: Flavor) -> int:
    return flavor.gpus


def _vcpus_of(flavor: Flavor) -> int:
    return flavor.vcpus


def _fits(group: _NodeGroup, flavor: Flavor) -> bool:
    if group.instance_type is not None:
        return flavor.name.casefold() == group.instance_type.casefold()
    if group.vcpus is not None and flavor.vcpus < group.vcpus:
        return False
    if group.ram_mb is not None and flavor.ram_mib * _MIB_IN_MB + 0.5 < group.ram_mb:
        return False
    if group.disk_gb is not None and flavor.disk_gib * _GIB_IN_GB + 0.005 < group.disk_gb:
        return False
    wanted_gpus = group.gpus or 0
    if flavor.gpus < wanted_gpus:
        return False
    if wanted_gpus > 0:
        if group.gpu_vendor and (flavor.gpu_vendor or "").casefold() != group.gpu_vendor.casefold():
            return False
        if group.gpu_model and (flavor.gpu_model or "").casefold() != group.gpu_model.casefold():
            return False
    return not (group.infiniband and not flavor.infiniband)


def _exact(group: _NodeGroup, flavor: Flavor) -> bool:
    if group.instance_type is not None:
        return True
    if group.vcpus is not None and flavor.vcpus != group.vcpus:
        return False
    if group.ram_mb is not None and not _same_size(flavor.ram_mib, group.ram_mb, _MIB_IN_MB):
        return False
    if group.disk_gb is not None and not _same_size(flavor.disk_gib, group.disk_gb, _GIB_IN_GB):
        return False
    return flavor.gpus == (group.gpus or 0)


def _same_size(binary_units: int, decimal_units: float, factor: float) -> bool:
    """``binary_units`` (MiB or GiB) is exactly the request, read either way: "8 GB" as
    8192 MiB (the INFN convention) or as 8000 MB, "4096 MB" as 4096 MiB."""
    if math.isclose(binary_units, decimal_units):
        return True
    if math.isclose(binary_units * factor, decimal_units, rel_tol=1e-6):
        return True
    if factor == _MIB_IN_MB:
        return math.isclose(binary_units / 1024, decimal_units / 1000)
    return False


def _best_image(
    os_request: OsRequest, catalogue: RegionCatalogue | None, project: str
) -> Image | None:
    if catalogue is None:
        return None
    # The (distribution, version) index already matched those two: only the other fields
    # (type, architecture) need checking; one pass keeps the newest (the hot loop of a
    # ranking over a large federation).
    indexed = os_request.image is None and bool(os_request.distribution and os_request.version)
    if indexed:
        key = (os_request.distribution.casefold(), os_request.version.casefold())  # type: ignore[union-attr]
        pool: Iterable[Image] = catalogue.images_by_os.get(key, ())
        check = os_request.type is not None or os_request.architecture is not None
    else:
        pool = catalogue.images
        check = True
    best: Image | None = None
    best_key: tuple[float, str, str] = (0.0, "", "")
    for image in pool:
        if not (image.is_shared or project in image.projects):  # visible_to, inlined
            continue
        if check and not _image_matches(os_request, image):
            continue
        # the newest image wins, as in the dashboard; then a stable key
        image_key = (
            image.created_at.timestamp() if image.created_at else 0.0,
            image.name,
            image.uuid,
        )
        if best is None or image_key > best_key:
            best, best_key = image, image_key
    return best


def _image_matches(os_request: OsRequest, image: Image) -> bool:
    if os_request.image:
        wanted = os_request.image.casefold()
        last = wanted.rstrip("/").rsplit("/", 1)[-1]
        return image.name.casefold() in (wanted, last) or image.uuid.casefold() in (wanted, last)
    pairs = (
        (os_request.distribution, image.os_distro),
        (os_request.version, image.os_version),
        (os_request.type, image.os_type),
        (os_request.architecture, image.architecture),
    )
    return all(
        wanted is None or (have is not None and have.casefold() == wanted.casefold())
        for wanted, have in pairs
    )


def _describe_os(os_request: OsRequest) -> str:
    if os_request.image:
        return f"image {os_request.image}"
    parts = [
        p
        for p in (
            os_request.type,
            os_request.distribution,
            os_request.version,
            os_request.architecture,
        )
        if p
    ]
    return " ".join(parts) or "any operating system"


def _describe_node(group: _NodeGroup) -> str:
    if group.instance_type:
        return f"{group.node} (flavour {group.instance_type})"
    parts = []
    if group.vcpus:
        parts.append(f"{group.vcpus} vCPUs")
    if group.ram_mb:
        parts.append(f"{group.ram_mb:g} MB RAM")
    if group.disk_gb:
        parts.append(f"{group.disk_gb:g} GB disk")
    if group.gpus:
        gpu = " ".join(p for p in (group.gpu_vendor, group.gpu_model) if p)
        parts.append(f"{group.gpus} GPU" + (f" {gpu}" if gpu else ""))
    if group.infiniband:
        parts.append("InfiniBand")
    return f"{group.node} ({', '.join(parts) or 'any size'})"


def quota_values_left(limit: QuotaValues, usage: QuotaValues | None) -> dict[str, int | None]:
    """Per field, what is left of ``limit`` after ``usage`` (``None``: unlimited/unknown);
    a helper for read models showing headroom."""
    left: dict[str, int | None] = {}
    for field in limit.__struct_fields__:
        value = getattr(limit, field)
        if value is None:
            continue
        used = getattr(usage, field) if usage is not None else None
        left[field] = None if value < 0 else value - (used or 0)
    return left
