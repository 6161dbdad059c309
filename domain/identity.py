"""Who did something: the identity shared by every aggregate.

An actor is an OIDC identity, ``(issuer, subject)``, exactly as the legacy API exposes it in
``createdBy``. Background components (handlers) act under a system identity so that every event
can name the actor of its change without ever carrying a credential.
"""

from __future__ import annotations

import msgspec

SYSTEM_ISSUER = "urn:paas-orchestrator"
"""Issuer of the identities under which the orchestrator's own components act."""


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """An OIDC identity: the token's ``iss`` and ``sub`` claims. Never a token."""

    issuer: str
    subject: str

    @property
    def is_system(self) -> bool:
        """True for the orchestrator's own components (see :func:`system_actor`)."""
        return self.issuer == SYSTEM_ISSUER


def system_actor(component: str) -> Actor:
    """The identity a background component acts under, e.g. ``system_actor("im-handler")``."""
    return Actor(issuer=SYSTEM_ISSUER, subject=component)
