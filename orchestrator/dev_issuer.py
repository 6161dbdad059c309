"""A development OIDC issuer on loopback, for trying the API with curl and orchent.

Never on by default: ``orchestrator run`` starts it only with ``ORCH_DEV_ISSUER=1``,
refuses that when the API listens beyond loopback, and then trusts it in addition to
the configured issuers. It serves

- ``GET /.well-known/openid-configuration`` and ``GET /jwks`` (an RSA key made at start,
  never written anywhere: a restart invalidates every token it minted), as any OIDC
  issuer does, so the server verifies its tokens through the ordinary discovery path;
- ``POST /dev/token`` with a JSON body ``{"sub", "groups", "scope", "lifetime", "aud"}``
  answering ``{"access_token", "token_type", "expires_in"}``: anyone who can reach the
  loopback port may mint a token, which is exactly why it is a development tool.

``orchestrator dev-token --sub alice --groups g1`` asks the running issuer for a token
(``ORCH_DEV_ISSUER_PORT``, default 18090).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

DEFAULT_PORT = 18090
DEFAULT_SCOPE = "openid profile email offline_access"
DEFAULT_LIFETIME_S = 3600
DEV_ADMIN_GROUP = "orchestrator-admins"
"""``orchestrator dev-token --admin`` adds this group; the server trusts it as admins."""
MAX_LIFETIME_S = 7 * 24 * 3600
LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.startswith("127.")


class DevIssuer:
    """The issuer: a ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._pem = self._key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
        self.kid = f"dev-{secrets.token_hex(6)}"
        self._server = ThreadingHTTPServer((LOOPBACK, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def issuer(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> DevIssuer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.1},
                                            name="dev-oidc-issuer", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DevIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- documents and tokens ---------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks",
                "token_endpoint": f"{self.issuer}/dev/token",
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": DEFAULT_SCOPE.split()}

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kid": self.kid, "kty": "RSA", "use": "sig", "alg": "RS256",
                          "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}]}

    def mint(self, subject: str, *, groups: list[str] | tuple[str, ...] = (),
             scope: str = DEFAULT_SCOPE, lifetime_s: int = DEFAULT_LIFETIME_S,
             audience: str | None = None) -> str:
        if not subject:
            raise ValueError("sub is required")
        if not 0 < lifetime_s <= MAX_LIFETIME_S:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME_S} seconds")
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": subject, "iat": now, "nbf": now,
                                  "exp": now + lifetime_s, "jti": secrets.token_hex(8),
                                  "scope": scope, "groups": list(groups)}
        if audience:
            claims["aud"] = audience
        token: str = jwt.encode(claims, self._pem.decode(), algorithm="RS256",
                                headers={"kid": self.kid})
        return token

    def _token_response(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
            groups = request.get("groups") or []
            if isinstance(groups, str):
                groups = [g for g in groups.split(",") if g]
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError("groups must be a list of strings")
            lifetime = int(request.get("lifetime", DEFAULT_LIFETIME_S))
            token = self.mint(str(request.get("sub") or ""), groups=groups,
                              scope=str(request.get("scope") or DEFAULT_SCOPE),
                              lifetime_s=lifetime, audience=request.get("aud"))
        except (ValueError, TypeError) as error:
            return 400, {"error": "invalid_request", "error_description": str(error)}
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/.well-known/openid-configuration":
                    self._json(200, issuer.discovery())
                elif path == "/jwks":
                    self._json(200, issuer.jwks())
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length") or 0), 65536)
                body = self.rfile.read(length)
                if self.path.split("?", 1)[0] != "/dev/token":
                    self._json(404, {"error": "not_found"})
                    return
                self._json(*issuer._token_response(body))

            def _json(self, status: int, document: dict[str, Any]) -> None:
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # tokens are in request bodies only, but keep the console quiet

        return Handler


def request_token(port: int, subject: str, *, groups: list[str], scope: str = DEFAULT_SCOPE,
                  lifetime_s: int = DEFAULT_LIFETIME_S, audience: str | None = None,
                  timeout_s: float = 5.0) -> str:
    """A token from the dev issuer running on this machine at ``port``."""
    body: dict[str, Any] = {"sub": subject, "groups": groups, "scope": scope,
                            "lifetime": lifetime_s}
    if audience:
        body["aud"] = audience
    response = httpx.post(f"http://{LOOPBACK}:{port}/dev/token", json=body, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeError(f"the dev issuer answered {response.status_code}: {response.text}")
    token: str = response.json()["access_token"]
    return token
