"""Building NamedArrays from named shapes: `full`, `zeros`, `ones`, `arange`, `random_split`."""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core.named_axes import _layout, _nmap
from saikei.core.named_axes import _named_array as _na

NamedShape = Mapping[_na.AxisName, int] | Sequence[tuple[_na.AxisName, int]]


def _items(named_shape: NamedShape, what: str) -> list[tuple[Any, int]]:
    if isinstance(named_shape, Mapping):
        items = list(named_shape.items())
    else:
        try:
            items = [(name, size) for name, size in named_shape]
        except (TypeError, ValueError):
            raise TypeError(
                f"{what}: named_shape must be a mapping from axis names to sizes, or a"
                f" sequence of (name, size) pairs; got {named_shape!r}."
            ) from None
    _na._check_names([n for n, _ in items], what)
    for name, size in items:
        if not isinstance(size, int | np.integer) or size < 0:
            raise ValueError(f"{what}: axis {name!r} has size {size!r}; sizes must be ints >= 0.")
    return [(n, int(s)) for n, s in items]


def full(named_shape: NamedShape, fill_value: Any, dtype: Any = None) -> _na.NamedArray:
    """An array of the given named shape filled with `fill_value`.

    Args:
      named_shape: Mapping from axis names to sizes (or a sequence of pairs).
      fill_value: A scalar.
      dtype: Optional dtype; by default inferred from `fill_value`.

    Returns:
      A NamedArray with only named axes, in the given order.

    Example:
      >>> from saikei import sk
      >>> sk.nx.full({"a": 2}, 7).unwrap("a").tolist()
      [7, 7]
    """
    items = _items(named_shape, "full")
    if np.ndim(fill_value) != 0:
        raise ValueError(
            f"full: fill_value must be a scalar, got shape {np.shape(fill_value)}. To"
            " broadcast an array along new named axes use `x.broadcast_to(named_shape=...)`."
        )
    data = jnp.full(tuple(s for _, s in items), fill_value, dtype)
    return _na._new(data, tuple(n for n, _ in items))


def zeros(named_shape: NamedShape, dtype: Any = None) -> _na.NamedArray:
    """An array of zeros with the given named shape.

    Example:
      >>> from saikei import sk
      >>> sk.nx.zeros({"a": 2, "b": 3}).named_shape
      {'a': 2, 'b': 3}
    """
    items = _items(named_shape, "zeros")
    return _na._new(jnp.zeros(tuple(s for _, s in items), dtype), tuple(n for n, _ in items))


def ones(named_shape: NamedShape, dtype: Any = None) -> _na.NamedArray:
    """An array of ones with the given named shape.

    Example:
      >>> from saikei import sk
      >>> sk.nx.ones({"a": 2}).unwrap("a").tolist()
      [1.0, 1.0]
    """
    items = _items(named_shape, "ones")
    return _na._new(jnp.ones(tuple(s for _, s in items), dtype), tuple(n for n, _ in items))


def arange(
    name: _na.AxisName,
    start: int,
    stop: int | None = None,
    step: int | None = None,
    dtype: Any = None,
) -> _na.NamedArray:
    """Evenly spaced values along one named axis, like `jnp.arange`.

    Args:
      name: The name of the single axis.
      start: First value, or the stop value if `stop` is None.
      stop: End of the range (exclusive).
      step: Spacing.
      dtype: Optional dtype.

    Example:
      >>> from saikei import sk
      >>> sk.nx.arange("seq", 4).unwrap("seq").tolist()
      [0, 1, 2, 3]
    """
    _layout._check_name(name, "arange")
    return _na._new(jnp.arange(start, stop, step, dtype), (name,))


def random_split(key: Any, named_shape: NamedShape) -> _na.NamedArray:
    """Splits a PRNG key (or a NamedArray of keys) into keys along new named axes.

    The keys are `jax.random.split(key, n)` reshaped to the named shape. A plain
    `dict` is taken in sorted name order (so the result does not depend on
    insertion order, as in penzai); an `OrderedDict` or a sequence of
    `(name, size)` pairs keeps the given order.

    Args:
      key: A PRNG key, or a NamedArray of keys (split once per position of its
        named axes).
      named_shape: The new axes.

    Returns:
      A NamedArray of keys with the new named axes added.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> keys = sk.nx.random_split(jax.random.key(0), {"batch": 4})
      >>> keys.named_shape
      {'batch': 4}
    """
    items = _items(named_shape, "random_split")
    if type(named_shape) is dict:
        try:
            items = sorted(items)
        except TypeError:
            items = sorted(items, key=lambda item: (type(item[0]).__name__, repr(item[0])))
    elif isinstance(named_shape, Mapping) and not isinstance(named_shape, collections.OrderedDict):
        items = sorted(items, key=lambda item: (type(item[0]).__name__, repr(item[0])))
    names = tuple(n for n, _ in items)
    sizes = tuple(s for _, s in items)
    total = math.prod(sizes)

    def split(k: Any) -> Any:
        keys = jax.random.split(k, total)
        return keys.reshape(sizes + tuple(keys.shape[1:]))

    if not isinstance(key, _na.NamedArray):
        key = _na.wrap(key)
    return _nmap.nmap(split)(key).tag_prefix(*names)
