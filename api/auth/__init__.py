"""Authentication (bearer JWTs from trusted OIDC issuers) and per-resource authorization.

Wiring: build one `Authenticator(settings)` (or call `configure(settings)` to use the
module-level `authenticate`) and one `build_authorizer(settings)` at startup; `aclose()`
both at shutdown. `AuthenticationError` -> 401, `InsufficientScopeError` -> 403, and read
denials -> 404 (see `api.auth.authorize`).
"""

from api.auth.authorize import (
    READ,
    Authorizer,
    OpaAuthorizer,
    RuleAuthorizer,
    build_authorizer,
    can_act,
    can_read,
    require_scopes,
)
from api.auth.errors import AuthenticationError, InsufficientScopeError, KeysUnavailableError
from api.auth.jwks import JwksCache
from api.auth.principal import Principal
from api.auth.settings import DEFAULT_ALGORITHMS, AuthSettings, TrustedIssuer
from api.auth.verify import Authenticator, authenticate, configure

__all__ = [
    "DEFAULT_ALGORITHMS",
    "READ",
    "AuthSettings",
    "AuthenticationError",
    "Authenticator",
    "Authorizer",
    "InsufficientScopeError",
    "JwksCache",
    "KeysUnavailableError",
    "OpaAuthorizer",
    "Principal",
    "RuleAuthorizer",
    "TrustedIssuer",
    "authenticate",
    "build_authorizer",
    "can_act",
    "can_read",
    "configure",
    "require_scopes",
]
