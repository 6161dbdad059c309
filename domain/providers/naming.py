"""Canonical provider ids and stream ids.

The registry names a provider by ``(name, type)``, Rally by an environment name per region
(``recas_bari``), the ai-ranker by ``provider_name`` + ``region_name``. The orchestrator uses one
canonical id per provider, derived once from the registry key, plus aliases for the others.
"""

from __future__ import annotations

import re

from .errors import InvalidCommand
from .values import ProviderType

CATEGORY = "provider"
"""Streams ``provider-<provider id>``: registration, lifecycle, trust, topology, catalogue,
quota limits and scan outcomes of one provider."""

USAGE_CATEGORY = "quotausage"
"""Streams ``quotausage-<provider id>``: quota usage samples, kept off the provider streams
because usage changes on almost every scan."""

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def canonical_provider_id(name: str, provider_type: ProviderType | str) -> str:
    """The canonical id of the registry provider ``(name, type)``: ``cloud-cnaf-t1.openstack``.

    Lower-case letters, digits and dashes, then the type: stable, readable, safe in stream ids
    and Kafka keys. Two registry names that only differ in punctuation or case collide; the
    registration of the second one is refused (:class:`AlreadyRegistered`), and an operator can
    register it under an explicit id with a registry alias instead.
    """
    slug = _NOT_SLUG.sub("-", name.lower()).strip("-")
    if not slug:
        raise InvalidCommand(f"Provider name {name!r} has no letter or digit")
    return f"{slug}.{ProviderType(provider_type).value}"


def stream_id(provider_id: str) -> str:
    return f"{CATEGORY}-{provider_id}"


def usage_stream_id(provider_id: str) -> str:
    return f"{USAGE_CATEGORY}-{provider_id}"


_PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")


def check_provider_id(provider_id: str) -> None:
    """Raise :class:`InvalidCommand` unless ``provider_id`` is a usable canonical id."""
    if not _PROVIDER_ID.fullmatch(provider_id):
        raise InvalidCommand(
            f"Provider id {provider_id!r} must be 1-200 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
