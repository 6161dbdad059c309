"""The authenticated caller, derived from a verified access token (never holds the token)."""

from __future__ import annotations

import msgspec

__all__ = ["Principal"]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    # Identity: the legacy owner is (issuer, subject), exposed as createdBy{issuer,subject}.
    issuer: str
    subject: str
    name: str | None = None
    email: str | None = None
    preferred_username: str | None = None
    # Union of all configured group claims, leading "/" stripped.
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    # Member of the admin group configured for *this* issuer.
    is_admin: bool = False
    # "offline_access" was granted (legacy precondition for keeping a refresh token).
    has_offline_access: bool = False

    @property
    def created_by(self) -> str:
        """Legacy `createdBy` query form `<sub>@<iss>`."""
        return f"{self.subject}@{self.issuer}"
