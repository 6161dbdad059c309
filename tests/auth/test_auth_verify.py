"""Token verification against a real local OIDC issuer: every rejection is a clear
AuthenticationError, valid tokens become a Principal."""

from __future__ import annotations

import json
import logging
import time

import pytest

from api.auth import AuthenticationError, TrustedIssuer
from api.auth import verify as verify_module
from tests.oidc_issuer import LocalIssuer, b64url, encode_jws, tamper


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def rejected(authenticator, header: str | None) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate(header)
    return caught.value.message


# ---- header -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
async def test_missing_token_is_rejected(issuer, make_authenticator, header):
    auth = make_authenticator(issuer)
    assert await rejected(auth, header) == "Full authentication is required to access this resource"


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Basic YWxpY2U6c2VjcmV0", "Full authentication is required"),
        ("Bearer", "Full authentication is required"),
        ("Bearer    ", "Full authentication is required"),
        ("Bearer opaque-token-value", "not a signed JWT"),
        ("Bearer aaa.bbb", "not a signed JWT"),
        ("Bearer a.b.c.d.e", "not a signed JWT"),
        ("Bearer !!!.???.###", "not a signed JWT"),
        ("Bearer eyJub3QganNvbg.eyJhIjoxfQ.c2ln", "not a signed JWT"),  # header not JSON
        ("Bearer WzFd.eyJhIjoxfQ.c2ln", "not a signed JWT"),  # header a JSON array
    ],
)
async def test_malformed_authorization_header_is_rejected(
    issuer, make_authenticator, header, expected
):
    auth = make_authenticator(issuer)
    assert expected in await rejected(auth, header)
    assert issuer.jwks_requests == 0  # nothing was fetched for garbage


async def test_oversized_header_is_rejected_before_parsing(issuer, make_authenticator):
    auth = make_authenticator(issuer, max_token_bytes=1024)
    token = issuer.mint({"padding": "x" * 2000})
    assert "too large" in await rejected(auth, bearer(token))


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "BEARER ", "bEaReR\t", "Bearer"])
async def test_bearer_scheme_in_any_case_and_legacy_no_space_form(
    issuer, make_authenticator, scheme
):
    auth = make_authenticator(issuer)
    principal = await auth.authenticate(scheme + issuer.mint())
    assert principal.subject == "alice"


# ---- algorithm ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_rejected(issuer, make_authenticator, alg):
    auth = make_authenticator(issuer)
    token = issuer.mint(alg=alg, header={"kid": issuer.key_for("RS256").kid})
    assert "is not allowed" in await rejected(auth, bearer(token))


async def test_alg_none_without_signature_segment_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    token = encode_jws({"alg": "none"}, issuer.claims())
    assert token.endswith(".")
    assert "'none' is not allowed" in await rejected(auth, bearer(token))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_signed_with_the_issuers_public_key_is_rejected(issuer, make_authenticator, alg):
    # The classic confusion attack: the public PEM (or its JWK JSON) used as HMAC secret.
    auth = make_authenticator(issuer)
    rsa_key = issuer.key_for("RS256")
    for secret in (rsa_key.public_pem(), str(rsa_key.public_jwk()).encode()):
        token = issuer.mint(alg=alg, key=rsa_key, hmac_secret=secret)
        assert f"'{alg}' is not allowed" in await rejected(auth, bearer(token))


async def test_algorithm_outside_the_configured_allow_list_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer, algorithms=("RS256",))
    assert "'ES256' is not allowed" in await rejected(auth, bearer(issuer.mint(alg="ES256")))


async def test_rsa_kid_with_ec_algorithm_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    ec_key = issuer.key_for("ES256")
    rsa_kid = issuer.key_for("RS256").kid
    token = issuer.mint(alg="ES256", key=ec_key, header={"kid": rsa_kid})
    assert "does not match the token algorithm" in await rejected(auth, bearer(token))


async def test_ec_kid_with_rsa_algorithm_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    rsa_key = issuer.key_for("RS256")
    token = issuer.mint(alg="RS256", key=rsa_key, header={"kid": issuer.key_for("ES256").kid})
    assert "does not match the token algorithm" in await rejected(auth, bearer(token))


async def test_ec_curve_must_match_the_algorithm(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    p256 = issuer.key_for("ES256")
    p384 = issuer.add_key("EC-P384")
    # ES384 header but the kid is a P-256 key (signature made with the P-384 key).
    token = issuer.mint(alg="ES384", key=p384, header={"kid": p256.kid})
    assert "does not match the token algorithm" in await rejected(auth, bearer(token))


async def test_jwk_alg_member_pins_the_algorithm(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    pinned = issuer.add_key("RSA", alg="RS512")
    assert (await auth.authenticate(bearer(issuer.mint(alg="RS512", key=pinned)))).subject
    token = issuer.mint(alg="RS256", key=pinned)
    assert "does not match the token algorithm" in await rejected(auth, bearer(token))


async def test_pkcs1_signature_presented_as_pss_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    rs = issuer.mint(alg="RS256")
    _header, payload, signature = rs.split(".")
    forged_header = b64url(
        json.dumps({"alg": "PS256", "typ": "JWT", "kid": issuer.key_for("RS256").kid}).encode()
    )
    token = f"{forged_header}.{payload}.{signature}"
    assert "signature verification failed" in await rejected(auth, bearer(token))


async def test_critical_header_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    token = issuer.mint(header={"crit": ["exp"], "exp": 1})
    assert "critical header" in await rejected(auth, bearer(token))


# ---- time claims -------------------------------------------------------------------------


async def test_expired_token_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    now = int(time.time())
    token = issuer.mint({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})
    assert await rejected(auth, bearer(token)) == "Access token expired"


async def test_expiry_within_leeway_is_accepted(issuer, make_authenticator):
    auth = make_authenticator(issuer, leeway_s=120)
    now = int(time.time())
    token = issuer.mint({"iat": now - 600, "nbf": now - 600, "exp": now - 30})
    assert (await auth.authenticate(bearer(token))).subject == "alice"


async def test_not_yet_valid_token_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    now = int(time.time())
    token = issuer.mint({"nbf": now + 3600, "exp": now + 7200})
    assert "not yet valid" in await rejected(auth, bearer(token))


async def test_token_issued_in_the_future_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    now = int(time.time())
    token = issuer.mint({"iat": now + 3600, "nbf": None, "exp": now + 7200})
    assert "issued in the future" in await rejected(auth, bearer(token))


async def test_token_without_exp_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    assert "missing exp" in await rejected(auth, bearer(issuer.mint({"exp": None})))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_non_numeric_time_claims_are_rejected(issuer, make_authenticator, claim):
    auth = make_authenticator(issuer)
    value = str(int(time.time()) + (600 if claim == "exp" else -60))
    token = issuer.mint({claim: value})
    assert f"{claim} is not a number" in await rejected(auth, bearer(token))


async def test_token_without_subject_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    assert "missing sub" in await rejected(auth, bearer(issuer.mint({"sub": None})))
    assert "missing sub" in await rejected(auth, bearer(issuer.mint({"sub": ""})))


# ---- issuer and audience -----------------------------------------------------------------


async def test_untrusted_issuer_is_rejected_without_contacting_it(make_issuer, make_authenticator):
    trusted, untrusted = make_issuer(), make_issuer()
    auth = make_authenticator(trusted)
    assert "untrusted issuer" in await rejected(auth, bearer(untrusted.mint()))
    assert untrusted.discovery_requests == 0 and untrusted.jwks_requests == 0


async def test_issuer_must_match_exactly_including_trailing_slash(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    token = issuer.mint({"iss": issuer.issuer + "/"})
    assert "untrusted issuer" in await rejected(auth, bearer(token))


async def test_token_without_issuer_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    assert "missing iss" in await rejected(auth, bearer(issuer.mint({"iss": None})))


async def test_wrong_audience_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(
        trusted=[TrustedIssuer(issuer=issuer.issuer, audience="orchestrator")]
    )
    assert "Invalid audience" in await rejected(auth, bearer(issuer.mint({"aud": "other-service"})))
    token = issuer.mint({"aud": ["a", "b"]})
    assert "Invalid audience" in await rejected(auth, bearer(token))


async def test_missing_audience_is_rejected_when_configured(issuer, make_authenticator):
    auth = make_authenticator(
        trusted=[TrustedIssuer(issuer=issuer.issuer, audience="orchestrator")]
    )
    assert "missing aud" in await rejected(auth, bearer(issuer.mint()))


async def test_configured_audience_accepted_as_string_or_in_list(issuer, make_authenticator):
    auth = make_authenticator(
        trusted=[TrustedIssuer(issuer=issuer.issuer, audience="orchestrator")]
    )
    for aud in ("orchestrator", ["dashboard", "orchestrator"]):
        assert (await auth.authenticate(bearer(issuer.mint({"aud": aud})))).subject == "alice"


async def test_audience_is_ignored_when_not_configured(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    assert (await auth.authenticate(bearer(issuer.mint({"aud": "anything"})))).subject == "alice"


# ---- keys and signatures -----------------------------------------------------------------


async def test_unknown_kid_is_rejected_after_one_refresh(issuer, make_authenticator, clock):
    auth = make_authenticator(issuer)
    await auth.authenticate(bearer(issuer.mint()))  # keys cached
    assert issuer.jwks_requests == 1
    clock.advance(auth.settings.jwks_min_refresh_interval_s + 1)
    stranger = issuer.add_key("RSA", publish=False)
    assert "unknown signing key" in await rejected(auth, bearer(issuer.mint(key=stranger)))
    assert issuer.jwks_requests == 2  # refreshed once, still unknown


async def test_tampered_payload_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    for alg in ("RS256", "ES256", "PS256"):
        token = tamper(issuer.mint({"groups": ["users"]}, alg=alg), sub="bob", groups=["admins"])
        assert "signature verification failed" in await rejected(auth, bearer(token))


async def test_tampered_signature_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    header, payload, signature = issuer.mint().split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert "signature verification failed" in await rejected(
        auth, bearer(f"{header}.{payload}.{flipped}")
    )


async def test_attackers_key_under_a_published_kid_is_rejected(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    published_kid = issuer.key_for("RS256").kid
    attacker = issuer.add_key("RSA", publish=False)
    token = issuer.mint(key=attacker, header={"kid": published_kid})
    assert "signature verification failed" in await rejected(auth, bearer(token))


async def test_token_claiming_issuer_b_signed_with_issuer_a_key_is_rejected(
    make_issuer, make_authenticator, clock
):
    a, b = make_issuer(), make_issuer()
    auth = make_authenticator(a, b)
    # A's key and kid: B's JWKS has no such kid.
    token = a.mint({"iss": b.issuer})
    assert "unknown signing key" in await rejected(auth, bearer(token))
    # Colliding kid strings in both issuers must not mix keys up.
    a_shared = a.add_key("RSA", kid="shared")
    b.add_key("RSA", kid="shared")
    clock.advance(auth.settings.jwks_min_refresh_interval_s + 1)  # let B's new key be fetched
    token = a.mint({"iss": b.issuer}, key=a_shared)
    assert "signature verification failed" in await rejected(auth, bearer(token))
    # Without kid, B's keys are tried and none verifies A's signature.
    token = a.mint({"iss": b.issuer}, header={"kid": None})
    assert "signature verification failed" in await rejected(auth, bearer(token))
    # ... while the same token for A's own issuer is fine.
    assert (await auth.authenticate(bearer(a.mint(key=a_shared)))).issuer == a.issuer


async def test_small_rsa_keys_are_not_used(make_issuer, make_authenticator):
    weak = make_issuer(key_kinds=(), rsa_bits=1024)
    weak.add_key("RSA")
    auth = make_authenticator(weak)
    assert "does not match" in await rejected(auth, bearer(weak.mint()))


# ---- valid tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"])
async def test_valid_tokens_pass(make_issuer, make_authenticator, alg):
    idp = make_issuer(key_kinds=("RSA", "EC-P256", "EC-P384"))
    auth = make_authenticator(idp)
    token = idp.mint(
        {
            "sub": "0f1e2d3c",
            "name": "Alice Liddell",
            "email": "alice@example.org",
            "preferred_username": "alice",
        },
        alg=alg,
    )
    principal = await auth.authenticate(bearer(token))
    assert principal.issuer == idp.issuer
    assert principal.subject == "0f1e2d3c"
    assert principal.name == "Alice Liddell"
    assert principal.email == "alice@example.org"
    assert principal.preferred_username == "alice"
    assert principal.created_by == f"0f1e2d3c@{idp.issuer}"


async def test_es512_and_ps512_pass_when_allowed(make_issuer, make_authenticator):
    idp = make_issuer(key_kinds=("RSA", "EC-P521"))
    auth = make_authenticator(idp, algorithms=("ES512", "PS512"))
    for alg in ("ES512", "PS512"):
        assert (await auth.authenticate(bearer(idp.mint(alg=alg)))).subject == "alice"


async def test_token_without_kid_uses_a_compatible_key(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    for alg in ("RS256", "ES256"):
        token = issuer.mint(alg=alg, header={"kid": None})
        assert (await auth.authenticate(bearer(token))).subject == "alice"


async def test_issuer_with_path_is_supported(make_issuer, make_authenticator):
    idp = make_issuer(path="realms/infn")
    auth = make_authenticator(idp)
    assert idp.issuer.endswith("/realms/infn")
    assert (await auth.authenticate(bearer(idp.mint()))).issuer == idp.issuer


async def test_token_is_never_logged_or_echoed(issuer, make_authenticator, caplog):
    auth = make_authenticator(issuer)
    caplog.set_level(logging.DEBUG)
    good = issuer.mint()
    bad = tamper(issuer.mint(), sub="mallory")
    await auth.authenticate("Bearer" + good)  # legacy form logs a deprecation warning
    message = await rejected(auth, bearer(bad))
    for token in (good, bad):
        for part in token.split("."):
            assert part not in caplog.text
            assert part not in message
    assert "deprecated" in caplog.text


async def test_module_level_authenticate_uses_the_configured_authenticator(issuer):
    from api.auth import AuthSettings, authenticate, configure

    verify_module._default = None
    with pytest.raises(RuntimeError):
        await authenticate(bearer(issuer.mint()))
    authenticator = configure(AuthSettings(issuers=(TrustedIssuer(issuer=issuer.issuer),)))
    try:
        assert (await authenticate(bearer(issuer.mint()))).subject == "alice"
        with pytest.raises(AuthenticationError):
            await authenticate(None)
    finally:
        await authenticator.aclose()
        verify_module._default = None


def test_local_issuer_is_usable_without_fixtures():
    with LocalIssuer(key_kinds=("EC",)) as idp:
        assert idp.issuer.startswith("http://127.0.0.1:")
        assert idp.key_for("ES256").kty == "EC"
