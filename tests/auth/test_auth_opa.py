"""OpaAuthorizer against a tiny real HTTP server standing in for OPA's data API."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from api.auth import OpaAuthorizer, Principal

IAM = "https://iam.example.org/"
ALICE = Principal(issuer=IAM, subject="alice", groups=frozenset({"cms", "atlas"}), is_admin=False)


class LocalOpa:
    """Answers every POST with `status` and `body` (bytes); records the request bodies.
    With `hang = True` it holds requests until stopped (to provoke client timeouts)."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b'{"result": false}'
        self.hang = False
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._release = threading.Event()
        opa = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                opa.received.append(json.loads(self.rfile.read(length)))
                opa.paths.append(self.path)
                if opa.hang:
                    opa._release.wait(timeout=30)
                    return
                self.send_response(opa.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(opa.body)))
                self.end_headers()
                self.wfile.write(opa.body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/data/orchestrator/allow"

    def respond(self, document: Any, status: int = 200) -> None:
        self.status = status
        self.body = document if isinstance(document, bytes) else json.dumps(document).encode()

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


@pytest.fixture
def opa() -> Iterator[LocalOpa]:
    server = LocalOpa()
    yield server
    server.stop()


async def ask(authorizer: OpaAuthorizer, action: str = "read", **resource: Any) -> bool:
    resource = {"owner_issuer": IAM, "owner_subject": "bob", "group": "cms", **resource}
    return await authorizer.allowed(ALICE, action, **resource)


async def test_opa_allow_and_deny_with_the_documented_input(opa):
    authorizer = OpaAuthorizer(opa.url)
    try:
        opa.respond({"result": True})
        assert await ask(authorizer, "delete")
        opa.respond({"result": False})
        assert not await ask(authorizer, "read")
    finally:
        await authorizer.aclose()
    assert opa.paths == ["/v1/data/orchestrator/allow"] * 2
    assert opa.received[0] == {
        "input": {
            "user": {
                "issuer": IAM,
                "subject": "alice",
                "groups": ["atlas", "cms"],
                "is_admin": False,
            },
            "action": "delete",
            "resource": {"owner": {"issuer": IAM, "subject": "bob"}, "group": "cms"},
        }
    }


async def test_opa_package_answer_with_allow_field(opa):
    authorizer = OpaAuthorizer(opa.url)
    try:
        opa.respond({"result": {"allow": True, "reason": "owner"}})
        assert await ask(authorizer)
        opa.respond({"result": {"allow": False}})
        assert not await ask(authorizer)
    finally:
        await authorizer.aclose()


async def test_unowned_resource_is_sent_with_null_owner(opa):
    authorizer = OpaAuthorizer(opa.url)
    try:
        opa.respond({"result": True})
        assert await ask(authorizer, owner_issuer=None, owner_subject=None, group=None)
    finally:
        await authorizer.aclose()
    assert opa.received[0]["input"]["resource"] == {"owner": None, "group": None}


@pytest.mark.parametrize(
    "document, status",
    [
        ({}, 200),  # undefined decision
        ({"result": None}, 200),
        ({"result": "true"}, 200),
        ({"result": 1}, 200),
        ({"result": [True]}, 200),
        ({"result": {"allow": "yes"}}, 200),
        ([True], 200),
        (b"not json", 200),
        ({"result": True}, 500),  # an error status never allows, whatever the body
        ({"code": "internal_error"}, 500),
        ({"result": True}, 404),
    ],
)
async def test_anything_but_an_explicit_true_is_a_denial(opa, document, status):
    authorizer = OpaAuthorizer(opa.url)
    try:
        opa.respond(document, status)
        assert not await ask(authorizer)
    finally:
        await authorizer.aclose()


async def test_unreachable_opa_fails_closed():
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    authorizer = OpaAuthorizer(f"http://127.0.0.1:{port}/v1/data/orchestrator/allow")
    try:
        assert not await ask(authorizer)
    finally:
        await authorizer.aclose()


async def test_slow_opa_fails_closed(opa):
    opa.hang = True
    authorizer = OpaAuthorizer(opa.url, timeout_s=0.2)
    try:
        assert not await ask(authorizer)
    finally:
        await authorizer.aclose()
