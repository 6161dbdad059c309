"""Authentication on every legacy endpoint, and per-deployment authorization.

A guard authenticates the bearer token (``api.auth``) before anything else of the request
is looked at (a bad body from an anonymous caller is a 401, as in Spring Security), checks
the legacy scopes (every call ``openid profile``; mutations, marked ``opt={"mutation":
True}``, one of ``offline_access fts:submit-transfer``), admin-only handlers (``opt={"admin":
True}``) a member of the admin group of the token's issuer, and leaves the Principal in the
request state for the ``principal`` dependency. The provider, statistics, audit and data
controllers use the same guard.

Per deployment: not readable -> 404 with the not-found message (ids do not leak);
readable but not allowed to act -> 403 with the legacy owner message.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

from api.auth import READ, Principal, require_scopes
from api.errors import ApiError
from api.legacy.ports import DeploymentView, LegacyApi
from domain.deployments import DeploymentNotFound, NotPermitted

Legacy: TypeAlias = NamedDependency[LegacyApi]
"""Handler parameter ``legacy``: everything the legacy controllers use."""
Caller: TypeAlias = NamedDependency[Principal]
"""Handler parameter ``principal``: the authenticated caller."""
PathId: TypeAlias = FromPath[str]
AnyRequest: TypeAlias = Request[Any, Any, Any]

PRINCIPAL = "principal"
LEGACY = "legacy"
ADMINS_ONLY = "Only administrators can perform this operation"


def legacy_of(connection: ASGIConnection[Any, Any, Any, Any]) -> LegacyApi:
    legacy: LegacyApi = connection.app.state[LEGACY]
    return legacy


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any],
                        handler: BaseRouteHandler) -> None:
    """Guard: a valid bearer token with the legacy scopes (401 / 403 otherwise)."""
    legacy = legacy_of(connection)
    principal = await legacy.authenticator.authenticate(connection.headers.get("authorization"))
    require_scopes(principal, legacy.auth_settings, mutation=bool(handler.opt.get("mutation")))
    if handler.opt.get("admin") and not principal.is_admin:
        raise ApiError(403, ADMINS_ONLY)
    if handler.opt.get("body"):
        content_type = connection.headers.get("content-type")
        if content_type and not _is_json(content_type):
            raise ApiError(415, f"Content type '{content_type}' not supported")
    connection.state[PRINCIPAL] = principal


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json"))


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state[PRINCIPAL]
    return principal


def provide_legacy(request: Request[Any, Any, Any]) -> LegacyApi:
    return legacy_of(request)


DEPENDENCIES = {
    "legacy": Provide(provide_legacy, sync_to_thread=False),
    "principal": Provide(provide_principal, sync_to_thread=False),
}
"""The controllers' dependencies: the LegacyApi (from the app state) and the caller."""


def not_found(deployment_id: str) -> ApiError:
    return ApiError(404, DeploymentNotFound(deployment_id).message)


async def check_access(legacy: LegacyApi, principal: Principal, action: str, *,
                       owner_issuer: str | None, owner_subject: str | None, group: str | None,
                       hidden: ApiError, denied: str) -> None:
    """Raise ``hidden`` (a 404: ids do not leak) unless ``principal`` may read the owner's
    resource, a 403 with ``denied`` unless it may also do ``action``."""
    owner = {"owner_issuer": owner_issuer, "owner_subject": owner_subject, "group": group}
    if not await legacy.authorizer.allowed(principal, READ, **owner):
        raise hidden
    if action != READ and not await legacy.authorizer.allowed(principal, action, **owner):
        raise ApiError(403, denied)


async def actionable_deployment(legacy: LegacyApi, principal: Principal, deployment_id: str,
                                action: str = READ) -> DeploymentView:
    """The deployment if ``principal`` may do ``action`` on it: 404 if not visible, else 403."""
    view = await legacy.deployments.get(deployment_id)
    if view is None:
        raise not_found(deployment_id)
    await check_access(legacy, principal, action, owner_issuer=view.owner_issuer,
                       owner_subject=view.owner_subject, group=view.user_group,
                       hidden=not_found(deployment_id), denied=NotPermitted().message)
    return view


async def readable_deployment(legacy: LegacyApi, principal: Principal,
                              deployment_id: str) -> DeploymentView:
    """The deployment if ``principal`` may see it; 404 when unknown or not visible."""
    return await actionable_deployment(legacy, principal, deployment_id, READ)


def is_owner(principal: Principal, view: DeploymentView) -> bool:
    return (view.owner_issuer == principal.issuer and view.owner_subject == principal.subject)
