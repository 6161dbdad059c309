"""A real system behind the legacy API (as tests/api/conftest.py builds it) with settings
overrides, and a real HTTP receiver on loopback that records the callbacks it gets."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from orchestrator import bootstrap
from tests.api.conftest import StaticDeployerInfo, harness_settings
from tests.api.support import Harness
from tests.consumers.support import consumer_settings
from tests.databases import TestDatabases
from tests.oidc_issuer import LocalIssuer
from tosca import TemplateValidator


@asynccontextmanager
async def api_harness(databases: TestDatabases, kafka: str,
                      issuers: tuple[LocalIssuer, LocalIssuer], validator: TemplateValidator,
                      **overrides: Any) -> AsyncIterator[Harness]:
    settings = harness_settings(await databases.fresh(), kafka, issuers, **overrides)
    deployer_info = StaticDeployerInfo()
    system = await bootstrap.build(settings, validator=validator, deployer_info=deployer_info)
    stop = asyncio.Event()
    try:
        await bootstrap.start_components(system, stop, consumer_settings(settings.topic_prefix))
        transport = httpx.ASGITransport(app=system.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:8080") as client:
            yield Harness(system=system, client=client, issuer=issuers[0],
                          second_issuer=issuers[1], deployer_info=deployer_info)
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()


# Deadlines for waits on the asynchronous pipeline: generous, the test machine is shared
# and loaded (a wait ends as soon as its condition holds).
PIPELINE_DEADLINE_S = 120.0


async def wait_for_status(api: Harness, user: Any, deployment_id: str,
                          status: str) -> dict[str, Any]:
    """Until GET shows ``status``; returns the body (Harness.wait_for_status, longer
    deadline)."""
    seen: dict[str, Any] = {}

    async def probe() -> bool:
        response = await api.show(user, deployment_id)
        if response.status_code != 200:
            return False
        seen.clear()
        seen.update(response.json())
        return seen.get("status") == status

    await api.eventually(probe, within=PIPELINE_DEADLINE_S,
                         what=f"deployment {deployment_id} in {status}")
    return dict(seen)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class CallbackReceiver:
    """An HTTP server on 127.0.0.1 recording POSTs; ``answers[path]`` is the list of status
    codes to answer in turn (the last one repeats), 200 when not set."""

    answers: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    queue = receiver.answers.get(self.path, [200])
                    status = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def posts(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
