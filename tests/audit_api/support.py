"""Helpers shared by the audit API tests."""

from __future__ import annotations

from typing import Any

from tests.api.support import ADMIN_GROUP, AUDIENCE, Harness, User


def foreign_admin(api: Harness) -> User:
    """An admin of the second issuer (it has no audience configured)."""
    return User(api.second_issuer, "foreign-admin", [ADMIN_GROUP], audience=None)


async def statistics(api: Harness, user: User, path: str, **params: Any) -> dict[str, Any]:
    response = await api.request("GET", path, user, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


__all__ = ["AUDIENCE", "foreign_admin", "statistics"]
