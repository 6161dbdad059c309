"""AuthSettings defaults and validation."""

from __future__ import annotations

import msgspec
import pytest

from api.auth import DEFAULT_ALGORITHMS, AuthSettings, TrustedIssuer


def test_defaults():
    settings = AuthSettings()
    assert settings.algorithms == ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
    assert settings.algorithms == DEFAULT_ALGORITHMS
    assert settings.required_scopes == ("openid", "profile")
    assert settings.mutation_scopes == ("offline_access", "fts:submit-transfer")
    assert settings.group_claims == ("groups", "wlcg.groups")
    assert settings.group_visibility is False
    assert settings.opa_url is None
    assert TrustedIssuer(issuer="https://iam.example.org/").admin_group == "orchestrator-admins"


def test_loading_from_a_mapping():
    settings = msgspec.convert(
        {
            "issuers": [
                {"issuer": "https://iam.cloud.infn.it/", "audience": "orchestrator"},
                {"issuer": "https://aai.egi.eu/auth/realms/egi", "admin_group": "admins"},
            ],
            "algorithms": ["RS256", "ES256"],
            "group_visibility": True,
        },
        AuthSettings,
    )
    assert settings.issuer("https://iam.cloud.infn.it/").audience == "orchestrator"
    assert settings.issuer("https://iam.cloud.infn.it") is None  # exact match only
    assert settings.issuer("https://aai.egi.eu/auth/realms/egi").admin_group == "admins"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "none", "None", "RSA-OAEP", ""])
def test_symmetric_and_none_algorithms_cannot_be_configured(alg):
    with pytest.raises(ValueError):
        AuthSettings(algorithms=("RS256", alg))
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"algorithms": ["RS256", alg]}, AuthSettings)


@pytest.mark.parametrize(
    "url",
    ["http://iam.example.org/", "ftp://iam.example.org/", "iam.example.org", "https://", ""],
)
def test_issuer_keys_must_come_over_https(url):
    with pytest.raises(ValueError):
        TrustedIssuer(issuer=url)
    with pytest.raises(ValueError):
        TrustedIssuer(issuer="https://iam.example.org/", jwks_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost/realm", "http://[::1]:1"]
)
def test_plain_http_only_on_loopback(url):
    assert TrustedIssuer(issuer=url).issuer == url


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithms": ()},
        {"issuers": (TrustedIssuer(issuer="https://a/"), TrustedIssuer(issuer="https://a/"))},
        {"leeway_s": -1},
        {"jwks_min_refresh_interval_s": -1},
        {"jwks_cache_ttl_s": 10, "jwks_min_refresh_interval_s": 60},
        {"group_claims": ()},
        {"http_timeout_s": 0},
    ],
)
def test_invalid_settings(overrides):
    with pytest.raises(ValueError):
        AuthSettings(**overrides)


def test_unknown_fields_are_refused():
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"issuer": ["https://a/"]}, AuthSettings)
