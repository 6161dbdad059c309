"""Fixtures for auth tests: real local OIDC issuers and authenticators wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from api.auth import Authenticator, AuthSettings, JwksCache, TrustedIssuer
from tests.oidc_issuer import LocalIssuer


class ManualClock:
    """Monotonic clock for the JWKS cache that only moves when a test says so."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make_issuer() -> Iterator[Callable[..., LocalIssuer]]:
    """Factory: `make_issuer(path="", key_kinds=("RSA", "EC"))` -> a running LocalIssuer."""
    started: list[LocalIssuer] = []

    def factory(**kwargs: Any) -> LocalIssuer:
        issuer = LocalIssuer(**kwargs).start()
        started.append(issuer)
        return issuer

    yield factory
    for issuer in started:
        issuer.stop()


@pytest.fixture
def issuer(make_issuer: Callable[..., LocalIssuer]) -> LocalIssuer:
    return make_issuer()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def make_authenticator(clock: ManualClock) -> AsyncIterator[Callable[..., Authenticator]]:
    """Factory: `make_authenticator(*local_issuers, trusted=None, **AuthSettings fields)`.

    Trusts each given LocalIssuer with default options, or exactly `trusted` when given.
    The JWKS cache runs on the test's ManualClock."""
    created: list[Authenticator] = []

    def factory(
        *issuers: LocalIssuer, trusted: list[TrustedIssuer] | None = None, **overrides: Any
    ) -> Authenticator:
        trusted_issuers = (
            tuple(trusted)
            if trusted is not None
            else tuple(TrustedIssuer(issuer=i.issuer) for i in issuers)
        )
        settings = AuthSettings(issuers=trusted_issuers, **overrides)
        authenticator = Authenticator(settings, keys=JwksCache(settings, clock=clock))
        created.append(authenticator)
        return authenticator

    yield factory
    for authenticator in created:
        await authenticator.aclose()
