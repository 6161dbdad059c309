"""The per-resource authorization matrix (pure functions)."""

from __future__ import annotations

import pytest

from api.auth import (
    READ,
    AuthSettings,
    OpaAuthorizer,
    Principal,
    RuleAuthorizer,
    build_authorizer,
    can_act,
    can_read,
)

IAM_A = "https://iam-a.example.org/"
IAM_B = "https://iam-b.example.org/"

OWNER = Principal(issuer=IAM_A, subject="owner", groups=frozenset({"cms"}))
OTHER_USER = Principal(issuer=IAM_A, subject="someone-else", groups=frozenset({"atlas"}))
ADMIN_SAME_ISSUER = Principal(
    issuer=IAM_A, subject="admin-a", groups=frozenset({"orchestrator-admins"}), is_admin=True
)
ADMIN_OTHER_ISSUER = Principal(
    issuer=IAM_B, subject="admin-b", groups=frozenset({"orchestrator-admins"}), is_admin=True
)
GROUP_MEMBER = Principal(issuer=IAM_A, subject="member", groups=frozenset({"cms", "users"}))
GROUP_MEMBER_OTHER_ISSUER = Principal(issuer=IAM_B, subject="member-b", groups=frozenset({"cms"}))
SAME_SUBJECT_OTHER_ISSUER = Principal(issuer=IAM_B, subject="owner", groups=frozenset({"cms"}))

# The resource: owned by (IAM_A, "owner"), user group "cms".
RESOURCE = (IAM_A, "owner", "cms")


@pytest.mark.parametrize(
    "who, visibility, read, act",
    [
        (OWNER, False, True, True),
        (OWNER, True, True, True),
        (OTHER_USER, False, False, False),
        (OTHER_USER, True, False, False),
        (ADMIN_SAME_ISSUER, False, True, True),
        (ADMIN_OTHER_ISSUER, False, False, False),
        (ADMIN_OTHER_ISSUER, True, False, False),
        (GROUP_MEMBER, False, False, False),
        (GROUP_MEMBER, True, True, False),
        (GROUP_MEMBER_OTHER_ISSUER, True, False, False),
        (SAME_SUBJECT_OTHER_ISSUER, True, False, False),
    ],
    ids=[
        "owner",
        "owner-visibility",
        "other-user",
        "other-user-visibility",
        "admin-same-issuer",
        "admin-other-issuer",
        "admin-other-issuer-visibility",
        "group-member-no-visibility",
        "group-member-visibility",
        "group-member-other-issuer",
        "same-subject-other-issuer",
    ],
)
def test_authorization_matrix(who, visibility, read, act):
    assert can_read(who, *RESOURCE, group_visibility=visibility) is read
    assert can_act(who, *RESOURCE) is act


def test_resource_group_with_leading_slash_matches():
    assert can_read(GROUP_MEMBER, IAM_A, "owner", "/cms", group_visibility=True)


def test_resource_without_group_is_not_visible_to_members():
    assert not can_read(GROUP_MEMBER, IAM_A, "owner", None, group_visibility=True)
    assert not can_read(GROUP_MEMBER, IAM_A, "owner", "", group_visibility=True)


@pytest.mark.parametrize("who", [ADMIN_SAME_ISSUER, ADMIN_OTHER_ISSUER])
def test_unowned_legacy_resources_belong_to_admins(who):
    assert can_read(who, None, None, None, group_visibility=False)
    assert can_act(who, None, None)


@pytest.mark.parametrize("who", [OWNER, OTHER_USER, GROUP_MEMBER])
def test_unowned_legacy_resources_are_hidden_from_users(who):
    assert not can_read(who, None, None, "cms", group_visibility=True)
    assert not can_act(who, None, None)


@pytest.mark.parametrize("visibility", [False, True])
async def test_rule_authorizer_maps_actions(visibility):
    authorizer = RuleAuthorizer(group_visibility=visibility)
    for action in ("update", "delete", "reset", "log", "resource.start"):
        assert not await authorizer.allowed(
            GROUP_MEMBER, action, owner_issuer=IAM_A, owner_subject="owner", group="cms"
        )
        assert await authorizer.allowed(
            OWNER, action, owner_issuer=IAM_A, owner_subject="owner", group="cms"
        )
    assert (
        await authorizer.allowed(
            GROUP_MEMBER, READ, owner_issuer=IAM_A, owner_subject="owner", group="cms"
        )
        is visibility
    )


async def test_build_authorizer_chooses_opa_only_when_configured():
    rules = build_authorizer(AuthSettings(group_visibility=True))
    assert isinstance(rules, RuleAuthorizer) and rules.group_visibility
    opa = build_authorizer(AuthSettings(opa_url="http://127.0.0.1:8181/v1/data/orchestrator/allow"))
    assert isinstance(opa, OpaAuthorizer)
    await opa.aclose()
    await rules.aclose()
