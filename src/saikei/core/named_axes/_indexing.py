"""Indexing NamedArrays: parsing indices, and the static and vectorized index paths.

The entry points (`getitem` and `.at[...]` updates) live in `_index_ops.py`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core.named_axes import _named_array as _na
from saikei.core.named_axes import _nmap


def _bound(value: Any, what: str) -> Any:
    if value is None or type(value) is int:
        return value
    if isinstance(value, jax.core.Tracer):
        raise IndexError(
            f"{what}: slice bound {value} is a traced value. Slices of NamedArrays need"
            " concrete bounds because they fix the size of the result. Use a concrete"
            " integer, `jax.lax.dynamic_slice_in_dim` inside `nx.nmap`, or index with an"
            " integer array."
        )
    try:
        return operator.index(value)
    except TypeError:
        raise IndexError(
            f"{what}: slice bounds must be integers or None, got {value!r}"
            f" ({type(value).__name__})."
        ) from None


def _normalize(component: Any, what: str) -> Any:
    if isinstance(component, slice):
        if component.start is None and component.stop is None and component.step is None:
            return component
        return slice(
            _bound(component.start, what),
            _bound(component.stop, what),
            _bound(component.step, what),
        )
    if isinstance(component, list):
        return np.asarray(component)
    return component


def _index_shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, _na.NamedArray):
        return value.positional_shape
    return tuple(np.shape(value))


def _consumed_dims(component: Any) -> int:
    if component is None or component is Ellipsis:
        return 0
    dtype = getattr(component, "dtype", None)
    if isinstance(component, bool) or (dtype is not None and dtype == np.bool_):
        return int(np.ndim(component))
    return 1


def _static_index(data: Any, comps: Sequence[Any]) -> Any:
    """Indexes leading data dims with ints, slices and None using `lax.slice` and
    `lax.reshape` (much faster than `jnp` indexing for eager calls).

    Returns None when `comps` holds anything else (arrays, negative steps).
    """
    shape = tuple(data.shape)
    starts: list[int] = []
    limits: list[int] = []
    strides: list[int] = []
    out_shape: list[int] = []
    sliced = False
    dim = 0
    for comp in comps:
        if comp is None:
            out_shape.append(1)
            continue
        if dim >= len(shape):
            return None
        size = shape[dim]
        if type(comp) is int or isinstance(comp, np.integer):
            i = int(comp)
            if not -size <= i < size:
                raise IndexError(
                    f"index {i} is out of bounds for an axis of size {size} (data shape {shape})."
                )
            i = i + size if i < 0 else i
            starts.append(i)
            limits.append(i + 1)
            strides.append(1)
            sliced = True
        elif isinstance(comp, slice):
            start, stop, step = comp.indices(size)
            if step < 0:
                return None
            length = len(range(start, stop, step))
            limit = start + (length - 1) * step + 1 if length else start
            starts.append(start)
            limits.append(limit)
            strides.append(step)
            out_shape.append(length)
            sliced = sliced or (start, limit, step) != (0, size, 1)
        else:
            return None
        dim += 1
    rest = shape[dim:]
    if sliced:
        starts.extend([0] * len(rest))
        limits.extend(rest)
        strides.extend([1] * len(rest))
        use_strides = strides if any(s != 1 for s in strides) else None
        data = jax.lax.slice(data, starts, limits, use_strides)
    out_shape.extend(rest)
    if tuple(out_shape) != tuple(data.shape):
        data = jax.lax.reshape(data, tuple(out_shape))
    return data


def _take(data: Any, index: Any, axis: int, what: str) -> Any:
    """`jnp` getitem semantics (negative indices wrap, others clamp) via `jnp.take`."""
    dtype = getattr(index, "dtype", None)
    if dtype is None or not np.issubdtype(dtype, np.integer):
        raise IndexError(f"{what}: index arrays must have an integer dtype, got {dtype}.")
    size = data.shape[axis]
    if isinstance(index, np.ndarray):
        index = np.where(index < 0, index + size, index)
    else:
        index = jnp.where(index < 0, index + size, index)
    return jnp.take(data, index, axis=axis, mode="clip")


def _positional_getitem(arr: _na.NamedArray, comps: tuple[Any, ...]) -> _na.NamedArray:
    if any(isinstance(c, _na.NamedArray) for c in comps):
        return _nmapped(arr, comps, "getitem", None, {})
    npos = len(arr.positional_shape)
    consumed = sum(_consumed_dims(c) for c in comps)
    if consumed > npos:
        raise IndexError(
            f"Too many positional indices: {comps} indexes {consumed} axes but the array"
            f" has positional_shape {arr.positional_shape} (named_shape"
            f" {arr.named_shape}). Index named axes by name, e.g. `x[{{'name': 0}}]`."
        )
    if any(c is Ellipsis for c in comps):
        at = next(i for i, c in enumerate(comps) if c is Ellipsis)
        fill = (slice(None),) * (npos - consumed)
        comps = comps[:at] + fill + comps[at + 1 :]
    if None in arr.axis_names:
        result = _interleaved_static_getitem(arr, comps)
        if result is not None:
            return result
    arr = arr.with_positional_prefix()
    data = _static_index(arr.data_array, comps)
    if data is None:
        data = _single_array_index(arr.data_array, comps)
    if data is None:
        data = arr.data_array[comps]
    return _na._new(data, arr.axis_names)


def _interleaved_static_getitem(arr: _na.NamedArray, comps: tuple[Any, ...]) -> Any:
    """Ints, slices and None on positional axes that are interleaved with named ones.

    Indexes the data where it is (e.g. the names-first layout `nmap` returns)
    instead of moving positional axes to the front first. Returns None for
    other indices.
    """
    if not all(c is None or isinstance(c, slice) or _is_int(c) for c in comps):
        return None
    full = arr._full_names()
    data_comps: list[Any] = []
    new_full: list[Any] = []
    pending = list(comps)

    def add_new_axes() -> None:
        while pending and pending[0] is None:
            pending.pop(0)
            data_comps.append(None)
            new_full.append(None)

    for name in full:
        if name is None and pending:
            # New axes go just before the positional axis that follows them.
            add_new_axes()
        if name is None and pending:
            comp = pending.pop(0)
            data_comps.append(comp)
            if not _is_int(comp):
                new_full.append(None)
            # New axes after the last index go right after its axis.
            if all(c is None for c in pending):
                add_new_axes()
        else:
            data_comps.append(slice(None))
            new_full.append(name)
    if pending:
        return None
    data = _static_index(arr.data_array, data_comps)
    if data is None:
        return None
    return _na._new(data, _na._strip_leading_none(new_full))


def _single_array_index(data: Any, comps: tuple[Any, ...]) -> Any:
    """One integer index array among slices and None: a `jnp.take` (fast path).

    With integers present as well, numpy's placement rules for advanced
    indices apply, so those cases are left to jnp indexing (None returned).
    """
    arrays = [i for i, c in enumerate(comps) if isinstance(c, jax.Array | np.ndarray)]
    if len(arrays) != 1 or any(_is_int(c) for c in comps):
        return None
    (at,) = arrays
    index = comps[at]
    if not np.issubdtype(index.dtype, np.integer):
        return None
    data = _static_index(data, (*comps[:at], slice(None), *comps[at + 1 :]))
    if data is None:
        return None
    return _take(data, index, at, "NamedArray[...]")


def _nmapped(
    arr: _na.NamedArray,
    comps: tuple[Any, ...],
    method: str,
    values: Any,
    kwargs: dict[str, Any],
) -> _na.NamedArray:
    """Applies a positional index or update slice by slice over all names."""
    slots = [i for i, c in enumerate(comps) if isinstance(c, _na.NamedArray)]
    named_comps = [comps[i] for i in slots]

    def rebuild(index_values: tuple[Any, ...]) -> tuple[Any, ...]:
        full = list(comps)
        for i, value in zip(slots, index_values):
            full[i] = value
        return tuple(full)

    if method == "getitem":

        def fn(x: Any, *index_values: Any) -> Any:
            return x[rebuild(index_values)]

        # Named so that a size mismatch between the array and a NamedArray
        # index reads as an indexing error (args: array, then the indices).
        fn.__name__ = "NamedArray.__getitem__ (args: array, NamedArray indices)"
        return _nmap.nmap(fn)(arr, *named_comps)
    if method == "get":

        def fn(x: Any, *index_values: Any) -> Any:
            return x.at[rebuild(index_values)].get(**kwargs)

        fn.__name__ = "NamedArray.at[...].get (args: array, NamedArray indices)"
        return _nmap.nmap(fn)(arr, *named_comps)

    def update(x: Any, value: Any, *index_values: Any) -> Any:
        return getattr(x.at[rebuild(index_values)], method)(value, **kwargs)

    update.__name__ = f"NamedArray.at[...].{method} (args: array, values, NamedArray indices)"
    return _nmap.nmap(update)(arr, values, *named_comps)


class _DictIndex:
    """A dict index split into advanced (int / array), slice and new-axis entries."""

    def __init__(self, arr: _na.NamedArray, index: Mapping[Any, Any], what: str) -> None:
        named = arr.named_shape
        self.advanced: list[tuple[Any, Any]] = []
        self.slices: list[tuple[Any, slice]] = []
        self.new: list[Any] = []
        missing = []
        for name, value in index.items():
            if value is None:
                if name in named:
                    raise ValueError(
                        f"{what}: a None entry adds a new axis, but {name!r} already exists"
                        f" (named_shape {named})."
                    )
                _na._check_name(name, what)
                self.new.append(name)
                continue
            if name not in named:
                missing.append(name)
                continue
            value = _normalize(value, what)
            if isinstance(value, slice):
                self.slices.append((name, value))
            else:
                dtype = getattr(value, "dtype", None)
                if isinstance(value, bool) or (dtype is not None and dtype == np.bool_):
                    raise IndexError(
                        f"{what}: boolean index for axis {name!r}; indices by name must be"
                        " integers, integer arrays, slices or None. Use `jnp.nonzero` or"
                        " `nx.nmap(jnp.where)` for masks."
                    )
                self.advanced.append((name, value))
        if missing:
            raise ValueError(
                f"{what}: axis names {missing} are not present in the array (named_shape"
                f" {named}, positional_shape {arr.positional_shape})."
            )
        self.has_named = any(isinstance(v, _na.NamedArray) for _, v in self.advanced)

    def names(self) -> list[Any]:
        return [n for n, _ in self.advanced] + [n for n, _ in self.slices]

    def comps(self) -> tuple[Any, ...]:
        return tuple(v for _, v in self.advanced) + tuple(v for _, v in self.slices)

    def broadcast_rank(self) -> int:
        return len(np.broadcast_shapes(*(_index_shape(v) for _, v in self.advanced)))


def _add_new_axes(arr: _na.NamedArray, new: list[Any]) -> _na.NamedArray:
    if not new:
        return arr
    data = arr.data_array
    data = jax.lax.reshape(data, tuple(data.shape) + (1,) * len(new))
    return _na._new(data, _na._strip_leading_none(arr._full_names() + tuple(new)))


def _direct_dict_getitem(arr: _na.NamedArray, spec: _DictIndex) -> _na.NamedArray:
    """Indexes the data in place, without moving axes first."""
    full = arr._full_names()
    dim_of = {n: d for d, n in enumerate(full) if n is not None}
    arrays = [(dim_of[n], v) for n, v in spec.advanced if not _is_int(v)]
    index: list[Any] = [slice(None)] * len(full)
    for name, value in spec.slices + spec.advanced:
        if _is_int(value) or isinstance(value, slice):
            index[dim_of[name]] = value
    int_dims = {dim_of[n] for n, v in spec.advanced if _is_int(v)}
    what = "NamedArray[{...}]"
    if len(arrays) > 1:
        return _fancy_dict_getitem(arr, spec, full, dim_of)
    data = _static_index(arr.data_array, index + [None] * len(spec.new))
    if data is None:
        return _fancy_dict_getitem(arr, spec, full, dim_of)
    new_full = [n for d, n in enumerate(full) if d not in int_dims] + spec.new
    if arrays:
        ((dim, value),) = arrays
        at = dim - sum(1 for d in int_dims if d < dim)
        data = _take(data, value, at, what)
        rank = np.ndim(value)
        new_full[at : at + 1] = [None] * rank
        if any(n is None for n in new_full[:at]):
            data, new_full = _move_to_front(data, new_full, at, rank)
    return _na._new(data, _na._strip_leading_none(new_full))


def _is_int(value: Any) -> bool:
    return type(value) is int or isinstance(value, np.integer)


def _move_to_front(data: Any, full: list[Any], at: int, rank: int) -> tuple[Any, list[Any]]:
    # New positional axes come before the existing ones (as with untag_prefix).
    block = list(range(at, at + rank))
    perm = block + [i for i in range(len(full)) if i not in block]
    return jax.lax.transpose(data, perm), [full[p] for p in perm]


def _fancy_dict_getitem(
    arr: _na.NamedArray, spec: _DictIndex, full: tuple[Any, ...], dim_of: dict[Any, int]
) -> _na.NamedArray:
    """Several index arrays at once: jnp indexing, following numpy's placement rules."""
    index: list[Any] = [slice(None)] * len(full)
    for name, value in spec.slices + spec.advanced:
        index[dim_of[name]] = value
    adv_dims = sorted(dim_of[n] for n, _ in spec.advanced)
    has_array = any(not _is_int(v) for _, v in spec.advanced)
    data = arr.data_array[tuple(index)]
    rest = [n for d, n in enumerate(full) if d not in adv_dims]
    if not has_array:
        return _add_new_axes(_na._new(data, _na._strip_leading_none(rest)), spec.new)
    rank = spec.broadcast_rank()
    contiguous = adv_dims == list(range(adv_dims[0], adv_dims[-1] + 1))
    # numpy puts the broadcast index axes where the indexed axes were if they
    # were adjacent, and in front otherwise.
    at = sum(1 for d in range(adv_dims[0]) if d not in adv_dims) if contiguous else 0
    new_full = rest[:at] + [None] * rank + rest[at:]
    if any(n is None for n in rest[:at]):
        data, new_full = _move_to_front(data, new_full, at, rank)
    return _add_new_axes(_na._new(data, _na._strip_leading_none(new_full)), spec.new)


def _dict_getitem(
    arr: _na.NamedArray, index: Mapping[Any, Any], kwargs: dict[str, Any] | None = None
) -> _na.NamedArray:
    spec = _DictIndex(arr, index, "NamedArray[{...}]")
    if not spec.has_named and kwargs is None:
        return _direct_dict_getitem(arr, spec)
    names = spec.names()
    base = arr.untag_prefix(*names)
    if kwargs is None:
        result = _positional_getitem(base, spec.comps())
    else:
        result = _nmapped(base, spec.comps(), "get", None, kwargs)
    rank = spec.broadcast_rank()
    slice_names = [n for n, _ in spec.slices]
    result = result._tag_positional(range(rank, rank + len(slice_names)), slice_names)
    return _add_new_axes(result, spec.new)


def _components(index: Any, what: str) -> tuple[Any, ...]:
    comps = index if isinstance(index, tuple) else (index,)
    return tuple(_normalize(c, what) for c in comps)


def _has_named(index: Any) -> bool:
    values = (
        index.values()
        if isinstance(index, Mapping)
        else (index if isinstance(index, tuple) else (index,))
    )
    return any(isinstance(v, _na.NamedArray) for v in values)
