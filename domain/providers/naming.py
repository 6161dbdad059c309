"""Canonical provider ids, stream ids and the alias directory.

The registry names a provider by ``(name, type)``, Rally by an environment name per region
(``recas_bari``), the ai-ranker by ``provider_name`` + ``region_name``. The orchestrator uses one
canonical id per provider, derived once from the registry key, plus aliases for the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from .errors import AliasConflict, InvalidCommand
from .values import AliasSystem, ProviderAlias, ProviderType

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


class SiteRef(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """A provider, optionally one of its regions, as the alias directory resolves it."""

    provider_id: str
    region: str | None = None


class AliasDirectory:
    """Resolves other systems' names to canonical ids (built from provider states).

    A provider-wide alias (``region is None``) names the provider; a region-scoped alias names
    one site (Rally's ``recas_bari`` is RECAS-BARI's ``RegionOne``). Names compare
    case-insensitively (the Rally table and the registry disagree on case). An ambiguous name
    raises :class:`AliasConflict` when the directory is built, not when it is used.
    """

    def __init__(self, entries: Iterable[tuple[str, ProviderAlias]]) -> None:
        self._by_name: dict[tuple[AliasSystem, str], SiteRef] = {}
        for provider_id, alias in entries:
            key = (alias.system, alias.name.casefold())
            ref = SiteRef(provider_id=provider_id, region=alias.region)
            existing = self._by_name.get(key)
            if existing is not None and existing != ref:
                raise AliasConflict(
                    f"The {alias.system} name {alias.name!r} is used by both "
                    f"{existing.provider_id}/{existing.region or '*'} and "
                    f"{provider_id}/{alias.region or '*'}"
                )
            self._by_name[key] = ref

    def resolve(self, system: AliasSystem, name: str, region: str | None = None) -> SiteRef | None:
        """The site ``system`` calls ``name``: a region-scoped alias gives its own region, a
        provider-wide one the ``region`` passed along (``None`` for the whole provider)."""
        ref = self._by_name.get((system, name.casefold()))
        if ref is None:
            return None
        if ref.region is not None:
            return ref
        return SiteRef(provider_id=ref.provider_id, region=region)
