"""Key discovery, caching, rotation and the refresh rate limit, counted at a real issuer.

Time for the cache is a ManualClock, so "within the interval" is exact, not a race."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from api.auth import AuthenticationError, KeysUnavailableError, TrustedIssuer


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_key_rotation_is_picked_up_without_restart(issuer, make_authenticator, clock):
    auth = make_authenticator(issuer)
    old = issuer.key_for("RS256")
    assert (await auth.authenticate(bearer(issuer.mint()))).subject == "alice"
    assert issuer.jwks_requests == 1

    new = issuer.rotate("RSA")
    assert new.kid != old.kid and old.kid not in {k.kid for k in issuer.keys}
    clock.advance(auth.settings.jwks_min_refresh_interval_s + 1)

    # The new kid is unknown to the cache: one refresh, then it verifies.
    assert (await auth.authenticate(bearer(issuer.mint(key=new)))).subject == "alice"
    assert issuer.jwks_requests == 2
    # The old key was dropped with the refresh: its tokens no longer verify.
    with pytest.raises(AuthenticationError, match="unknown signing key"):
        await auth.authenticate(bearer(issuer.mint(key=old)))
    assert issuer.jwks_requests == 2  # and that attempt was rate-limited, not fetched
    # Discovery is cached as well.
    assert issuer.discovery_requests == 1


async def test_unknown_kids_within_the_interval_cause_at_most_one_refetch(
    issuer, make_authenticator, clock
):
    auth = make_authenticator(issuer)
    await auth.authenticate(bearer(issuer.mint()))
    assert issuer.jwks_requests == 1
    clock.advance(auth.settings.jwks_min_refresh_interval_s + 1)

    def random_kid_token() -> str:
        return issuer.mint(header={"kid": secrets.token_hex(8)})

    for _ in range(20):  # one after the other
        with pytest.raises(AuthenticationError, match="unknown signing key"):
            await auth.authenticate(bearer(random_kid_token()))
    results = await asyncio.gather(  # and all at once
        *(auth.authenticate(bearer(random_kid_token())) for _ in range(50)),
        return_exceptions=True,
    )
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert issuer.jwks_requests == 2

    # Known keys keep working meanwhile, without fetching.
    assert (await auth.authenticate(bearer(issuer.mint()))).subject == "alice"
    assert issuer.jwks_requests == 2

    # Once the interval has passed, one more refresh is allowed, and only one.
    clock.advance(auth.settings.jwks_min_refresh_interval_s + 1)
    for _ in range(10):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(bearer(random_kid_token()))
    assert issuer.jwks_requests == 3


async def test_concurrent_first_requests_share_one_fetch(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    tokens = [
        issuer.mint({"sub": f"user-{i}"}, alg="RS256" if i % 2 else "ES256") for i in range(30)
    ]
    principals = await asyncio.gather(*(auth.authenticate(bearer(t)) for t in tokens))
    assert {p.subject for p in principals} == {f"user-{i}" for i in range(30)}
    assert issuer.discovery_requests == 1
    assert issuer.jwks_requests == 1


async def test_a_cancelled_request_does_not_abort_the_shared_fetch(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    first = asyncio.ensure_future(auth.authenticate(bearer(issuer.mint())))
    second = asyncio.ensure_future(auth.authenticate(bearer(issuer.mint())))
    await asyncio.sleep(0)  # one loop turn: both tasks run up to the shared fetch
    assert auth._keys._issuers[issuer.issuer].inflight is not None
    first.cancel()
    assert (await second).subject == "alice"
    assert issuer.jwks_requests == 1


async def test_keys_are_refetched_after_the_ttl(issuer, make_authenticator, clock):
    auth = make_authenticator(issuer)
    await auth.authenticate(bearer(issuer.mint()))
    clock.advance(auth.settings.jwks_cache_ttl_s - 1)
    await auth.authenticate(bearer(issuer.mint()))
    assert issuer.jwks_requests == 1
    clock.advance(2)
    await auth.authenticate(bearer(issuer.mint()))
    assert issuer.jwks_requests == 2


async def test_issuer_down_at_start_then_recovering(issuer, make_authenticator, clock):
    auth = make_authenticator(issuer)
    issuer.jwks_status = 503
    with pytest.raises(KeysUnavailableError):
        await auth.authenticate(bearer(issuer.mint()))
    # Rate limit holds for failures too: no retry storm against a down issuer.
    for _ in range(5):
        with pytest.raises(KeysUnavailableError):
            await auth.authenticate(bearer(issuer.mint()))
    assert issuer.jwks_requests == 1

    issuer.jwks_status = 200
    clock.advance(auth.settings.jwks_min_refresh_interval_s + 1)
    assert (await auth.authenticate(bearer(issuer.mint()))).subject == "alice"
    assert issuer.jwks_requests == 2


async def test_stale_keys_are_kept_when_a_refresh_fails(issuer, make_authenticator, clock):
    auth = make_authenticator(issuer)
    await auth.authenticate(bearer(issuer.mint()))
    issuer.jwks_status = 500
    clock.advance(auth.settings.jwks_cache_ttl_s + 1)
    assert (await auth.authenticate(bearer(issuer.mint()))).subject == "alice"
    assert issuer.jwks_requests == 2


async def test_discovery_document_for_another_issuer_is_refused(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    issuer.discovery_overrides = {"issuer": "https://evil.example.org"}
    with pytest.raises(KeysUnavailableError):
        await auth.authenticate(bearer(issuer.mint()))
    assert issuer.jwks_requests == 0


async def test_discovery_pointing_jwks_to_plain_http_elsewhere_is_refused(
    issuer, make_authenticator
):
    auth = make_authenticator(issuer)
    issuer.discovery_overrides = {"jwks_uri": "http://keys.example.org/jwks"}
    with pytest.raises(KeysUnavailableError):
        await auth.authenticate(bearer(issuer.mint()))


async def test_jwks_url_override_skips_discovery(issuer, make_authenticator):
    auth = make_authenticator(
        trusted=[TrustedIssuer(issuer=issuer.issuer, jwks_url=issuer.jwks_url)]
    )
    issuer.discovery_status = 500
    assert (await auth.authenticate(bearer(issuer.mint()))).subject == "alice"
    assert issuer.discovery_requests == 0
    assert issuer.jwks_requests == 1


@pytest.mark.parametrize(
    "document",
    [
        {"keys": "nope"},
        {"no_keys": []},
        {"keys": []},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]},
    ],
)
async def test_unusable_jwks_documents_give_keys_unavailable(issuer, make_authenticator, document):
    auth = make_authenticator(issuer)
    issuer.jwks_document = document
    with pytest.raises(KeysUnavailableError):
        await auth.authenticate(bearer(issuer.mint()))


async def test_encryption_keys_and_symmetric_keys_are_ignored(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    signing = issuer.key_for("RS256")
    enc = {**issuer.add_key("RSA", publish=False).public_jwk(), "use": "enc", "kid": "enc-1"}
    issuer.jwks_document = {
        "keys": [enc, {"kty": "oct", "k": "c2VjcmV0", "kid": "oct-1"}, signing.public_jwk()]
    }
    assert (await auth.authenticate(bearer(issuer.mint(key=signing)))).subject == "alice"
    with pytest.raises(AuthenticationError, match="unknown signing key"):
        await auth.authenticate(bearer(issuer.mint(header={"kid": "enc-1"})))
