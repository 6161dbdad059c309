"""Authentication and authorization of the provider endpoints.

The same bearer tokens, issuers, scopes and admin groups as the legacy API (``api.auth``):
every call needs a valid token with the required scopes (``openid profile``); the admin
endpoints need a member of the admin group of the token's issuer (403 otherwise). The mutation
scopes of the legacy deployment endpoints are not required: ingestion is an operator's (or a
script's) job, not a long-running workflow that keeps a refresh token.

Group reads: a user group's sites are visible to its members (the token's ``groups`` /
``wlcg.groups`` claims) and to admins. Group names are per issuer, so the sites are those of
SLAs of the caller's issuer. A group the caller is not a member of answers 404, exactly as an
unknown one does, so that group names do not leak.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler

from api.auth import Principal, require_scopes
from api.errors import ApiError
from api.providers.ports import ProvidersApi

PROVIDERS = "providers"
PRINCIPAL = "provider_principal"

Providers: TypeAlias = NamedDependency[ProvidersApi]
Caller: TypeAlias = NamedDependency[Principal]


def providers_of(connection: ASGIConnection[Any, Any, Any, Any]) -> ProvidersApi:
    providers: ProvidersApi = connection.app.state[PROVIDERS]
    return providers


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any],
                        handler: BaseRouteHandler) -> None:
    """Guard: a valid bearer token with the required scopes (401 / 403 otherwise)."""
    providers = providers_of(connection)
    principal = await providers.authenticator.authenticate(
        connection.headers.get("authorization"))
    require_scopes(principal, providers.auth_settings)
    if handler.opt.get("admin") and not principal.is_admin:
        raise ApiError(403, "Only administrators can perform this operation")
    if handler.opt.get("body"):
        content_type = connection.headers.get("content-type")
        if content_type and content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise ApiError(415, f"Content type '{content_type}' not supported")
    connection.state[PRINCIPAL] = principal


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state[PRINCIPAL]
    return principal


def provide_providers(request: Request[Any, Any, Any]) -> ProvidersApi:
    return providers_of(request)


DEPENDENCIES = {
    "providers": Provide(provide_providers, sync_to_thread=False),
    "principal": Provide(provide_principal, sync_to_thread=False),
}


def check_group(principal: Principal, group: str) -> None:
    """404 unless the caller is a member of ``group`` (or an admin)."""
    if principal.is_admin or group.removeprefix("/") in principal.groups:
        return
    raise ApiError(404, f"The user group {group} doesn't exist or you are not a member of it")
