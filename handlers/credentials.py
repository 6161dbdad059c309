"""The encrypted credential store: user tokens kept for long work, never in events or logs.

When the API accepts a create, update, delete or retry it hands the caller's bearer token
to :class:`CredentialCapture` (the API's ``CredentialSink`` port). The token is sealed with
AES-GCM under the current key of :class:`CredentialKeys` (configuration,
``ORCH_CREDENTIAL_KEYS``) and stored in the ``credentials`` table under
``(deployment id, "user-token")``. The associated data binds a ciphertext to its row and key
id, so a sealed value copied to another row does not open.

Handlers read it back through :class:`DeploymentCredentials` (the IM handler's
``UserCredentials`` port): the access token, refreshed first when it is about to expire and
a refresh token was captured (RFC 6749 refresh grant at the issuer's token endpoint, found
by OIDC discovery), or refreshed on demand after the deployer answered 401.

Key rotation: put a new key first in ``ORCH_CREDENTIAL_KEYS`` and keep the old ones after
it; rows sealed under an old key still open, and :meth:`CredentialStore.reseal` re-seals
them under the current key. A row whose key is no longer configured (or whose ciphertext
does not authenticate) raises :class:`CredentialUnavailable`, whose message never contains
key or token material: the deployment fails with that reason, nothing leaks.

:class:`CredentialCleanup` deletes a deployment's credentials when it reaches
``DELETE_COMPLETE`` (``deployment.deleted``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Container
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.records import RecordedEvent

log = logging.getLogger("orchestrator.credentials")

USER_TOKEN = "user-token"
"""The ``kind`` under which a deployment's user tokens are stored."""

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
_NONCE_BYTES = 12
_KEY_SIZES = (16, 24, 32)


class CredentialUnavailable(Exception):
    """A credential cannot be used (no key, unknown key id, refresh refused, expired...).

    The message is safe to record as a deployment's status reason: it names what is wrong,
    never a key or a token.
    """


# ---------------------------------------------------------------- keys


class CredentialKeys:
    """AES-GCM keys by id; the first is the current one (it seals), all of them open."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one credential key is needed")
        seen: set[str] = set()
        for key_id, key in keys:
            if not key_id or ":" in key_id or "," in key_id:
                raise ValueError(f"invalid credential key id {key_id!r}")
            if key_id in seen:
                raise ValueError(f"credential key id {key_id!r} is given twice")
            if len(key) not in _KEY_SIZES:
                raise ValueError(f"credential key {key_id!r} must be 16, 24 or 32 bytes "
                                 f"(base64), not {len(key)}")
            seen.add(key_id)
        self.current_id = keys[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}

    @classmethod
    def parse(cls, value: str) -> CredentialKeys:
        """``"keyid:base64key,keyid2:base64key2"`` (current first). Errors name the key id
        only, never the key."""
        keys: list[tuple[str, bytes]] = []
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            key_id, separator, encoded = part.partition(":")
            if not separator:
                raise ValueError("credential keys are 'keyid:base64key' separated by commas")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"credential key {key_id.strip()!r} is not base64") from None
            keys.append((key_id.strip(), key))
        return cls(keys)

    @staticmethod
    def generate(key_id: str) -> str:
        """A new ``keyid:base64key`` entry (256-bit), for operators and tests."""
        return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def seal(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes, bytes]:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plaintext, associated)
        return self.current_id, nonce, sealed

    def open(self, key_id: str, nonce: bytes, sealed: bytes, associated: bytes) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CredentialUnavailable(
                f"the stored credential is sealed with key {key_id!r}, which is not configured")
        try:
            return cipher.decrypt(nonce, sealed, associated)
        except InvalidTag:
            raise CredentialUnavailable(
                f"the stored credential does not open with key {key_id!r}") from None


def _associated(owner_id: str, kind: str, key_id: str) -> bytes:
    return f"{owner_id}\n{kind}\n{key_id}".encode()


# ---------------------------------------------------------------- the store


class TokenSet(msgspec.Struct, frozen=True, kw_only=True):
    """What is sealed for a deployment: the user's tokens and where to refresh them."""

    access_token: str
    refresh_token: str | None = None
    issuer: str | None = None
    # When the access token expires (its ``exp``), if known.
    expires_at: datetime | None = None

    def __repr__(self) -> str:  # never print a token by accident
        return f"TokenSet(issuer={self.issuer!r}, expires_at={self.expires_at!r}, ...)"


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(TokenSet)


class CredentialStore:
    """put / get / delete sealed values by ``(owner_id, kind)`` in the ``credentials`` table.

    ``keys`` None: no key is configured; every read and write raises
    :class:`CredentialUnavailable` (deployments that need a credential fail cleanly).
    """

    def __init__(self, engine: AsyncEngine, keys: CredentialKeys | None) -> None:
        self.engine = engine
        self.keys = keys

    def require_keys(self) -> CredentialKeys:
        if self.keys is None:
            raise CredentialUnavailable(
                "no credential key is configured (ORCH_CREDENTIAL_KEYS): user credentials "
                "cannot be kept")
        return self.keys

    async def put(self, owner_id: str, kind: str, value: bytes, *,
                  expires_at: datetime | None = None) -> None:
        keys = self.require_keys()
        key_id, nonce, sealed = keys.seal(value, _associated(owner_id, kind, keys.current_id))
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO credentials (owner_id, kind, key_id, nonce, ciphertext, expires_at,"
                " updated_at) VALUES (:owner_id, :kind, :key_id, :nonce, :ciphertext,"
                " :expires_at, now()) ON CONFLICT (owner_id, kind) DO UPDATE SET"
                " key_id = excluded.key_id, nonce = excluded.nonce,"
                " ciphertext = excluded.ciphertext, expires_at = excluded.expires_at,"
                " updated_at = now()"),
                {"owner_id": owner_id, "kind": kind, "key_id": key_id, "nonce": nonce,
                 "ciphertext": sealed, "expires_at": expires_at})

    async def get(self, owner_id: str, kind: str) -> bytes | None:
        """The plaintext, None when nothing is stored; CredentialUnavailable when it cannot
        be opened."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT key_id, nonce, ciphertext FROM credentials"
                " WHERE owner_id = :owner_id AND kind = :kind"),
                {"owner_id": owner_id, "kind": kind})).first()
        if row is None:
            return None
        keys = self.require_keys()
        return keys.open(row.key_id, bytes(row.nonce), bytes(row.ciphertext),
                         _associated(owner_id, kind, row.key_id))

    async def delete(self, owner_id: str, kind: str | None = None) -> int:
        """Delete one credential, or every kind of ``owner_id``; returns how many."""
        query = "DELETE FROM credentials WHERE owner_id = :owner_id"
        arguments = {"owner_id": owner_id}
        if kind is not None:
            query += " AND kind = :kind"
            arguments["kind"] = kind
        async with self.engine.begin() as conn:
            result = await conn.execute(text(query), arguments)
        return int(result.rowcount or 0)

    async def reseal(self, batch: int = 500) -> int:
        """Re-seal every row not under the current key (after a rotation); rows whose key is
        gone are left as they are. Returns how many were re-sealed."""
        keys = self.require_keys()
        resealed = 0
        async with self.engine.begin() as conn:
            rows = (await conn.execute(text(
                "SELECT owner_id, kind, key_id, nonce, ciphertext FROM credentials"
                " WHERE key_id <> :current AND key_id = ANY(:known) LIMIT :batch"
                " FOR UPDATE SKIP LOCKED"),
                {"current": keys.current_id, "known": list(keys.ids), "batch": batch})).all()
            for row in rows:
                plain = keys.open(row.key_id, bytes(row.nonce), bytes(row.ciphertext),
                                  _associated(row.owner_id, row.kind, row.key_id))
                key_id, nonce, sealed = keys.seal(
                    plain, _associated(row.owner_id, row.kind, keys.current_id))
                await conn.execute(text(
                    "UPDATE credentials SET key_id = :key_id, nonce = :nonce,"
                    " ciphertext = :ciphertext, updated_at = now()"
                    " WHERE owner_id = :owner_id AND kind = :kind"),
                    {"key_id": key_id, "nonce": nonce, "ciphertext": sealed,
                     "owner_id": row.owner_id, "kind": row.kind})
                resealed += 1
        return resealed

    async def put_tokens(self, owner_id: str, tokens: TokenSet, kind: str = USER_TOKEN) -> None:
        await self.put(owner_id, kind, _ENCODER.encode(tokens), expires_at=tokens.expires_at)

    async def get_tokens(self, owner_id: str, kind: str = USER_TOKEN) -> TokenSet | None:
        plain = await self.get(owner_id, kind)
        if plain is None:
            return None
        try:
            return _DECODER.decode(plain)
        except msgspec.DecodeError:
            raise CredentialUnavailable("the stored credential is not a token set") from None


# ---------------------------------------------------------------- tokens


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the API verified it already); {} if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_set(access_token: str, refresh_token: str | None = None) -> TokenSet:
    """A token set for a JWT access token: issuer and expiry read from its claims."""
    claims = unverified_claims(access_token)
    issuer = claims.get("iss") if isinstance(claims.get("iss"), str) else None
    exp = claims.get("exp")
    expires_at = (datetime.fromtimestamp(exp, UTC)
                  if isinstance(exp, int | float) and not isinstance(exp, bool) else None)
    return TokenSet(access_token=access_token, refresh_token=refresh_token or None,
                    issuer=issuer, expires_at=expires_at)


class OidcTokenRefresher:
    """The refresh-token grant at an issuer's token endpoint (from its discovery document).

    ``client_id`` / ``client_secret``: the orchestrator's OIDC client at the issuers (the
    secret is sent with HTTP Basic, RFC 6749 2.3.1; without one, as a public client).
    """

    def __init__(self, *, client_id: str | None, client_secret: str | None = None,
                 timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout
        self._transport = transport
        self._token_endpoints: dict[str, str] = {}

    def _http(self) -> httpx.AsyncClient:
        # One client per call: refreshes are rare, and nothing is left to close.
        return httpx.AsyncClient(timeout=self.timeout, transport=self._transport,
                                 follow_redirects=False)

    async def aclose(self) -> None:
        """Nothing to release (kept for callers that manage a lifetime)."""

    async def _token_endpoint(self, issuer: str) -> str:
        endpoint = self._token_endpoints.get(issuer)
        if endpoint is None:
            url = issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                async with self._http() as http:
                    response = await http.get(url)
                response.raise_for_status()
                endpoint = response.json().get("token_endpoint")
            except (httpx.HTTPError, ValueError) as error:
                raise CredentialUnavailable(
                    f"the discovery document of {issuer} could not be read: "
                    f"{type(error).__name__}") from None
            if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise CredentialUnavailable(f"{issuer} publishes no token endpoint")
            self._token_endpoints[issuer] = endpoint
        return endpoint

    def _client(self, form: dict[str, str]) -> tuple[str, str] | None:
        """HTTP Basic for a confidential client; a public one names itself in the form."""
        if self.client_id and self.client_secret:
            return (self.client_id, self.client_secret)
        if self.client_id:
            form["client_id"] = self.client_id
        return None

    async def exchange(self, access_token: str) -> str:
        """RFC 8693: the user's access token for an offline refresh token (what the Java
        orchestrator did on every mutation); CredentialUnavailable when refused."""
        issuer = token_set(access_token).issuer
        if issuer is None:
            raise CredentialUnavailable("the access token names no issuer")
        endpoint = await self._token_endpoint(issuer)
        form = {"grant_type": TOKEN_EXCHANGE, "subject_token": access_token,
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "requested_token_type": REFRESH_TOKEN_TYPE, "scope": "openid offline_access"}
        answer = await self._post(endpoint, form, issuer, "exchange")
        refresh_token = answer.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            raise CredentialUnavailable(
                f"the issuer {issuer} exchanged the token without a refresh token")
        return refresh_token

    async def _post(self, endpoint: str, form: dict[str, str], issuer: str,
                    what: str) -> dict[str, Any]:
        auth = self._client(form)
        try:
            async with self._http() as http:
                response = await http.post(endpoint, data=form, auth=auth)
        except httpx.HTTPError as error:
            raise CredentialUnavailable(
                f"the token endpoint of {issuer} did not answer: "
                f"{type(error).__name__}") from None
        if response.status_code != 200:
            # The error code only (RFC 6749 5.2): descriptions may echo request values.
            code = ""
            try:
                code = str(response.json().get("error", ""))[:100]
            except ValueError:
                pass
            raise CredentialUnavailable(
                f"the issuer {issuer} refused to {what} the user's token "
                f"({response.status_code}{' ' + code if code else ''})")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise CredentialUnavailable(f"the token endpoint of {issuer} answered no JSON object")
        return answer

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        if tokens.refresh_token is None or tokens.issuer is None:
            raise CredentialUnavailable("no refresh token was captured for this deployment")
        endpoint = await self._token_endpoint(tokens.issuer)
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        answer = await self._post(endpoint, form, tokens.issuer, "refresh")
        access_token = answer.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise CredentialUnavailable(
                f"the token endpoint of {tokens.issuer} answered without an access token")
        refreshed = token_set(str(access_token), answer.get("refresh_token")
                              or tokens.refresh_token)
        if refreshed.expires_at is None and isinstance(answer.get("expires_in"), int):
            refreshed = msgspec.structs.replace(
                refreshed, expires_at=datetime.now(UTC) + timedelta(seconds=answer["expires_in"]))
        if refreshed.issuer is None:
            refreshed = msgspec.structs.replace(refreshed, issuer=tokens.issuer)
        return refreshed


# ---------------------------------------------------------------- ports' implementations


class CredentialCapture:
    """The API's ``CredentialSink``: stores the caller's tokens under the deployment id.

    Without a configured key nothing can be stored: that is logged (without the token) and
    the deployment fails later, when a handler needs the credential, with a clear reason.
    """

    def __init__(self, store: CredentialStore,
                 exchanger: OidcTokenRefresher | None = None) -> None:
        self.store = store
        # With an exchanger (ORCH_CREDENTIAL_TOKEN_EXCHANGE), a refresh token is obtained
        # by RFC 8693 token exchange when the client sent none (the legacy behaviour).
        self.exchanger = exchanger

    async def capture(self, deployment_id: str, access_token: str, *,
                      refresh_token: str | None = None) -> None:
        if refresh_token is None and self.exchanger is not None:
            try:
                refresh_token = await self.exchanger.exchange(access_token)
            except CredentialUnavailable as error:
                log.warning("no refresh token for deployment %s: %s", deployment_id, error)
        try:
            await self.store.put_tokens(deployment_id, token_set(access_token, refresh_token))
        except CredentialUnavailable as error:
            log.warning("user credentials of deployment %s not kept: %s", deployment_id, error)
        except Exception as error:  # the command was accepted: never turn it into a 500
            # The type only: a driver's message may echo the statement's parameters.
            log.error("user credentials of deployment %s not kept: %s", deployment_id,
                      type(error).__name__)


class DeploymentCredentials:
    """The IM handler's ``UserCredentials`` port over the store, with refresh.

    ``access_token`` returns the user's access token for a deployment (None when none was
    captured, e.g. a deployment made by a system actor), refreshed first when it expires
    within ``refresh_margin``. A token captured by the API right after the command was
    appended may land a moment after the handler sees the event: a missing row is re-read
    for up to ``capture_grace`` seconds.
    """

    def __init__(self, store: CredentialStore, refresher: OidcTokenRefresher | None, *,
                 kind: str = USER_TOKEN, refresh_margin: timedelta = timedelta(minutes=5),
                 capture_grace: float = 2.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.refresher = refresher
        self.kind = kind
        self.refresh_margin = refresh_margin
        self.capture_grace = capture_grace
        self.clock = clock
        # A fixed set of locks, a deployment's chosen by its id: bounded memory.
        self._locks = [asyncio.Lock() for _ in range(64)]

    async def _load(self, deployment_id: str) -> TokenSet | None:
        self.store.require_keys()  # no key: fail now, not "no credential captured"
        deadline = time.monotonic() + self.capture_grace
        while True:
            tokens = await self.store.get_tokens(deployment_id, self.kind)
            if tokens is not None or time.monotonic() >= deadline:
                return tokens
            await asyncio.sleep(0.05)

    async def _refreshed(self, deployment_id: str, tokens: TokenSet) -> TokenSet:
        if self.refresher is None:
            raise CredentialUnavailable("refreshing user tokens is not configured")
        fresh = await self.refresher.refresh(tokens)
        await self.store.put_tokens(deployment_id, fresh, self.kind)
        return fresh

    def _lock(self, deployment_id: str) -> asyncio.Lock:
        # One refresh at a time per deployment: refresh tokens may be single-use.
        return self._locks[zlib.crc32(deployment_id.encode()) % len(self._locks)]

    async def access_token(self, deployment_id: str) -> str | None:
        async with self._lock(deployment_id):
            tokens = await self._load(deployment_id)
            if tokens is None:
                return None
            expires_at = tokens.expires_at
            if expires_at is not None and expires_at - self.clock() <= self.refresh_margin:
                if tokens.refresh_token is None:
                    if expires_at <= self.clock():
                        raise CredentialUnavailable(
                            "the user's access token has expired and no refresh token was "
                            "captured")
                    return tokens.access_token
                tokens = await self._refreshed(deployment_id, tokens)
            return tokens.access_token

    async def refresh_after_rejection(self, deployment_id: str) -> str | None:
        """After a 401 with the current token: refresh now (CredentialUnavailable when that
        is impossible). None when no credential was captured at all."""
        async with self._lock(deployment_id):
            tokens = await self.store.get_tokens(deployment_id, self.kind)
            if tokens is None:
                return None
            return (await self._refreshed(deployment_id, tokens)).access_token


class CredentialCleanup:
    """Deletes a deployment's credentials when it reaches DELETE_COMPLETE (idempotent)."""

    NAME = "credential-cleanup"
    HANDLES: Container[str] = frozenset({"deployment.deleted"})

    def __init__(self, store: CredentialStore) -> None:
        self.store = store

    async def handle(self, event: RecordedEvent, decoded: Any) -> None:
        await self.store.delete(decoded.deployment_id)
