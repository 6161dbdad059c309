"""The encrypted credential store against the real Postgres, and token refresh against a
real local OIDC issuer (tests/oidc_issuer.LocalIssuer with its token endpoint)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from handlers.credentials import (
    USER_TOKEN,
    CredentialCapture,
    CredentialKeys,
    CredentialStore,
    CredentialUnavailable,
    DeploymentCredentials,
    OidcTokenRefresher,
    TokenSet,
)
from orchestrator.settings import database_engine
from tests.oidc_issuer import LocalIssuer

DEPLOYMENT = "0190f0f0-0000-7000-8000-000000000001"


@pytest.fixture(name="engine")
async def fixture_engine(fx_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = database_engine(fx_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(name="issuer", scope="module")
def fixture_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(key_kinds=("RSA",)) as issuer:
        yield issuer


async def raw_row(engine: AsyncEngine, owner_id: str, kind: str = USER_TOKEN) -> dict:
    async with engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT key_id, nonce, ciphertext, expires_at FROM credentials"
            " WHERE owner_id = :o AND kind = :k"), {"o": owner_id, "k": kind})).first()
    assert row is not None
    return dict(row._mapping)


async def test_put_get_delete_round_trip_and_the_table_holds_only_ciphertext(
        engine: AsyncEngine) -> None:
    keys = CredentialKeys.parse(CredentialKeys.generate("k1"))
    store = CredentialStore(engine, keys)
    secret = b"the-secret-value-0123456789"
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    await store.put("owner-a", "im", secret, expires_at=expiry)

    assert await store.get("owner-a", "im") == secret
    row = await raw_row(engine, "owner-a", "im")
    assert row["key_id"] == "k1"
    assert secret not in bytes(row["ciphertext"])
    assert row["expires_at"] == expiry

    await store.put("owner-a", "im", b"replaced")
    assert await store.get("owner-a", "im") == b"replaced"
    assert await store.get("owner-a", "other") is None
    assert await store.delete("owner-a", "im") == 1
    assert await store.get("owner-a", "im") is None
    assert await store.delete("owner-a", "im") == 0


async def test_rotation_old_keys_still_open_and_reseal_moves_rows_to_the_current_key(
        engine: AsyncEngine) -> None:
    old = CredentialKeys.generate("old")
    new = CredentialKeys.generate("new")
    await CredentialStore(engine, CredentialKeys.parse(old)).put("owner-r", "im", b"v1")

    rotated = CredentialStore(engine, CredentialKeys.parse(f"{new},{old}"))
    assert await rotated.get("owner-r", "im") == b"v1"
    assert (await raw_row(engine, "owner-r", "im"))["key_id"] == "old"
    assert await rotated.reseal() == 1
    assert (await raw_row(engine, "owner-r", "im"))["key_id"] == "new"
    assert await rotated.reseal() == 0

    only_new = CredentialStore(engine, CredentialKeys.parse(new))
    assert await only_new.get("owner-r", "im") == b"v1"


async def test_a_lost_key_fails_cleanly_without_leaking_anything(engine: AsyncEngine) -> None:
    entry = CredentialKeys.generate("lost")
    await CredentialStore(engine, CredentialKeys.parse(entry)).put_tokens(
        DEPLOYMENT, TokenSet(access_token="access-token-value", refresh_token="refresh-value"))
    other = CredentialStore(engine, CredentialKeys.parse(CredentialKeys.generate("other")))
    with pytest.raises(CredentialUnavailable) as error:
        await other.get_tokens(DEPLOYMENT)
    message = str(error.value)
    assert "'lost'" in message and "not configured" in message
    assert "access-token-value" not in message and entry.split(":", 1)[1] not in message

    # No key at all: writes and reads both refuse with the configuration's name.
    unkeyed = CredentialStore(engine, None)
    with pytest.raises(CredentialUnavailable, match="ORCH_CREDENTIAL_KEYS"):
        await unkeyed.put("x", "im", b"v")
    with pytest.raises(CredentialUnavailable, match="ORCH_CREDENTIAL_KEYS"):
        await DeploymentCredentials(unkeyed, None).access_token(DEPLOYMENT)


async def test_a_sealed_value_moved_to_another_row_does_not_open(engine: AsyncEngine) -> None:
    store = CredentialStore(engine, CredentialKeys.parse(CredentialKeys.generate("k")))
    await store.put("owner-1", "im", b"secret of owner 1")
    await store.put("owner-2", "im", b"secret of owner 2")
    async with engine.begin() as conn:
        await conn.execute(text(
            "UPDATE credentials SET nonce = src.nonce, ciphertext = src.ciphertext"
            " FROM credentials src WHERE src.owner_id = 'owner-1' AND credentials.owner_id ="
            " 'owner-2'"))
    with pytest.raises(CredentialUnavailable, match="does not open"):
        await store.get("owner-2", "im")


def test_key_configuration_errors_name_the_key_id_never_the_key() -> None:
    short = base64.b64encode(b"0123456789").decode()
    with pytest.raises(ValueError, match="'k1' must be 16, 24 or 32 bytes") as error:
        CredentialKeys.parse(f"k1:{short}")
    assert short not in str(error.value)
    with pytest.raises(ValueError, match="not base64"):
        CredentialKeys.parse("k1:***")
    with pytest.raises(ValueError, match="given twice"):
        entry = CredentialKeys.generate("k1")
        CredentialKeys.parse(f"{entry},{entry}")
    with pytest.raises(ValueError, match="keyid:base64key"):
        CredentialKeys.parse("justakey")
    keys = CredentialKeys.parse(f"{CredentialKeys.generate('a')}, {CredentialKeys.generate('b')}")
    assert keys.current_id == "a" and keys.ids == ("a", "b")


async def test_capture_then_access_token_returns_the_users_token(
        engine: AsyncEngine, issuer: LocalIssuer) -> None:
    store = CredentialStore(engine, CredentialKeys.parse(CredentialKeys.generate("k")))
    token = issuer.mint({"sub": "alice"}, lifetime=3600)
    await CredentialCapture(store).capture(DEPLOYMENT, token)
    credentials = DeploymentCredentials(store, None)
    assert await credentials.access_token(DEPLOYMENT) == token
    stored = await store.get_tokens(DEPLOYMENT)
    assert stored is not None and stored.issuer == issuer.issuer
    assert stored.refresh_token is None and stored.expires_at is not None
    # Nothing captured: None (after the capture grace).
    assert await DeploymentCredentials(store, None, capture_grace=0.1).access_token(
        "0190f0f0-0000-7000-8000-00000000ffff") is None


async def test_an_expiring_token_is_refreshed_at_the_issuer_and_the_new_one_kept(
        engine: AsyncEngine, issuer: LocalIssuer) -> None:
    store = CredentialStore(engine, CredentialKeys.parse(CredentialKeys.generate("k")))
    refresh_token = issuer.issue_refresh_token({"sub": "alice"})
    expiring = issuer.mint({"sub": "alice"}, lifetime=60)  # within the 5-minute margin
    await CredentialCapture(store).capture(DEPLOYMENT, expiring, refresh_token=refresh_token)
    refresher = OidcTokenRefresher(client_id="orchestrator-client", client_secret="s3cret")
    try:
        credentials = DeploymentCredentials(store, refresher)
        fresh = await credentials.access_token(DEPLOYMENT)
        assert fresh is not None and fresh != expiring
        stored = await store.get_tokens(DEPLOYMENT)
        assert stored is not None and stored.access_token == fresh
        # The issuer rotated the refresh token; the rotated one was kept and works.
        assert stored.refresh_token not in (None, refresh_token)
        assert issuer.token_clients[-1] == "orchestrator-client"
        again = await credentials.refresh_after_rejection(DEPLOYMENT)
        assert again is not None and again not in (fresh, expiring)
    finally:
        await refresher.aclose()


async def test_refresh_failures_are_clean_reasons(engine: AsyncEngine,
                                                  issuer: LocalIssuer) -> None:
    store = CredentialStore(engine, CredentialKeys.parse(CredentialKeys.generate("k")))
    refresher = OidcTokenRefresher(client_id="orchestrator-client")
    try:
        credentials = DeploymentCredentials(store, refresher)
        # Expired and nothing to refresh with.
        expired = issuer.mint({"sub": "alice", "exp": int(
            (datetime.now(UTC) - timedelta(minutes=1)).timestamp())})
        await CredentialCapture(store).capture(DEPLOYMENT, expired)
        with pytest.raises(CredentialUnavailable, match="expired and no refresh token"):
            await credentials.access_token(DEPLOYMENT)
        with pytest.raises(CredentialUnavailable, match="no refresh token was captured"):
            await credentials.refresh_after_rejection(DEPLOYMENT)

        # A refresh token the issuer does not know (revoked).
        await CredentialCapture(store).capture(DEPLOYMENT, expired,
                                               refresh_token="rt-revoked-value")
        with pytest.raises(CredentialUnavailable) as error:
            await credentials.access_token(DEPLOYMENT)
        assert "refused" in str(error.value) and "invalid_grant" in str(error.value)
        assert "rt-revoked-value" not in str(error.value)

        # The issuer is down.
        await CredentialCapture(store).capture(
            DEPLOYMENT, expired, refresh_token=issuer.issue_refresh_token({"sub": "alice"}))
        issuer.token_status = 503
        try:
            with pytest.raises(CredentialUnavailable, match="503"):
                await credentials.access_token(DEPLOYMENT)
        finally:
            issuer.token_status = 200
    finally:
        await refresher.aclose()


async def test_capture_exchanges_the_token_for_a_refresh_token_when_configured(
        engine: AsyncEngine, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    store = CredentialStore(engine, CredentialKeys.parse(CredentialKeys.generate("k")))
    exchanger = OidcTokenRefresher(client_id="orchestrator-client")
    capture = CredentialCapture(store, exchanger)
    expiring = issuer.mint({"sub": "alice", "groups": ["g1"]}, lifetime=60)
    await capture.capture(DEPLOYMENT, expiring)
    stored = await store.get_tokens(DEPLOYMENT)
    assert stored is not None and stored.access_token == expiring
    assert stored.refresh_token is not None and stored.refresh_token.startswith("rt-")
    # The exchanged refresh token works: the expiring access token is refreshed.
    fresh = await DeploymentCredentials(store, exchanger).access_token(DEPLOYMENT)
    assert fresh not in (None, expiring)

    # The issuer refuses the exchange: the access token alone is kept, with a warning that
    # names the refusal and not the token.
    issuer.token_status = 503
    try:
        other = issuer.mint({"sub": "alice"}, lifetime=3600)
        await capture.capture(DEPLOYMENT, other)
    finally:
        issuer.token_status = 200
    stored = await store.get_tokens(DEPLOYMENT)
    assert stored is not None and stored.access_token == other
    assert stored.refresh_token is None
    [warning] = [r for r in caplog.records if "no refresh token" in r.getMessage()]
    assert "503" in warning.getMessage() and other not in warning.getMessage()
