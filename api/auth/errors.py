"""Authentication / authorization errors. Messages are safe to show: they never contain
the token or any part of it."""

from __future__ import annotations

__all__ = ["AuthenticationError", "InsufficientScopeError", "KeysUnavailableError"]


class AuthenticationError(Exception):
    """The request is not authenticated: HTTP 401 in the legacy error shape
    (`{"code":401,"title":"Unauthorized","message":...}` plus
    `WWW-Authenticate: Bearer realm="oauth", error="invalid_token", ...`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KeysUnavailableError(AuthenticationError):
    """The issuer's signing keys could not be obtained (issuer down, bad JWKS).
    Still a 401 for clients; separate so operators can alert on it."""


class InsufficientScopeError(Exception):
    """Authenticated, but the token lacks scopes: HTTP 403 in the legacy error shape.
    `message` reproduces the legacy text, e.g.
    `Insufficient scope for this resource, scope="offline_access fts:submit-transfer"`."""

    def __init__(self, required: tuple[str, ...]) -> None:
        self.required = required
        self.message = f'Insufficient scope for this resource, scope="{" ".join(required)}"'
        super().__init__(self.message)
