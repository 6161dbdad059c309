"""What a verified token turns into: groups from both claims, admin per issuer, scopes."""

from __future__ import annotations

import pytest

from api.auth import AuthSettings, InsufficientScopeError, Principal, TrustedIssuer, require_scopes


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_groups_come_from_both_claims_with_wlcg_slashes_stripped(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    token = issuer.mint(
        {"groups": ["users", "atlas"], "wlcg.groups": ["/cms", "/cms/production", "/atlas"]}
    )
    principal = await auth.authenticate(bearer(token))
    assert principal.groups == {"users", "atlas", "cms", "cms/production"}


@pytest.mark.parametrize(
    "claims, expected",
    [
        ({"groups": ["a"]}, {"a"}),
        ({"wlcg.groups": ["/b"]}, {"b"}),
        ({"groups": "single"}, {"single"}),
        ({"groups": ["ok", 7, None, {"x": 1}, "", "/"]}, {"ok"}),
        ({"groups": {"not": "a list"}}, set()),
        ({}, set()),
    ],
)
async def test_group_claim_shapes(issuer, make_authenticator, claims, expected):
    auth = make_authenticator(issuer)
    assert (await auth.authenticate(bearer(issuer.mint(claims)))).groups == expected


async def test_group_claim_names_are_configurable(issuer, make_authenticator):
    auth = make_authenticator(issuer, group_claims=("eduperson_entitlement",))
    token = issuer.mint({"groups": ["ignored"], "eduperson_entitlement": ["vo-x"]})
    assert (await auth.authenticate(bearer(token))).groups == {"vo-x"}


async def test_admin_is_decided_per_issuer(make_issuer, make_authenticator):
    a, b = make_issuer(), make_issuer()
    auth = make_authenticator(
        trusted=[
            TrustedIssuer(issuer=a.issuer, admin_group="admins-a"),
            TrustedIssuer(issuer=b.issuer, admin_group="admins-b"),
        ]
    )
    assert (await auth.authenticate(bearer(a.mint({"groups": ["admins-a"]})))).is_admin
    # Membership of the *other* issuer's admin group means nothing here.
    assert not (await auth.authenticate(bearer(a.mint({"groups": ["admins-b"]})))).is_admin
    assert (await auth.authenticate(bearer(b.mint({"wlcg.groups": ["/admins-b"]})))).is_admin
    assert not (await auth.authenticate(bearer(b.mint({"groups": ["users"]})))).is_admin


async def test_default_admin_group_and_issuer_without_admins(make_issuer, make_authenticator):
    a, b = make_issuer(), make_issuer()
    auth = make_authenticator(
        trusted=[TrustedIssuer(issuer=a.issuer), TrustedIssuer(issuer=b.issuer, admin_group=None)]
    )
    claims = {"groups": ["orchestrator-admins"]}
    assert (await auth.authenticate(bearer(a.mint(claims)))).is_admin
    assert not (await auth.authenticate(bearer(b.mint(claims)))).is_admin


async def test_scopes_and_offline_access(issuer, make_authenticator):
    auth = make_authenticator(issuer)
    full = await auth.authenticate(bearer(issuer.mint()))
    assert full.scopes == {"openid", "profile", "email", "offline_access"}
    assert full.has_offline_access
    short = await auth.authenticate(bearer(issuer.mint({"scope": "openid profile"})))
    assert not short.has_offline_access
    scp = await auth.authenticate(bearer(issuer.mint({"scope": None, "scp": ["openid", "x"]})))
    assert scp.scopes == {"openid", "x"}


def _principal(*scopes: str) -> Principal:
    return Principal(issuer="https://iam.example.org/", subject="s", scopes=frozenset(scopes))


@pytest.mark.parametrize(
    "scopes, mutation, missing",
    [
        (("openid", "profile"), False, None),
        (("openid", "profile", "email"), False, None),
        (("openid",), False, ("openid", "profile")),
        ((), False, ("openid", "profile")),
        (("openid", "profile"), True, ("offline_access", "fts:submit-transfer")),
        (("openid", "profile", "offline_access"), True, None),
        (("openid", "profile", "fts:submit-transfer"), True, None),
        (("offline_access",), True, ("openid", "profile")),
    ],
)
def test_legacy_scope_rules(scopes, mutation, missing):
    settings = AuthSettings()
    if missing is None:
        require_scopes(_principal(*scopes), settings, mutation=mutation)
        return
    with pytest.raises(InsufficientScopeError) as caught:
        require_scopes(_principal(*scopes), settings, mutation=mutation)
    assert caught.value.required == missing
    assert caught.value.message == (
        f'Insufficient scope for this resource, scope="{" ".join(missing)}"'
    )


def test_scope_checks_can_be_disabled():
    settings = AuthSettings(required_scopes=(), mutation_scopes=())
    require_scopes(_principal(), settings, mutation=True)
