"""Authorization of the provider endpoints.

Authentication is the legacy guard's (``api.legacy.security.authenticated``): the same bearer
tokens, issuers and scopes (``openid profile``); the admin endpoints (``opt={"admin": True}``)
need a member of the admin group of the token's issuer (403 otherwise). The mutation scopes
of the legacy deployment endpoints are not required: ingestion is an operator's (or a
script's) job, not a long-running workflow that keeps a refresh token.

Group reads: a user group's sites are visible to its members (the token's ``groups`` /
``wlcg.groups`` claims) and to admins. Group names are per issuer, so the sites are those of
SLAs of the caller's issuer. A group the caller is not a member of answers 404, exactly as an
unknown one does, so that group names do not leak.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.di import NamedDependency, Provide

from api.auth import Principal
from api.errors import ApiError
from api.legacy import security
from api.providers.ports import ProvidersApi

PROVIDERS = "providers"

Providers: TypeAlias = NamedDependency[ProvidersApi]
Caller = security.Caller
authenticated = security.authenticated


def provide_providers(request: Request[Any, Any, Any]) -> ProvidersApi:
    providers: ProvidersApi = request.app.state[PROVIDERS]
    return providers


DEPENDENCIES = {
    "providers": Provide(provide_providers, sync_to_thread=False),
    "principal": security.DEPENDENCIES["principal"],
}


def check_group(principal: Principal, group: str) -> None:
    """404 unless the caller is a member of ``group`` (or an admin)."""
    if principal.is_admin or group.removeprefix("/") in principal.groups:
        return
    raise ApiError(404, f"The user group {group} doesn't exist or you are not a member of it")
