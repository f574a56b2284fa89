"""How a NamedArray's names sit on its data: validation, pytree metadata, penzai's fields.

Private helpers of `_named_array`: checking axis names, the pytree metadata
that carries the names and the sizes they were given to (so that a
transformation that moves a named dimension is caught), and the conversion
of penzai's `NamedArray`/`NamedArrayView` constructor fields into saikei's
single layout.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from saikei.core._struct import StructStaticMetadata

AxisName = Hashable


def _check_name(name: Any, what: str) -> None:
    if name is None:
        raise ValueError(
            f"{what}: None cannot be an axis name (in saikei None marks a positional"
            " axis). Use a string or another hashable value."
        )
    if isinstance(name, int | np.integer):
        raise ValueError(
            f"{what}: integers are not allowed as axis names ({name!r}), so that they"
            " are never confused with positional axis indices. Use a string."
        )
    try:
        hash(name)
    except TypeError:
        raise ValueError(f"{what}: axis names must be hashable, got {name!r}.") from None


def _check_names(names: Sequence[Any], what: str, existing: Sequence[Any] = ()) -> None:
    for name in names:
        if type(name) is not str:
            _check_name(name, what)
    if not existing and len(set(names)) == len(names):
        return
    seen = set(existing)
    repeated = []
    for name in names:
        if name in seen:
            repeated.append(name)
        seen.add(name)
    if repeated:
        raise ValueError(
            f"{what}: repeated axis names {repeated}; names given: {tuple(names)},"
            f" names already present: {tuple(existing)}. Each named axis may appear"
            " only once."
        )


def _rank_error(names: Sequence[AxisName | None], shape: Sequence[int]) -> ValueError:
    """The error for a NamedArray with more axis names than data dimensions."""
    return ValueError(
        f"NamedArray has {len(names)} trailing axis names {tuple(names)} but its"
        f" data_array has only {len(shape)} dimension(s) (shape {tuple(shape)}). This"
        " happens when jax.vmap, jax.lax.scan or jax.lax.map slices off the leading"
        " dimension of data_array while that dimension is a named axis (or when a"
        " function mapped over the leaves, e.g. with jax.tree_util.tree_map or a"
        " Selection, reduces data_array). These transformations map over the leading"
        " data dimension, which is only right when it is a positional axis. Before"
        " mapping, make the axis you want the leading one: `x.with_positional_prefix()`"
        " for a positional axis, or `x.untag_prefix(name).with_positional_prefix()` for"
        " the named axis `name`. To map over named axes, use sk.nx.nmap or sk.nx.scan."
    )


def _no_shape_error(data: Any) -> TypeError:
    return TypeError(
        "NamedArray.data_array must be an array (jax.Array, np.ndarray,"
        f" jax.ShapeDtypeStruct or tracer) to have a shape; got {type(data).__name__}."
    )


def _strip_leading_none(full: Sequence[AxisName | None]) -> tuple[AxisName | None, ...]:
    start = 0
    for name in full:
        if name is not None:
            break
        start += 1
    return tuple(full[start:])


class _LayoutAux(StructStaticMetadata):
    """Pytree metadata of a NamedArray: its axis names and the sizes they had.

    The sizes (of the trailing data dims the names cover) travel with the
    names through JAX transformations, so that a transformation that moves or
    resizes a named dimension underneath the names (e.g. `jax.vmap` with
    `out_axes=1`) is detected. Unknown sizes (`None`: the data had no shape,
    as in a tree of shardings) match any sizes, so such trees still work as
    prefixes of real ones.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, _LayoutAux):
            return False
        mine, theirs = self.static_fields, other.static_fields
        if mine[0] != theirs[0]:
            return False
        a, b = mine[1][1], theirs[1][1]
        return a is None or b is None or a == b

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.static_fields[0])


_AUX_CACHE: dict[tuple[Any, ...], _LayoutAux] = {}
_CHILD_NAMES = ("data_array",)


def _aux_for(names: tuple[Any, ...], sizes: tuple[int, ...] | None) -> _LayoutAux:
    key = (names, sizes)
    try:
        return _AUX_CACHE[key]
    except KeyError:
        if len(_AUX_CACHE) > 10_000:
            _AUX_CACHE.clear()
        aux = _AUX_CACHE[key] = _LayoutAux(
            _CHILD_NAMES, (("axis_names", names), ("_axis_sizes", sizes))
        )
        return aux


def _trailing(shape: Any, count: int) -> tuple[int, ...] | None:
    """The last `count` sizes of `shape` (None if it has fewer dims)."""
    rank = len(shape)
    if rank < count:
        return None
    return tuple(shape[rank - count :])


class MislabeledNamedArrayError(ValueError):
    """A NamedArray whose data no longer matches its axis names.

    Raised when a NamedArray is used after a JAX transformation changed its
    data underneath its names: `jax.vmap`/`jax.lax.map`/`jax.lax.scan` with
    `in_axes` or `out_axes` other than 0, or a function mapped over the
    leaves with `jax.tree_util.tree_map` that moved or resized a named
    dimension. Any use other than flattening raises this error; it is never
    silently relabelled.
    """


def _mislabeled_error(names: Any, sizes: Any, shape: Any) -> MislabeledNamedArrayError:
    return MislabeledNamedArrayError(
        f"NamedArray data no longer matches its axis names: the names {tuple(names)} were"
        f" given to trailing data dimensions of sizes {tuple(sizes)}, but data_array now"
        f" has shape {tuple(shape)}. A transformation moved or resized a named dimension"
        " underneath the names: typically jax.vmap (or jax.lax.map/scan) with in_axes or"
        " out_axes other than 0, or jax.tree_util.tree_map with a function that"
        " transposes, slices or reduces the data. jax.vmap may only map over the leading"
        " data dimension of a NamedArray, and that dimension must be positional: use"
        " in_axes=0/out_axes=0 and `x.with_positional_prefix()` (or"
        " `x.untag_prefix(name).with_positional_prefix()` to map a named axis), or map"
        " over named axes with sk.nx.nmap instead."
    )


def _from_named_axes(
    data: Any, named_axes: Mapping[AxisName, int]
) -> tuple[Any, tuple[AxisName, ...], tuple[int, ...] | None]:
    """Checks penzai's `NamedArray(named_axes=..., data_array=...)` fields."""
    if not isinstance(named_axes, Mapping):
        raise TypeError(
            f"NamedArray(named_axes=...) expects a mapping from axis name to size"
            f" (e.g. an OrderedDict), got {type(named_axes).__name__}: {named_axes!r}."
        )
    names = tuple(named_axes)
    sizes = tuple(named_axes.values())
    _check_names(names, "NamedArray(named_axes=...)")
    bad = [s for s in sizes if not isinstance(s, int | np.integer) or isinstance(s, bool) or s < 0]
    if bad:
        raise ValueError(f"NamedArray(named_axes={dict(named_axes)!r}): sizes must be ints >= 0.")
    sizes = tuple(int(s) for s in sizes)
    shape = getattr(data, "shape", None)
    if shape is None:
        return data, names, sizes  # e.g. a sharding: the sizes are kept
    if _trailing(shape, len(sizes)) != sizes:
        raise ValueError(
            f"NamedArray(named_axes={dict(named_axes)!r}): the named axes must be the"
            f" trailing dimensions of data_array, with these sizes, but data_array has"
            f" shape {tuple(shape)}. Positional axes come first, named axes last."
        )
    return data, names, None


def _from_view_fields(
    data: Any,
    data_shape: Sequence[int] | None,
    logical: Sequence[int] | None,
    by_name: Mapping[AxisName, int] | None,
) -> tuple[Any, tuple[AxisName | None, ...], tuple[int, ...] | None]:
    """Builds a layout from penzai's NamedArrayView fields, transposing if needed."""
    what = "NamedArrayView(data_shape=..., data_axis_for_logical_axis=..., data_axis_for_name=...)"
    if data_shape is None or logical is None or by_name is None:
        raise TypeError(f"{what}: all three fields are needed.")
    data_shape = tuple(int(s) for s in data_shape)
    logical = tuple(int(d) for d in logical)
    by_name = dict(by_name)
    _check_names(list(by_name), what)
    shape = getattr(data, "shape", None)
    if shape is not None and tuple(shape) != data_shape:
        raise ValueError(
            f"{what}: data_shape {data_shape} differs from data_array's shape {tuple(shape)}."
        )
    used = list(logical) + list(by_name.values())
    if sorted(used) != list(range(len(data_shape))):
        raise ValueError(
            f"{what}: every data dimension 0..{len(data_shape) - 1} must be used exactly once"
            f" by data_axis_for_logical_axis {logical} or data_axis_for_name {by_name}."
        )
    full: list[AxisName | None] = [None] * len(data_shape)
    for name, dim in by_name.items():
        full[dim] = name
    slots = sorted(logical)
    if list(logical) != slots:
        # saikei orders positional axes by data position: move them there.
        if shape is None:
            raise ValueError(
                f"{what}: positional axes out of data order need a transpose, which needs"
                f" an array, but data_array is a {type(data).__name__}."
            )
        perm = list(range(len(data_shape)))
        for slot, dim in zip(slots, logical):
            perm[slot] = dim
        data = jax.lax.transpose(data, perm)
        data_shape = tuple(data_shape[p] for p in perm)
    names = tuple(full)
    return data, names, (data_shape if shape is None else None)
