"""A mixin giving dataclasses a total order across types.

JAX sorts dict keys when it flattens a dict, so objects used as dict keys next
to strings (variable labels, for instance) must be comparable with each other
and with strings.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def _sort_key(value: Any) -> tuple[Any, ...]:
    if isinstance(value, AutoOrderedAcrossTypes):
        cls = type(value)
        return (1, cls.__module__, cls.__qualname__, value._order_fields())
    return (0, type(value).__name__, value)


class AutoOrderedAcrossTypes:
    """Orders instances of dataclasses after strings and tuples, then by type.

    Instances of the same type compare by their fields; instances of different
    types compare by their qualified type names; every instance sorts after
    ordinary values such as strings, so dicts keyed by a mix of both can be
    flattened by JAX.

    Example:
      >>> import dataclasses
      >>> @dataclasses.dataclass(frozen=True)
      ... class Tag(AutoOrderedAcrossTypes):
      ...   index: int
      >>> Tag(1) < Tag(2) and "z" < Tag(0)
      True
      >>> sorted([Tag(2), "b", Tag(1)])
      ['b', Tag(index=1), Tag(index=2)]
    """

    def _order_fields(self) -> tuple[Any, ...]:
        if dataclasses.is_dataclass(self):
            return tuple(getattr(self, f.name) for f in dataclasses.fields(self))
        return (id(self),)

    def __lt__(self, other: Any) -> bool:
        return _sort_key(self) < _sort_key(other)

    def __le__(self, other: Any) -> bool:
        return _sort_key(self) <= _sort_key(other)

    def __gt__(self, other: Any) -> bool:
        return _sort_key(self) > _sort_key(other)

    def __ge__(self, other: Any) -> bool:
        return _sort_key(self) >= _sort_key(other)
