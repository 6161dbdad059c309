"""The check that no event can carry a credential: no field, however deeply nested, is named
like one (shared by the storage-format tests of every aggregate's events)."""

from __future__ import annotations

import msgspec
import msgspec.inspect as mi

SECRET_WORDS = ("token", "password", "secret", "private_key", "credential", "refresh")


def _field_names(info: mi.Type, seen: set[type]) -> set[str]:
    names: set[str] = set()
    if isinstance(info, mi.StructType) and info.cls not in seen:
        seen.add(info.cls)
        for field in info.fields:
            names.add(field.name)
            names |= _field_names(field.type, seen)
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            names |= _field_names(member, seen)
    elif isinstance(info, mi.VarTupleType | mi.ListType):
        names |= _field_names(info.item_type, seen)
    elif isinstance(info, mi.DictType):
        names |= _field_names(info.value_type, seen)
    return names


def secret_field_names(event_type: type[msgspec.Struct]) -> set[str]:
    """The names of ``event_type``'s fields (nested ones included) that look like a secret."""
    names = _field_names(mi.type_info(event_type), set())
    return {name for name in names for word in SECRET_WORDS if word in name}
