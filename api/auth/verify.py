"""Bearer access-token authentication against the configured trusted OIDC issuers.

Pipeline (each failure is an AuthenticationError -> HTTP 401):
1. extract the token from `Authorization` (scheme `bearer` in any case; the legacy
   no-space form `Bearer<token>` is still accepted, with a deprecation warning);
2. parse the *unverified* JOSE header; reject any `alg` outside the asymmetric allow-list
   (this kills `none` and HS256-signed-with-the-public-key) and any `crit` header;
3. read the *unverified* `iss` only to pick the trusted issuer config (unknown -> reject);
4. get that issuer's key by `kid` (one rate-limited JWKS refresh on an unknown kid);
5. check that key type and header alg agree (RSA: RS*/PS*, EC: ES* with the matching
   curve, and the JWK's own `alg` if it has one) before python-jose sees the key, then
   verify the signature with `algorithms=[header alg]`;
6. validate exp / nbf / iat (numeric, with leeway), iss == configured issuer, aud when
   configured, sub present.

The token itself is never logged, stored or put into an error message.

python-jose 3.5.0 has no RSASSA-PSS; PS256/384/512 are verified by `_RsaPssKey`, a key
object handed to jose directly (no global registration in jose's algorithm table).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from jose import jws, jwt
from jose.backends.base import Key
from jose.backends.cryptography_backend import CryptographyECKey, CryptographyRSAKey
from jose.exceptions import ExpiredSignatureError, JWKError, JWSError, JWTClaimsError, JWTError

from api.auth.errors import AuthenticationError
from api.auth.jwks import JwksCache
from api.auth.principal import Principal
from api.auth.settings import AuthSettings, TrustedIssuer

__all__ = ["Authenticator", "authenticate", "configure"]

logger = logging.getLogger(__name__)

_NEEDS_AUTHENTICATION = "Full authentication is required to access this resource"
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")
_KEY_TYPE_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_MIN_RSA_BITS = 2048


class Authenticator:
    """Turns an `Authorization` header into a Principal. One per application (it owns the
    JWKS cache); create it at startup, `await aclose()` at shutdown."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        keys: JwksCache | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._keys = keys if keys is not None else JwksCache(settings, http_client=http_client)
        self._allowed_algorithms = frozenset(settings.algorithms)

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def authenticate(self, authorization_header: str | None) -> Principal:
        try:
            return await self._authenticate(authorization_header)
        except AuthenticationError as exc:
            logger.debug("authentication failed: %s", exc.message)
            raise

    async def _authenticate(self, authorization_header: str | None) -> Principal:
        token = _bearer_token(authorization_header, self.settings.max_token_bytes)
        header, unverified_claims = _split_unverified(token)

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed_algorithms:
            raise AuthenticationError(
                f"Invalid access token: signature algorithm {_printable(alg)} is not allowed"
            )
        if "crit" in header:
            raise AuthenticationError("Invalid access token: unsupported critical header")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("Invalid access token: malformed kid header")
        if not token.rsplit(".", 1)[1]:
            raise AuthenticationError("Invalid access token: missing signature")

        iss = unverified_claims.get("iss")
        if not isinstance(iss, str):
            raise AuthenticationError("Invalid access token: missing iss claim")
        trusted = self.settings.issuer(iss)
        if trusted is None:
            raise AuthenticationError("Invalid access token: untrusted issuer")

        candidates = await self._keys.signing_keys(trusted, kid)
        payload, key = _verify_signature(token, alg, candidates)
        claims = _validated_claims(token, payload, key, alg, trusted, self.settings.leeway_s)
        return _principal(claims, trusted, self.settings)


# ---- module-level convenience for the API layer ------------------------------------------

_default: Authenticator | None = None


def configure(settings: AuthSettings, **kwargs: Any) -> Authenticator:
    """Install the process-wide Authenticator used by `authenticate` (called by the wiring)."""
    global _default
    _default = Authenticator(settings, **kwargs)
    return _default


async def authenticate(authorization_header: str | None) -> Principal:
    """Verify the bearer token in `authorization_header`; raise AuthenticationError (401)."""
    if _default is None:
        raise RuntimeError("api.auth is not configured: call api.auth.configure(settings)")
    return await _default.authenticate(authorization_header)


# ---- steps -------------------------------------------------------------------------------


def _bearer_token(authorization_header: str | None, max_bytes: int) -> str:
    if authorization_header is None or not authorization_header.strip():
        raise AuthenticationError(_NEEDS_AUTHENTICATION)
    if len(authorization_header) > max_bytes:
        raise AuthenticationError("Invalid access token: too large")
    value = authorization_header.strip()
    if value[:6].lower() != "bearer":
        raise AuthenticationError(_NEEDS_AUTHENTICATION)
    rest = value[6:]
    token = rest.strip()
    if not token:
        raise AuthenticationError(_NEEDS_AUTHENTICATION)
    if not rest[0].isspace():
        # Legacy Spring accepted "Bearer<token>" and orpy relies on it.
        logger.warning("deprecated Authorization header form without a space after 'Bearer'")
    return token


def _split_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    segments = token.split(".")
    if len(segments) != 3 or not all(_SEGMENT.match(s) for s in segments):
        raise AuthenticationError("Invalid access token: not a signed JWT")
    header = _decode_json_segment(segments[0])
    claims = _decode_json_segment(segments[1])
    if header is None or claims is None:
        raise AuthenticationError("Invalid access token: not a signed JWT")
    return header, claims


def _decode_json_segment(segment: str) -> dict[str, Any] | None:
    if not segment:
        return None
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _verify_signature(token: str, alg: str, candidates: list[dict[str, Any]]) -> tuple[bytes, Key]:
    """Payload and the key that verified it, trying only keys usable with `alg`."""
    keys = []
    for jwk_dict in candidates:
        key = _verification_key(jwk_dict, alg)
        if key is not None:
            keys.append(key)
    if not keys:
        # Algorithm confusion guard: e.g. RS256 header with an EC key, ES384 with P-256.
        raise AuthenticationError(
            "Invalid access token: the signing key does not match the token algorithm"
        )
    for key in keys:
        try:
            return jws.verify(token, key, algorithms=[alg]), key
        except (JWSError, JWTError):
            continue
    raise AuthenticationError("Invalid access token: signature verification failed")


def _verification_key(jwk_dict: dict[str, Any], alg: str) -> Key | None:
    """A jose key for exactly this alg, or None when the JWK may not be used with it."""
    kty = jwk_dict.get("kty")
    if _KEY_TYPE_FOR_ALG_PREFIX.get(alg[:2]) != kty:
        return None
    if "alg" in jwk_dict and jwk_dict["alg"] != alg:
        return None
    if kty == "EC" and jwk_dict.get("crv") != _CURVE_FOR_ALG.get(alg):
        return None
    try:
        if alg.startswith("RS"):
            key: Key = CryptographyRSAKey(jwk_dict, alg)
        elif alg.startswith("PS"):
            key = _RsaPssKey(jwk_dict, alg)
        else:
            key = CryptographyECKey(jwk_dict, alg)
    except (JWKError, ValueError, TypeError):
        return None
    if kty == "RSA" and key.prepared_key.key_size < _MIN_RSA_BITS:
        return None
    return key


def _validated_claims(
    token: str, payload: bytes, key: Key, alg: str, trusted: TrustedIssuer, leeway_s: int
) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError:
        raise AuthenticationError("Invalid access token: malformed claims") from None
    if not isinstance(claims, dict):
        raise AuthenticationError("Invalid access token: malformed claims")

    # Presence and type first, so errors are precise (jose coerces numeric strings).
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _is_number(claims[name]):
            raise AuthenticationError(f"Invalid access token: {name} is not a number")
    if "exp" not in claims:
        raise AuthenticationError("Invalid access token: missing exp claim")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthenticationError("Invalid access token: missing sub claim")
    if trusted.audience is not None and "aud" not in claims:
        raise AuthenticationError("Invalid access token: missing aud claim")

    # jose re-checks the signature with the same vetted key (cheap) and the registered claims.
    try:
        jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=trusted.audience,
            issuer=trusted.issuer,
            options={
                "verify_aud": trusted.audience is not None,
                "verify_iss": True,
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iat": True,
                "verify_at_hash": False,
                "require_exp": True,
                "require_iss": True,
                "require_sub": True,
                "leeway": leeway_s,
            },
        )
    except ExpiredSignatureError:
        raise AuthenticationError("Access token expired") from None
    except JWTClaimsError as exc:
        raise AuthenticationError(f"Invalid access token: {exc}") from None
    except JWTError:
        raise AuthenticationError("Invalid access token: invalid claims") from None

    iat = claims.get("iat")
    if iat is not None and iat > time.time() + leeway_s:
        raise AuthenticationError("Invalid access token: issued in the future (iat)")
    return claims


def _principal(claims: dict[str, Any], trusted: TrustedIssuer, settings: AuthSettings) -> Principal:
    groups: set[str] = set()
    for claim in settings.group_claims:
        groups.update(_group_names(claims.get(claim)))
    scopes = frozenset(_scope_names(claims))
    admin_group = trusted.admin_group.removeprefix("/") if trusted.admin_group else None
    return Principal(
        issuer=trusted.issuer,
        subject=claims["sub"],
        name=_optional_str(claims.get("name")),
        email=_optional_str(claims.get("email")),
        preferred_username=_optional_str(claims.get("preferred_username")),
        groups=frozenset(groups),
        scopes=scopes,
        is_admin=admin_group is not None and admin_group in groups,
        has_offline_access="offline_access" in scopes,
    )


def _group_names(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    # wlcg.groups carry a leading "/" ("/cms", "/cms/prod"); plain `groups` do not.
    return [g.removeprefix("/") for g in value if isinstance(g, str) and g.removeprefix("/")]


def _scope_names(claims: dict[str, Any]) -> list[str]:
    # RFC 9068 / IAM: space-separated `scope`; some issuers use `scp` (string or list).
    names: list[str] = []
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            names.extend(value.split())
        elif isinstance(value, list):
            names.extend(v for v in value if isinstance(v, str))
    return names


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _printable(value: Any) -> str:
    if isinstance(value, str) and len(value) <= 16 and value.isprintable():
        return repr(value)
    return "(invalid)"


class _RsaPssKey(CryptographyRSAKey):  # type: ignore[misc]  # jose is untyped
    """RSASSA-PSS (RFC 7518 3.5: MGF1 with the same hash, salt length = hash length)."""

    _RS_FOR_PS = {"PS256": "RS256", "PS384": "RS384", "PS512": "RS512"}

    def __init__(self, key: Any, algorithm: str, *args: Any, **kwargs: Any) -> None:
        if algorithm not in self._RS_FOR_PS:
            raise JWKError(f"{algorithm} is not an RSASSA-PSS algorithm")
        super().__init__(key, self._RS_FOR_PS[algorithm], *args, **kwargs)
        self._algorithm = algorithm

    def _pss(self) -> padding.PSS:
        digest: hashes.HashAlgorithm = self.hash_alg()
        return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)

    def sign(self, msg: bytes) -> bytes:
        try:
            signature: bytes = self.prepared_key.sign(msg, self._pss(), self.hash_alg())
            return signature
        except Exception as exc:
            raise JWKError(exc) from exc

    def verify(self, msg: bytes, sig: bytes) -> bool:
        try:
            self.public_key().prepared_key.verify(sig, msg, self._pss(), self.hash_alg())
            return True
        except InvalidSignature:
            return False
