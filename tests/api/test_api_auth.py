"""The JWT attack matrix at the HTTP level: every forged, stale or misdirected token is a 401
in the legacy error shape with an RFC 6750 challenge; key rotation at the issuer works
without a restart. Tokens come from real OIDC issuers on loopback (tests/oidc_issuer.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.api.support import AUDIENCE, BASE, Harness, assert_legacy_error
from tests.oidc_issuer import tamper


def claims(api: Harness, **overrides: object) -> dict[str, object]:
    values: dict[str, object] = {"sub": "mallory", "aud": AUDIENCE, "groups": ["g1"]}
    values.update(overrides)
    return values


ATTACKS: dict[str, Callable[[Harness], str | None]] = {
    "no token": lambda api: None,
    "empty bearer": lambda api: "",
    "not a jwt": lambda api: "opaque-access-token",
    "alg none": lambda api: api.issuer.mint(claims(api), alg="none"),
    "HS256 signed with the issuer's public key": lambda api: api.issuer.mint(
        claims(api), alg="HS256", hmac_secret=api.issuer.key_for("RS256").public_pem(),
        header={"kid": api.issuer.key_for("RS256").kid}),
    "expired": lambda api: api.issuer.mint(claims(
        api, exp=int(time.time()) - 600, iat=int(time.time()) - 900,
        nbf=int(time.time()) - 900)),
    "not yet valid": lambda api: api.issuer.mint(claims(api, nbf=int(time.time()) + 3600)),
    "wrong issuer": lambda api: api.issuer.mint(claims(api, iss="https://evil.example/")),
    "wrong audience": lambda api: api.issuer.mint(claims(api, aud="someone-else")),
    "no audience": lambda api: api.issuer.mint(claims(api, aud=None)),
    "unknown kid": lambda api: api.issuer.mint(
        claims(api), key=api.issuer.add_key("RSA", publish=False)),
    "tampered payload": lambda api: tamper(api.issuer.mint(claims(api)), sub="admin",
                                           groups=["orchestrator-admins"]),
    "second issuer's token signed with the first issuer's key": lambda api:
        api.second_issuer.mint(claims(api), key=api.issuer.key_for("RS256")),
    "no subject": lambda api: api.issuer.mint(claims(api, sub=None)),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_every_attack_is_a_legacy_401(api: Harness, attack: str) -> None:
    token = ATTACKS[attack](api)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    for method, path in (("GET", "/deployments"), ("GET", "/configuration"),
                         ("POST", "/deployments"), ("DELETE", "/deployments/x"),
                         ("GET", "/deployments/x/resources")):
        response = await api.client.request(method, BASE + path, headers=headers,
                                            json={} if method == "POST" else None)
        body = assert_legacy_error(response, 401)
        assert body["title"] == "Unauthorized"
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="oauth"')
        if token:
            assert 'error="invalid_token"' in challenge
        assert token is None or not token or token not in response.text


async def test_valid_tokens_of_both_issuers_pass(api: Harness) -> None:
    for issuer, audience in ((api.issuer, AUDIENCE), (api.second_issuer, None)):
        for alg in ("RS256", "ES256"):
            token = issuer.mint(claims(api, aud=audience), alg=alg)
            response = await api.client.get(f"{BASE}/deployments",
                                            headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, (issuer.issuer, alg, response.text)


async def test_key_rotation_needs_no_restart(api: Harness) -> None:
    before = api.issuer.mint(claims(api))
    assert (await api.client.get(f"{BASE}/deployments", headers={
        "Authorization": f"Bearer {before}"})).status_code == 200
    api.issuer.rotate("RSA")
    after = api.issuer.mint(claims(api))  # signed with the new key, a kid never seen
    response = await api.client.get(f"{BASE}/deployments",
                                    headers={"Authorization": f"Bearer {after}"})
    assert response.status_code == 200, response.text


async def test_scopes_are_checked_after_authentication(api: Harness) -> None:
    no_profile = api.issuer.mint(claims(api, scope="openid offline_access"))
    response = await api.client.get(f"{BASE}/deployments",
                                    headers={"Authorization": f"Bearer {no_profile}"})
    body = assert_legacy_error(response, 403)
    assert 'scope="openid profile"' in body["message"]
    # An anonymous request with a broken body is still a 401 (authentication comes first).
    anonymous = await api.client.post(f"{BASE}/deployments", content=b"{broken",
                                      headers={"Content-Type": "application/json"})
    assert_legacy_error(anonymous, 401)


async def test_anonymous_endpoints(api: Harness) -> None:
    for path in ("/", "/info", "/healthz"):
        assert (await api.client.get(BASE + path)).status_code == 200
