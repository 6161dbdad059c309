"""A real Infrastructure Manager for these tests, started by the project's services command.

The session fixture runs `bash scripts/services.sh up im` (idempotent: a running, answering
IM is reused; a real start gets a fresh database). IM checks username/password against the
users file the script generates (.run/im/users.json); `orchestrator` is the user the tests
act as, `other` a second user. Every infrastructure a test creates through `fx_deploy` is
destroyed (and confirmed gone) at teardown.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.im_client import (
    DummyCredentials,
    ImAuthorization,
    ImClient,
    ImCredentials,
    ImError,
    build_authorization,
)
from tests.im.support import assert_safe_for_im

ROOT = Path(__file__).resolve().parents[2]
IM_RUN = ROOT / ".run" / "im"


@dataclass(frozen=True)
class ImPeer:
    url: str
    users: dict[str, str]  # username -> password

    def auth(self, user: str = "orchestrator", *, password: str | None = None,
             dummy: bool = True) -> ImAuthorization:
        im = ImCredentials(username=user, password=self.users[user] if password is None
                           else password)
        return build_authorization(im, [DummyCredentials()] if dummy else [])


def _services(action: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), action, "im"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/services.sh {action} im failed:\n{result.stderr[-4000:]}")


def _users(directory: Path) -> dict[str, str]:
    users = json.loads((directory / "users.json").read_text())["users"]
    return {u["username"]: u["password"] for u in users}


@pytest.fixture(scope="session", name="fx_im_peer")
def fixture_im_peer() -> ImPeer:
    _services("up")
    url = os.environ.get("ORCH_IM_URL") or (
        f"http://127.0.0.1:{os.environ.get('ORCH_IM_PORT', '18899')}"
    )
    return ImPeer(url=url, users=_users(IM_RUN))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="fx_private_im_peer")
def fixture_private_im_peer(fx_im_peer: ImPeer, tmp_path: Path) -> Iterator[ImPeer]:
    """A fresh IM of its own (same script and venv, another port and directory), for tests
    that leave IM in a state other tests must not inherit: a lost delete's reload from the
    database switches IM's template validation off for the whole process (pitfall 2)."""
    port = _free_port()
    env = {**os.environ, "ORCH_IM_DIR": str(tmp_path / "im"), "ORCH_IM_PORT": str(port)}
    _services("up", env)
    try:
        yield ImPeer(url=f"http://127.0.0.1:{port}", users=_users(tmp_path / "im"))
    finally:
        _services("down", env)


@pytest.fixture(name="fx_im")
async def fixture_im(fx_im_peer: ImPeer) -> AsyncIterator[ImClient]:
    async with ImClient(fx_im_peer.url) as client:
        yield client


@pytest.fixture(name="fx_auth")
def fixture_auth(fx_im_peer: ImPeer) -> ImAuthorization:
    return fx_im_peer.auth()


Deploy = Callable[..., Awaitable[str]]


@pytest.fixture(name="fx_deploy")
async def fixture_deploy(
    fx_im: ImClient, fx_auth: ImAuthorization
) -> AsyncIterator[Deploy]:
    """Create an infrastructure (asynchronously unless told otherwise); destroyed at teardown."""
    created: list[tuple[ImAuthorization, str]] = []

    async def deploy(template: str, *, auth: ImAuthorization | None = None,
                     asynchronous: bool = True) -> str:
        auth = auth or fx_auth
        inf_id = await fx_im.create(auth, assert_safe_for_im(template),
                                    asynchronous=asynchronous)
        created.append((auth, inf_id))
        return inf_id

    yield deploy
    for auth, inf_id in created:
        try:
            await fx_im.destroy(auth, inf_id)
        except ImError:  # already checked by the test, or IM is gone: nothing to leak
            pass

