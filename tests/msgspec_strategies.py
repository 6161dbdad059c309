"""Hypothesis strategies for any msgspec type, read from ``msgspec.inspect``
(shared by the round-trip tests of every aggregate's events).

Every field is generated, defaults included, so a round trip exercises the whole schema.
"""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_TEXT = st.text(max_size=20)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | _INT64 | _FLOATS | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=8,
)

_TIMEZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30))]
)


def strategy_for_type(type_: Any) -> st.SearchStrategy[Any]:
    return _strategy(mi.type_info(type_))


@cache
def _struct_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = {field.name: _strategy(field.type) for field in info.fields}
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


def _strategy(info: mi.Type) -> st.SearchStrategy[Any]:
    if isinstance(info, mi.StructType):
        return st.deferred(lambda: _struct_strategy(info.cls))
    if isinstance(info, mi.StrType):
        return _TEXT
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        return _INT64
    if isinstance(info, mi.FloatType):
        return _FLOATS
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.AnyType):
        return json_values
    if isinstance(info, mi.DateTimeType):
        return st.datetimes(timezones=_TIMEZONES)
    if isinstance(info, mi.DateType):
        return st.dates()
    if isinstance(info, mi.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(list(info.values))
    if isinstance(info, mi.UnionType):
        return st.one_of([_strategy(t) for t in info.types])
    if isinstance(info, mi.DictType):
        return st.dictionaries(_strategy(info.key_type), _strategy(info.value_type), max_size=3)
    if isinstance(info, mi.VarTupleType):
        return st.lists(_strategy(info.item_type), max_size=3).map(tuple)
    if isinstance(info, mi.ListType):
        return st.lists(_strategy(info.item_type), max_size=3)
    raise NotImplementedError(f"no strategy for {info!r}")
