"""The provider API harness: users of a real local issuer, HTTP helpers, stream reads."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from domain.providers import ProviderEvent, stream_id
from orchestrator.bootstrap import System
from tests.domain.providers.support import registry_tree
from tests.oidc_issuer import LocalIssuer

AUDIENCE = "orchestrator"
ADMIN_GROUP = "orchestrator-admins"
PROVIDER_ID = "cloud-example.openstack"
ML = "9a1f3c5e7b9d4f0a8c6e4b2d0f1a3c5e"  # the ml-research project of the example tree
CMS = "5b2e4d6f8a0c4e1b9d7f5a3c1e0b2d4f"  # the cms-analysis project


@dataclass
class User:
    issuer: LocalIssuer
    subject: str
    groups: list[str]

    @property
    def headers(self) -> dict[str, str]:
        token = self.issuer.mint({"sub": self.subject, "groups": self.groups,
                                  "scope": "openid profile email", "aud": AUDIENCE})
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


@dataclass
class Harness:
    system: System
    client: httpx.AsyncClient
    issuer: LocalIssuer
    feeder_topic: str

    def user(self, *groups: str) -> User:
        return User(self.issuer, f"user-{uuid.uuid4().hex[:8]}", list(groups))

    def admin(self) -> User:
        return self.user(ADMIN_GROUP)

    def tree(self) -> dict[str, Any]:
        """The example provider tree (2 regions, 5 flavours, 4 images, quotas), its identity
        provider being this test's issuer (group names are per issuer)."""
        tree = registry_tree()
        tree["identity_providers"][0]["endpoint"] = self.issuer.issuer
        return tree

    async def request(self, method: str, path: str, user: User | None = None,
                      **kwargs: Any) -> httpx.Response:
        headers = dict(user.headers) if user is not None else {}
        headers.update(kwargs.pop("headers", {}) or {})
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def events(self, provider_id: str = PROVIDER_ID) -> list[ProviderEvent]:
        recorded = await self.system.store.read_stream(stream_id(provider_id))
        return [self.system.registry.decode_recorded(r) for r in recorded]  # type: ignore[misc]

    async def eventually(self, probe: Callable[[], Awaitable[bool]], *, within: float = 30.0,
                         what: str = "condition") -> None:
        """Poll until ``probe`` holds (read models follow the log asynchronously)."""
        deadline = time.monotonic() + within
        while not await probe():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not hold within {within}s")
            await asyncio.sleep(0.05)

    async def get_when(self, path: str, user: User, check: Callable[[Any], bool],
                       what: str) -> Any:
        """GET ``path`` until its JSON body satisfies ``check``; returns the body."""
        body: list[Any] = [None]

        async def probe() -> bool:
            response = await self.request("GET", path, user)
            if response.status_code != 200:
                return False
            body[0] = response.json()
            return check(body[0])

        await self.eventually(probe, what=what)
        return body[0]
