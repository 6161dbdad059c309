"""Per-issuer signing keys: OIDC discovery + JWKS, cached, refreshed on unknown `kid`.

Refreshes are rate-limited per issuer (at most one fetch attempt per
`jwks_min_refresh_interval_s`, successful or not), so tokens with random `kid`s cannot make
us hammer the issuer, and deduplicated (concurrent callers await the same fetch). A failed
refresh keeps serving the keys we already have. One instance belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from api.auth.errors import AuthenticationError, KeysUnavailableError
from api.auth.settings import AuthSettings, TrustedIssuer, check_key_source_url

__all__ = ["JwksCache"]

logger = logging.getLogger(__name__)

_MAX_DOCUMENT_BYTES = 1024 * 1024
# Members that only private keys have; a JWKS publishing them is misconfigured, and we
# never want to hold them.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_REQUIRED_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}


class _FetchError(Exception):
    pass


@dataclass
class _IssuerKeys:
    keys: tuple[dict[str, Any], ...] | None = None  # None until the first successful fetch
    fetched_at: float = 0.0
    last_attempt: float | None = None
    jwks_uri: str | None = None  # from discovery, cached
    inflight: asyncio.Task[None] | None = None


class JwksCache:
    def __init__(
        self,
        settings: AuthSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._owns_client = http_client is None
        self._client = http_client
        self._issuers: dict[str, _IssuerKeys] = {}

    async def aclose(self) -> None:
        for state in self._issuers.values():
            if state.inflight is not None:
                state.inflight.cancel()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def signing_keys(self, issuer: TrustedIssuer, kid: str | None) -> list[dict[str, Any]]:
        """Public JWKs of `issuer` matching `kid` (all keys when `kid` is None).

        Raises AuthenticationError when the kid is still unknown after (at most) one refresh,
        KeysUnavailableError when the issuer's keys were never obtained."""
        state = self._issuers.setdefault(issuer.issuer, _IssuerKeys())
        if (
            state.keys is None
            or self._clock() - state.fetched_at >= self._settings.jwks_cache_ttl_s
        ):
            await self._refresh(issuer, state)
        if state.keys is None:
            raise KeysUnavailableError("The signing keys of the token issuer are unavailable")
        found = _select(state.keys, kid)
        if found:
            return found
        # Unknown kid: the issuer may have rotated. One rate-limited, shared refresh.
        await self._refresh(issuer, state)
        found = _select(state.keys, kid)
        if found:
            return found
        raise AuthenticationError("Invalid access token: unknown signing key")

    async def _refresh(self, issuer: TrustedIssuer, state: _IssuerKeys) -> None:
        if state.inflight is None:
            now = self._clock()
            interval = self._settings.jwks_min_refresh_interval_s
            if state.last_attempt is not None and now - state.last_attempt < interval:
                return
            state.last_attempt = now
            state.inflight = asyncio.ensure_future(self._fetch_and_store(issuer, state, now))
        # Shielded: a cancelled request must not abort the fetch the others are waiting on.
        await asyncio.shield(state.inflight)

    async def _fetch_and_store(self, issuer: TrustedIssuer, state: _IssuerKeys, now: float) -> None:
        try:
            jwks_uri = issuer.jwks_url or state.jwks_uri or await self._discover(issuer)
            state.jwks_uri = None if issuer.jwks_url else jwks_uri
            try:
                keys = _parse_jwks(await self._get_json(jwks_uri))
            except _FetchError:
                state.jwks_uri = None  # rediscover next time, jwks_uri may have moved
                raise
            state.keys = keys
            state.fetched_at = now
            logger.info("fetched %d signing keys for issuer %s", len(keys), issuer.issuer)
        except _FetchError as exc:
            logger.warning("could not refresh signing keys of issuer %s: %s", issuer.issuer, exc)
        except Exception:  # never let a fetch failure escape into every waiting request
            logger.exception("unexpected error refreshing signing keys of %s", issuer.issuer)
        finally:
            state.inflight = None

    async def _discover(self, issuer: TrustedIssuer) -> str:
        url = issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url)
        # OIDC Discovery 4.3: the document must name exactly the issuer we asked for.
        if document.get("issuer") != issuer.issuer:
            raise _FetchError("discovery document issuer does not match the configured issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise _FetchError("discovery document has no jwks_uri")
        try:
            check_key_source_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            raise _FetchError(str(exc)) from None
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        client = self._http_client()
        try:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise _FetchError(f"GET {url} returned HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_DOCUMENT_BYTES:
                        raise _FetchError(
                            f"GET {url} returned more than {_MAX_DOCUMENT_BYTES} bytes"
                        )
        except httpx.HTTPError as exc:
            raise _FetchError(f"GET {url} failed: {type(exc).__name__}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchError(f"GET {url} did not return JSON") from None
        if not isinstance(document, dict):
            raise _FetchError(f"GET {url} did not return a JSON object")
        return document

    def _http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._settings.http_timeout_s,
                follow_redirects=False,
                headers={"Accept": "application/json"},
            )
        return self._client


def _parse_jwks(document: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _FetchError("JWKS has no keys array")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kty = entry.get("kty")
        if kty not in _REQUIRED_MEMBERS:
            continue  # symmetric or unknown key types are never signature keys for us
        if entry.get("use", "sig") != "sig":
            continue
        key_ops = entry.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            continue
        if not all(isinstance(entry.get(m), str) for m in _REQUIRED_MEMBERS[kty]):
            continue
        if "kid" in entry and not isinstance(entry["kid"], str):
            continue
        if "alg" in entry and not isinstance(entry["alg"], str):
            continue
        keys.append({k: v for k, v in entry.items() if k not in _PRIVATE_MEMBERS})
    if not keys:
        raise _FetchError("JWKS contains no usable signature keys")
    return tuple(keys)


def _select(keys: tuple[dict[str, Any], ...], kid: str | None) -> list[dict[str, Any]]:
    if kid is None:
        return list(keys)
    return [key for key in keys if key.get("kid") == kid]
