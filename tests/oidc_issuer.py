"""A real, local OIDC issuer for tests.

`LocalIssuer` is an HTTP server on 127.0.0.1 (a free port, its own thread) that serves
`/.well-known/openid-configuration` and a JWKS, holds real RSA and EC keys made with
`cryptography`, and mints JWTs with any claims and headers, including deliberately broken
ones (`alg: none`, HMAC with an arbitrary secret, foreign keys, tampered payloads). Signing
is done here with `cryptography` directly, independent of the verifier under test.

    with LocalIssuer() as idp:
        token = idp.mint({"sub": "alice", "groups": ["cms"]})
        idp.rotate("RSA")                   # new kid, old RSA keys unpublished
        assert idp.jwks_requests == ...     # requests served so far

Usable from any test folder: `from tests.oidc_issuer import LocalIssuer`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "DEFAULT_SCOPE",
    "LocalIssuer",
    "SigningKey",
    "b64url",
    "encode_jws",
    "new_signing_key",
    "tamper",
]

DEFAULT_SCOPE = "openid profile email offline_access"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
# kind accepted by add_key / rotate
_KINDS = {"RSA": None, "EC": "P-256", "EC-P256": "P-256", "EC-P384": "P-384", "EC-P521": "P-521"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    # Published "alg" member of the JWK, if any.
    alg: str | None = None

    @property
    def kty(self) -> str:
        return "RSA" if isinstance(self.private_key, rsa.RSAPrivateKey) else "EC"

    @property
    def crv(self) -> str | None:
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[
                self.private_key.curve.name
            ]
        return None

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = {"kid": self.kid, "kty": self.kty, "use": "sig"}
        if self.alg:
            jwk["alg"] = self.alg
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            jwk.update(n=_b64url_uint(numbers.n), e=_b64url_uint(numbers.e))
        else:
            numbers_ec = public.public_numbers()
            size = (public.curve.key_size + 7) // 8
            jwk.update(
                crv=self.crv,
                x=b64url(numbers_ec.x.to_bytes(size, "big")),
                y=b64url(numbers_ec.y.to_bytes(size, "big")),
            )
        return jwk

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, alg: str, signing_input: bytes) -> bytes:
        digest = _HASHES[alg[2:]]()
        if alg.startswith("RS"):
            assert isinstance(self.private_key, rsa.RSAPrivateKey)
            return self.private_key.sign(signing_input, padding.PKCS1v15(), digest)
        if alg.startswith("PS"):
            assert isinstance(self.private_key, rsa.RSAPrivateKey)
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return self.private_key.sign(signing_input, pss, digest)
        if alg.startswith("ES"):
            assert isinstance(self.private_key, ec.EllipticCurvePrivateKey)
            der = self.private_key.sign(signing_input, ec.ECDSA(digest))
            r, s = decode_dss_signature(der)
            size = (self.private_key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        raise ValueError(f"SigningKey cannot sign {alg}")


def new_signing_key(
    kind: str = "RSA", *, kid: str | None = None, alg: str | None = None, rsa_bits: int = 2048
) -> SigningKey:
    if kind not in _KINDS:
        raise ValueError(f"unknown key kind {kind!r}; one of {sorted(_KINDS)}")
    curve = _KINDS[kind]
    if curve is None:
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    else:
        private = ec.generate_private_key(_CURVES[curve]())
    kid = kid or f"{kind.lower()}-{secrets.token_hex(6)}"
    return SigningKey(kid=kid, private_key=private, alg=alg)


class LocalIssuer:
    """A running OIDC issuer on loopback. Thread-safe counters and key set."""

    def __init__(
        self, *, path: str = "", key_kinds: tuple[str, ...] = ("RSA", "EC"), rsa_bits: int = 2048
    ) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._keys: list[SigningKey] = []
        self._rsa_bits = rsa_bits
        self._path = "/" + path.strip("/") if path.strip("/") else ""
        # Failure injection: HTTP status (and body) served instead of the real documents.
        self.jwks_status = 200
        self.discovery_status = 200
        self.jwks_document: dict[str, Any] | None = None  # served verbatim when set
        self.discovery_overrides: dict[str, Any] = {}  # merged into the discovery document
        # --- token endpoint (refresh-token grant), used by the credential-store tests ---
        # refresh token -> claim overrides of the access tokens it yields; single use
        # (each refresh rotates it). token_status injects a failure (e.g. 503).
        self._refresh_grants: dict[str, dict[str, Any]] = {}
        self.token_status = 200
        self.token_clients: list[str | None] = []  # client id (Basic or form) per request
        # --- end token endpoint ---
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        for kind in key_kinds:
            self.add_key(kind)

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def start(self) -> LocalIssuer:
        # The socket is already bound and listening (constructor); serving starts here.
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},  # bounds how long stop() waits
                name=f"oidc-issuer-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- keys ---------------------------------------------------------------------------

    @property
    def keys(self) -> list[SigningKey]:
        with self._lock:
            return list(self._keys)

    def add_key(
        self,
        kind: str = "RSA",
        *,
        kid: str | None = None,
        alg: str | None = None,
        publish: bool = True,
    ) -> SigningKey:
        """A new key; published in the JWKS unless `publish=False` (a key only we know)."""
        key = new_signing_key(kind, kid=kid, alg=alg, rsa_bits=self._rsa_bits)
        if publish:
            with self._lock:
                self._keys.append(key)
        return key

    def remove_key(self, kid: str) -> None:
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def rotate(self, kind: str = "RSA") -> SigningKey:
        """Publish a new key of `kind` and unpublish the previous keys of the same type."""
        new = new_signing_key(kind, rsa_bits=self._rsa_bits)
        with self._lock:
            self._keys = [k for k in self._keys if k.kty != new.kty or k.crv != new.crv]
            self._keys.append(new)
        return new

    def key(self, kid: str) -> SigningKey:
        for k in self.keys:
            if k.kid == kid:
                return k
        raise KeyError(kid)

    def key_for(self, alg: str) -> SigningKey:
        """The newest published key able to sign `alg`."""
        for k in reversed(self.keys):
            if alg[:2] in ("RS", "PS") and k.kty == "RSA":
                return k
            if alg[:2] == "ES" and k.crv == _CURVE_FOR_ALG.get(alg):
                return k
        raise LookupError(f"no published key for {alg}; add_key() one")

    # ---- request accounting -------------------------------------------------------------

    def requests(self, path_suffix: str) -> int:
        with self._lock:
            return self._requests[path_suffix]

    @property
    def jwks_requests(self) -> int:
        return self.requests("/jwks")

    @property
    def discovery_requests(self) -> int:
        return self.requests("/.well-known/openid-configuration")

    # ---- tokens -------------------------------------------------------------------------

    def claims(
        self, overrides: dict[str, Any] | None = None, *, lifetime: int = 300
    ) -> dict[str, Any]:
        """Default access-token claims; an override value of None removes the claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
            "scope": DEFAULT_SCOPE,
        }
        for name, value in (overrides or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        alg: str = "RS256",
        key: SigningKey | str | None = None,
        header: dict[str, Any] | None = None,
        lifetime: int = 300,
        hmac_secret: bytes | None = None,
    ) -> str:
        """A signed JWT. `key`: a SigningKey (possibly unpublished or another issuer's) or a
        kid of this issuer; default the newest key for `alg`. `header` entries override
        (None removes, e.g. {"kid": None}). alg "none" gives an empty signature; HS* needs
        `hmac_secret` (e.g. `key.public_pem()` for the algorithm-confusion attack)."""
        signing_key: SigningKey | None
        if isinstance(key, str):
            signing_key = self.key(key)
        elif key is None and alg[:2] in ("RS", "PS", "ES"):
            signing_key = self.key_for(alg)
        else:
            signing_key = key
        jose_header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if signing_key is not None:
            jose_header["kid"] = signing_key.kid
        for name, value in (header or {}).items():
            if value is None:
                jose_header.pop(name, None)
            else:
                jose_header[name] = value
        payload = self.claims(claims, lifetime=lifetime)
        return encode_jws(jose_header, payload, signing_key=signing_key, hmac_secret=hmac_secret)

    # ---- token endpoint (refresh-token grant) -------------------------------------------

    def issue_refresh_token(self, claims: dict[str, Any] | None = None) -> str:
        """A refresh token whose grant yields access tokens with these claim overrides."""
        token = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh_grants[token] = dict(claims or {})
        return token

    def _token_grant(self, form: dict[str, str], authorization: str | None
                     ) -> tuple[int, dict[str, Any]]:
        client = form.get("client_id")
        if authorization and authorization.lower().startswith("basic "):
            decoded = base64.b64decode(authorization[6:].strip()).decode()
            client = decoded.partition(":")[0]
        with self._lock:
            self.token_clients.append(client)
        if self.token_status != 200:
            return self.token_status, {"error": "temporarily_unavailable"}
        if form.get("grant_type") == TOKEN_EXCHANGE:
            # RFC 8693 for an offline refresh token, as INDIGO IAM does: the subject token
            # must be one of this issuer's (its signature is not checked here).
            subject = form.get("subject_token", "")
            try:
                payload = subject.split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            except (IndexError, ValueError):
                return 400, {"error": "invalid_request"}
            if claims.get("iss") != self.issuer:
                return 400, {"error": "invalid_grant"}
            kept = {k: claims[k] for k in ("sub", "groups", "aud", "scope") if k in claims}
            return 200, {"access_token": self.mint(kept), "token_type": "Bearer",
                         "expires_in": 300, "refresh_token": self.issue_refresh_token(kept),
                         "issued_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            claims = self._refresh_grants.pop(form.get("refresh_token", ""), None)
        if claims is None:
            return 400, {"error": "invalid_grant"}
        rotated = self.issue_refresh_token(claims)
        return 200, {"access_token": self.mint(claims), "token_type": "Bearer",
                     "expires_in": 300, "refresh_token": rotated}

    # ---- HTTP ---------------------------------------------------------------------------

    def _documents(self, path: str) -> tuple[int, dict[str, Any]] | None:
        if path == f"{self._path}/.well-known/openid-configuration":
            if self.discovery_status != 200:
                return self.discovery_status, {"error": "injected failure"}
            return 200, {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_url,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                **self.discovery_overrides,
            }
        if path == f"{self._path}/jwks":
            if self.jwks_status != 200:
                return self.jwks_status, {"error": "injected failure"}
            if self.jwks_document is not None:
                return 200, self.jwks_document
            return 200, {"keys": [k.public_jwk() for k in self.keys]}
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with issuer._lock:
                    issuer._requests[path.removeprefix(issuer._path)] += 1
                answer = issuer._documents(path)
                status, document = answer if answer is not None else (404, {"error": "not found"})
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                with issuer._lock:
                    issuer._requests[path.removeprefix(issuer._path)] += 1
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if path == f"{issuer._path}/token":
                    status, document = issuer._token_grant(
                        form, self.headers.get("Authorization"))
                else:
                    status, document = 404, {"error": "not found"}
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def encode_jws(
    header: dict[str, Any],
    payload: dict[str, Any] | bytes,
    *,
    signing_key: SigningKey | None = None,
    hmac_secret: bytes | None = None,
) -> str:
    """Compact JWS with `header["alg"]`, whatever it says (that is the point)."""
    alg = header.get("alg")
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(raw_payload)}".encode()
    if not isinstance(alg, str) or alg[:2] not in ("HS", "RS", "PS", "ES"):
        signature = b""  # "none" and any other spelling or junk
    elif alg.startswith("HS"):
        if hmac_secret is None:
            raise ValueError("HS* needs hmac_secret")
        digestmod = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signature = hmac.new(hmac_secret, signing_input, digestmod).digest()
    else:
        if signing_key is None:
            raise ValueError(f"{alg} needs a signing key")
        signature = signing_key.sign(alg, signing_input)
    return f"{signing_input.decode()}.{b64url(signature)}"


def tamper(token: str, **claim_changes: Any) -> str:
    """The same token with payload claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(claim_changes)
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
