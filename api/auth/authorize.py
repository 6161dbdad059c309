"""Per-resource authorization (who may see / change a deployment or its resources).

How the API layer must map decisions to HTTP (legacy error shape `{code,title,message}`):

- **Not readable -> 404**, with exactly the message used for an id that does not exist
  (e.g. `The deployment <id> doesn't exist`). Never 403: a 403 would tell the caller the
  id exists. This also applies to actions: check `read` first; if it is denied answer 404.
- Readable but the action is denied -> 403
  `Only the owner of the deployment can perform this operation`.
- Scopes (`require_scopes`) -> 403 with `InsufficientScopeError.message`; check them
  right after authentication, before loading the resource.
- Collections: filter rows with the same rule as `can_read` (as a SQL predicate):
  owner == me, OR (I am admin AND owner issuer == my issuer), OR (group visibility on AND
  owner issuer == my issuer AND resource group in my groups).

Rules (fixing legacy weakness 1: reads are no longer open to every user of the issuer):
- read: the owner; an admin of the owner's issuer; with `group_visibility`, members of the
  resource's user group who come from the owner's issuer (group names are per issuer).
- act (update, delete, reset, log, extrainfo, resource actions): the owner, or an admin of
  the owner's issuer (legacy L3). Group members never act.
- A resource without owner (legacy rows) is visible to and actionable by admins only.

When `AuthSettings.opa_url` is set, `OpaAuthorizer` is the decision point instead of the
rules above; it fails closed.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

from api.auth.errors import InsufficientScopeError
from api.auth.principal import Principal
from api.auth.settings import AuthSettings

__all__ = [
    "READ",
    "Authorizer",
    "OpaAuthorizer",
    "RuleAuthorizer",
    "build_authorizer",
    "can_act",
    "can_read",
    "require_scopes",
]

logger = logging.getLogger(__name__)

# The action name for reads; any other action name (e.g. "update", "delete", "reset",
# "log", "extrainfo", "resource.start") is an act for the built-in rules.
READ = "read"


def _is_owner(principal: Principal, owner_issuer: str | None, owner_subject: str | None) -> bool:
    return (
        owner_issuer is not None
        and owner_subject is not None
        and principal.issuer == owner_issuer
        and principal.subject == owner_subject
    )


def _is_admin_for(principal: Principal, owner_issuer: str | None) -> bool:
    if not principal.is_admin:
        return False
    # Unowned legacy rows: any admin; owned rows: admins of the owner's issuer only.
    return owner_issuer is None or principal.issuer == owner_issuer


def can_read(
    principal: Principal,
    resource_owner_issuer: str | None,
    resource_owner_subject: str | None,
    resource_group: str | None,
    *,
    group_visibility: bool,
) -> bool:
    """May `principal` see this resource? False must be answered with 404, never 403."""
    if _is_owner(principal, resource_owner_issuer, resource_owner_subject):
        return True
    if _is_admin_for(principal, resource_owner_issuer):
        return True
    if group_visibility and resource_group and resource_owner_issuer == principal.issuer:
        return resource_group.removeprefix("/") in principal.groups
    return False


def can_act(
    principal: Principal,
    resource_owner_issuer: str | None,
    resource_owner_subject: str | None,
    resource_group: str | None = None,
) -> bool:
    """May `principal` change this resource? `resource_group` is accepted for symmetry
    with `can_read` and ignored: group membership never grants actions. If this is False
    but `can_read` is True answer 403, otherwise 404."""
    del resource_group
    return _is_owner(principal, resource_owner_issuer, resource_owner_subject) or _is_admin_for(
        principal, resource_owner_issuer
    )


def require_scopes(principal: Principal, settings: AuthSettings, *, mutation: bool = False) -> None:
    """Legacy scope rules (403, not 401): every call needs all `required_scopes`;
    mutations additionally need one of `mutation_scopes`."""
    missing = [s for s in settings.required_scopes if s not in principal.scopes]
    if missing:
        raise InsufficientScopeError(settings.required_scopes)
    if mutation and settings.mutation_scopes:
        if not any(s in principal.scopes for s in settings.mutation_scopes):
            raise InsufficientScopeError(settings.mutation_scopes)


class Authorizer(Protocol):
    async def allowed(
        self,
        principal: Principal,
        action: str,
        *,
        owner_issuer: str | None,
        owner_subject: str | None,
        group: str | None,
    ) -> bool: ...

    async def aclose(self) -> None: ...


class RuleAuthorizer:
    """The built-in rules (`can_read` / `can_act`) behind the Authorizer interface."""

    def __init__(self, *, group_visibility: bool) -> None:
        self.group_visibility = group_visibility

    async def allowed(
        self,
        principal: Principal,
        action: str,
        *,
        owner_issuer: str | None,
        owner_subject: str | None,
        group: str | None,
    ) -> bool:
        if action == READ:
            return can_read(
                principal,
                owner_issuer,
                owner_subject,
                group,
                group_visibility=self.group_visibility,
            )
        return can_act(principal, owner_issuer, owner_subject, group)

    async def aclose(self) -> None:
        return None


class OpaAuthorizer:
    """Asks an Open Policy Agent: POST `url` with

        {"input": {"user": {"issuer", "subject", "groups": [...], "is_admin"},
                   "action": "...",
                   "resource": {"owner": {"issuer", "subject"} | null, "group": ... | null}}}

    `url` is an OPA data API URL. Allowed only when the answer is `{"result": true}`
    (a rule URL such as /v1/data/orchestrator/allow) or `{"result": {"allow": true}}`
    (a package URL such as /v1/data/orchestrator). Anything else, an undefined decision,
    a non-200 status, a timeout or an unreachable OPA is a denial (fail closed).
    """

    def __init__(
        self, url: str, *, timeout_s: float = 2.0, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def allowed(
        self,
        principal: Principal,
        action: str,
        *,
        owner_issuer: str | None,
        owner_subject: str | None,
        group: str | None,
    ) -> bool:
        owner = (
            {"issuer": owner_issuer, "subject": owner_subject}
            if owner_issuer is not None and owner_subject is not None
            else None
        )
        body = {
            "input": {
                "user": {
                    "issuer": principal.issuer,
                    "subject": principal.subject,
                    "groups": sorted(principal.groups),
                    "is_admin": principal.is_admin,
                },
                "action": action,
                "resource": {"owner": owner, "group": group},
            }
        }
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            logger.warning("OPA unreachable, denying: %s", type(exc).__name__)
            return False
        if response.status_code != 200:
            logger.warning("OPA answered HTTP %d, denying", response.status_code)
            return False
        try:
            decision: Any = response.json()
        except ValueError:
            logger.warning("OPA answered non-JSON, denying")
            return False
        result = decision.get("result") if isinstance(decision, dict) else None
        if isinstance(result, dict):
            result = result.get("allow")
        return result is True


def build_authorizer(
    settings: AuthSettings, *, http_client: httpx.AsyncClient | None = None
) -> Authorizer:
    """OPA when `opa_url` is configured, else the built-in rules."""
    if settings.opa_url:
        return OpaAuthorizer(
            settings.opa_url, timeout_s=settings.opa_timeout_s, http_client=http_client
        )
    return RuleAuthorizer(group_visibility=settings.group_visibility)
