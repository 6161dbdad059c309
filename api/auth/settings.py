"""Authentication and authorization settings.

Loaded by the wiring (``orchestrator/``) with ``msgspec.convert(mapping, AuthSettings)``;
invalid values raise ``ValueError`` (``msgspec.ValidationError`` through ``convert``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

__all__ = [
    "ASYMMETRIC_SIGNATURE_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "AuthSettings",
    "TrustedIssuer",
]

# Everything we know how to verify. HS* (shared secret) and "none" are deliberately absent:
# with a public JWKS they are exactly the algorithm-confusion attacks (CVE-2024-33663).
ASYMMETRIC_SIGNATURE_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def check_key_source_url(url: str, what: str) -> None:
    # Keys fetched over plain HTTP can be swapped by anyone on the path, which is a full
    # authentication bypass; loopback is allowed for local development and tests.
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return
    raise ValueError(f"{what} must be an https URL (http only on loopback): {url!r}")


class TrustedIssuer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One OIDC issuer whose access tokens we accept."""

    # Compared byte for byte with the token's `iss` (trailing slash included, as legacy).
    issuer: str
    # When set, the token's `aud` must contain it (and `aud` becomes mandatory).
    audience: str | None = None
    # Members of this group (from the group claims) are admins for this issuer's users.
    # Legacy documented default; None means this issuer has no admins.
    admin_group: str | None = "orchestrator-admins"
    # Skip discovery and fetch keys from here.
    jwks_url: str | None = None

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        check_key_source_url(self.issuer, "issuer")
        if self.jwks_url is not None:
            check_key_source_url(self.jwks_url, "jwks_url")


class AuthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    issuers: tuple[TrustedIssuer, ...] = ()
    # Allow-list of JWS algorithms; only asymmetric ones are accepted.
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # Legacy: every call needs all of these scopes (else 403). Empty disables the check.
    required_scopes: tuple[str, ...] = ("openid", "profile")
    # Legacy: mutations (POST/PUT/PATCH/DELETE on deployments, resource actions) need at
    # least ONE of these (the server keeps a refresh token for the async workflow).
    # Empty disables the check.
    mutation_scopes: tuple[str, ...] = ("offline_access", "fts:submit-transfer")
    # Clock skew tolerated on exp / nbf / iat.
    leeway_s: int = 30
    # Keys are re-fetched after this age even without an unknown kid.
    jwks_cache_ttl_s: float = 900.0
    # At most one key fetch per issuer in this interval, whatever tokens arrive.
    jwks_min_refresh_interval_s: float = 30.0
    # Timeout for discovery / JWKS requests.
    http_timeout_s: float = 5.0
    # Larger Authorization values are rejected before any parsing.
    max_token_bytes: int = 16384
    # Claims read as group lists; a leading "/" is stripped (wlcg.groups "/cms" -> "cms").
    group_claims: tuple[str, ...] = ("groups", "wlcg.groups")
    # Opt-in: members of a resource's user group may read it (never act on it).
    group_visibility: bool = False
    # When set, this OPA decision URL (e.g. http://localhost:8181/v1/data/orchestrator/allow)
    # replaces the built-in per-resource rules.
    opa_url: str | None = None
    opa_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("algorithms must not be empty")
        unsupported = [a for a in self.algorithms if a not in ASYMMETRIC_SIGNATURE_ALGORITHMS]
        if unsupported:
            raise ValueError(
                f"unsupported or forbidden algorithms {unsupported}; allowed: "
                f"{sorted(ASYMMETRIC_SIGNATURE_ALGORITHMS)}"
            )
        names = [i.issuer for i in self.issuers]
        if len(set(names)) != len(names):
            raise ValueError("issuers must be unique")
        if self.leeway_s < 0 or self.leeway_s > 600:
            raise ValueError("leeway_s must be between 0 and 600")
        if self.jwks_min_refresh_interval_s < 0:
            raise ValueError("jwks_min_refresh_interval_s must not be negative")
        if self.jwks_cache_ttl_s < self.jwks_min_refresh_interval_s:
            raise ValueError("jwks_cache_ttl_s must be >= jwks_min_refresh_interval_s")
        if self.http_timeout_s <= 0 or self.opa_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_token_bytes < 256:
            raise ValueError("max_token_bytes is unreasonably small")
        if not self.group_claims:
            raise ValueError("group_claims must not be empty")

    def issuer(self, iss: str) -> TrustedIssuer | None:
        """The trusted issuer configuration for exactly this `iss`, if any."""
        for trusted in self.issuers:
            if trusted.issuer == iss:
                return trusted
        return None
