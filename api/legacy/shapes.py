"""The legacy JSON shapes (camelCase, nulls omitted, minute timestamps) and absolute links.

Field order follows the legacy server's Jackson output. Additive fields (precise RFC 3339
timestamps, template type and name, iaasType next to deploymentType) are optional and
come after the legacy ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request
from litestar.openapi import ResponseSpec

from api.legacy.ports import DeploymentView, LegacySettings, ResourceView

JSON_MEDIA_TYPE = "application/json;charset=UTF-8"
TEXT_MEDIA_TYPE = "text/plain;charset=UTF-8"


def legacy_time(value: datetime) -> str:
    """``yyyy-MM-dd'T'HH:mmZ`` in UTC, e.g. ``2025-02-20T10:15+0000`` (orchent slices [0:16])."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M+0000")


def precise_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2025-02-20T10:15:42.123456Z``."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def without_nulls(value: Any) -> Any:
    """The same JSON value with every ``null`` member or item dropped (clients crash on null)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value if v is not None]
    return value


class Link(msgspec.Struct, frozen=True):
    rel: str
    href: str


class CreatedBy(msgspec.Struct, frozen=True):
    issuer: str
    subject: str


class CloudProviderEndpointJson(msgspec.Struct, kw_only=True, omit_defaults=True):
    cpEndpoint: str | None = None
    region: str | None = None
    cpComputeServiceId: str | None = None
    vaultUri: str | None = None
    deploymentType: str | None = None
    # What the dashboard reads; the legacy server only had deploymentType (same value).
    iaasType: str | None = None


class DeploymentJson(msgspec.Struct, kw_only=True, omit_defaults=True):
    uuid: str
    creationTime: str
    updateTime: str
    physicalId: str | None = None
    status: str
    statusReason: str | None = None
    outputs: dict[str, Any]
    task: str
    callback: str | None = None
    userGroup: str | None = None
    cloudProviderName: str | None = None
    cloudProviderEndpoint: CloudProviderEndpointJson | None = None
    createdBy: CreatedBy | None = None
    links: list[Link]
    creationTimestamp: str | None = None
    updateTimestamp: str | None = None
    templateName: str | None = None
    templateType: str | None = None


class ResourceJson(msgspec.Struct, kw_only=True, omit_defaults=True):
    uuid: str
    creationTime: str
    updateTime: str
    physicalId: str | None = None
    state: str
    toscaNodeType: str
    toscaNodeName: str
    requiredBy: list[str]
    metadata: dict[str, str]
    links: list[Link]
    creationTimestamp: str | None = None
    updateTimestamp: str | None = None


class PageMeta(msgspec.Struct, frozen=True):
    size: int
    totalElements: int
    totalPages: int
    number: int


class DeploymentPage(msgspec.Struct):
    links: list[Link]
    content: list[DeploymentJson]
    page: PageMeta


class ResourcePage(msgspec.Struct):
    links: list[Link]
    content: list[ResourceJson]
    page: PageMeta


class ErrorBody(msgspec.Struct):
    """The legacy error body: HTTP status, its reason phrase, and what went wrong."""

    code: int
    title: str
    message: str


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI: these statuses answer the legacy error body (documented per operation)."""
    return {code: ResponseSpec(data_container=ErrorBody, generate_examples=False,
                               description=f"{HTTPStatus(code).phrase}: legacy error body")
            for code in codes}


READ_ERRORS = errors(400, 401, 403, 404)
WRITE_ERRORS = errors(400, 401, 403, 404, 409, 415, 503)


# ---------------------------------------------------------------- links


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[0].strip() or None


def _forwarded(header: str | None) -> dict[str, str]:
    """The first element of an RFC 7239 ``Forwarded`` header as a dict."""
    found: dict[str, str] = {}
    if not header:
        return found
    for pair in header.split(",")[0].split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep:
            found[name.strip().lower()] = value.strip().strip('"')
    return found


def base_url(request: Request[Any, Any, Any], settings: LegacySettings) -> str:
    """Scheme, host and path prefix clients reach this API under, without a trailing slash.

    Behind a proxy, ``Forwarded`` and ``X-Forwarded-Proto/Host/Port/Prefix`` say how the
    client addressed us (legacy Spring honoured them too), so every href is fetchable as is.
    """
    headers = request.headers
    scheme = request.url.scheme
    host = headers.get("host") or request.url.netloc
    prefix = ""
    if settings.trust_forwarded_headers:
        forwarded = _forwarded(headers.get("forwarded"))
        scheme = _first(headers.get("x-forwarded-proto")) or forwarded.get("proto") or scheme
        forwarded_host = _first(headers.get("x-forwarded-host")) or forwarded.get("host")
        if forwarded_host:
            host = forwarded_host
        port = _first(headers.get("x-forwarded-port"))
        if port and port.isdigit():
            bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            default = (scheme == "https" and port == "443") or (scheme == "http" and port == "80")
            host = bare if default else f"{bare}:{port}"
        prefix = (_first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
    scheme = scheme.lower() if scheme in ("http", "https", "HTTP", "HTTPS") else "http"
    return f"{scheme}://{host}{prefix}{settings.base_path}"


def query_string(params: Sequence[tuple[str, str]]) -> str:
    # Commas, @, : and / stay readable (sort=createdAt,desc; createdBy=sub@https://iss/).
    return "&".join(f"{quote(k, safe='')}={quote(v, safe=',@:/')}" for k, v in params)


def href(base: str, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
    query = query_string(params)
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def page_links(base: str, path: str, filters: Sequence[tuple[str, str]], *, page: int,
               size: int, sort: Sequence[str], total_pages: int) -> list[Link]:
    """Spring HATEOAS order and presence: first, prev, self, next, last.

    ``first``/``last`` only with more than one page, ``prev``/``next`` only when that page
    exists (clients page until ``next`` is absent). Every link keeps the filters.
    """

    def at(number: int) -> str:
        paging = [("page", str(number)), ("size", str(size))]
        paging += [("sort", s) for s in sort]
        return href(base, path, [*filters, *paging])

    links: list[Link] = []
    if total_pages > 1:
        links.append(Link("first", at(0)))
    if page > 0:
        links.append(Link("prev", at(min(page - 1, max(total_pages - 1, 0)))))
    links.append(Link("self", at(page)))
    if page + 1 < total_pages:
        links.append(Link("next", at(page + 1)))
    if total_pages > 1:
        links.append(Link("last", at(total_pages - 1)))
    return links


def page_meta(*, size: int, total: int, page: int) -> PageMeta:
    return PageMeta(size=size, totalElements=total,
                    totalPages=math.ceil(total / size) if size else 0, number=page)


# ---------------------------------------------------------------- objects


def _endpoint(view: DeploymentView) -> CloudProviderEndpointJson | None:
    raw = view.cloud_provider_endpoint
    if not raw:
        return None
    iaas = raw.get("iaas_type") or view.iaas_type
    return CloudProviderEndpointJson(
        cpEndpoint=raw.get("cp_endpoint") or None,
        region=raw.get("region") or view.region or None,
        cpComputeServiceId=raw.get("cp_compute_service_id") or None,
        vaultUri=raw.get("vault_uri") or None, deploymentType=iaas or None,
        iaasType=iaas or None)


def deployment_json(view: DeploymentView, base: str | None) -> DeploymentJson:
    """The legacy Deployment object; ``base`` None gives no links (callback bodies)."""
    links: list[Link] = []
    if base is not None:
        self_href = f"{base}/deployments/{quote(view.id, safe='')}"
        links = [Link("self", self_href), Link("resources", f"{self_href}/resources"),
                 Link("template", f"{self_href}/template")]
    created_by = (CreatedBy(view.owner_issuer, view.owner_subject)
                  if view.owner_issuer is not None and view.owner_subject is not None else None)
    return DeploymentJson(
        uuid=view.id,
        creationTime=legacy_time(view.created_at),
        updateTime=legacy_time(view.updated_at),
        physicalId=view.physical_id,
        status=view.status,
        statusReason=view.status_reason,
        outputs=without_nulls(view.outputs or {}),
        task=view.task,
        callback=view.callback,
        userGroup=view.user_group,
        cloudProviderName=view.provider_name,
        cloudProviderEndpoint=_endpoint(view),
        createdBy=created_by,
        links=links,
        creationTimestamp=precise_time(view.created_at),
        updateTimestamp=precise_time(view.updated_at),
        templateName=view.template_name,
        templateType=view.template_type,
    )


def resource_json(resource: ResourceView, base: str, metadata: dict[str, str]) -> ResourceJson:
    deployment_href = f"{base}/deployments/{quote(resource.deployment_id, safe='')}"
    return ResourceJson(
        uuid=resource.resource_id,
        creationTime=legacy_time(resource.created_at),
        updateTime=legacy_time(resource.updated_at),
        physicalId=resource.physical_id,
        state=resource.state,
        toscaNodeType=resource.node_type,
        toscaNodeName=resource.node_name,
        requiredBy=[],
        metadata=metadata,
        links=[Link("deployment", deployment_href),
               Link("self", f"{deployment_href}/resources/"
                            f"{quote(resource.resource_id, safe='')}")],
        creationTimestamp=precise_time(resource.created_at),
        updateTimestamp=precise_time(resource.updated_at),
    )
