"""Entry points for indexing NamedArrays (`arr[idx]`, `arr.at[idx].set(...)`, ...)
and the cached dispatch that keeps eager calls cheap."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core.named_axes import _named_array as _na
from saikei.core.named_axes._indexing import (
    _components,
    _dict_getitem,
    _DictIndex,
    _has_named,
    _index_shape,
    _is_int,
    _nmapped,
    _normalize,
    _positional_getitem,
)


def _eager_op(
    op: str, arr: _na.NamedArray, index: Any, values: Any, kwargs: dict[str, Any]
) -> _na.NamedArray:
    if op == "getitem":
        if isinstance(index, Mapping):
            return _dict_getitem(arr, index)
        return _positional_getitem(arr, _components(index, "NamedArray[...]"))
    if op == "get":
        if isinstance(index, Mapping):
            return _dict_getitem(arr, index, kwargs)
        return _nmapped(arr, _components(index, "NamedArray.at[...].get"), "get", None, kwargs)
    return _update(arr, index, op, values, kwargs)


class _Slice(NamedTuple):
    start: int | None
    stop: int | None
    step: int | None


class _Dynamic:
    """Marks where an array index goes in a static index description."""


_DYNAMIC = _Dynamic()


def _split_index(
    index: Any, what: str, named_shape: dict[Any, int]
) -> tuple[Any, list[Any]] | None:
    """Splits an index into a hashable static description and its arrays.

    Integers become (0-d) arrays so that an eager loop over positions reuses
    one compiled helper; they index exactly like the integers would. Returns
    None when the index cannot be traced (boolean masks, unknown types).
    """
    if isinstance(index, Mapping):
        kind, keys, values = "dict", tuple(index), list(index.values())
    elif isinstance(index, tuple):
        kind, keys, values = "tuple", None, list(index)
    else:
        kind, keys, values = "single", None, [index]
    statics: list[Any] = []
    dynamic: list[Any] = []
    for i, value in enumerate(values):
        value = _normalize(value, what)
        if _is_int(value):
            if kind == "dict" and keys[i] in named_shape:
                size = named_shape[keys[i]]
                if not -size <= value < size:
                    raise IndexError(
                        f"{what}: index {value} is out of bounds for axis {keys[i]!r} of"
                        f" size {size}."
                    )
            value = np.asarray(value, dtype=np.int32)
        if isinstance(value, _na.NamedArray | jax.Array | np.ndarray):
            if getattr(value, "dtype", None) == np.bool_:
                return None
            statics.append(_DYNAMIC)
            dynamic.append(value)
        elif isinstance(value, slice):
            statics.append(_Slice(value.start, value.stop, value.step))
        elif value is None or value is Ellipsis:
            statics.append(value)
        else:
            return None
    return (kind, keys, tuple(statics)), dynamic


def _join_index(static: tuple[Any, ...], dynamic: list[Any]) -> Any:
    kind, keys, statics = static
    arrays = iter(dynamic)
    values = []
    for item in statics:
        if item is _DYNAMIC:
            values.append(next(arrays))
        elif type(item) is _Slice:
            values.append(slice(*item))
        else:
            values.append(item)
    if kind == "dict":
        return dict(zip(keys, values))
    return tuple(values) if kind == "tuple" else values[0]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jitted_op(
    op: str,
    static_index: tuple[Any, ...],
    static_kwargs: tuple[tuple[str, Any], ...],
    arr: _na.NamedArray,
    values: Any,
    dynamic: list[Any],
) -> _na.NamedArray:
    index = _join_index(static_index, dynamic)
    return _eager_op(op, arr, index, values, dict(static_kwargs))


def _dispatch(
    op: str, arr: _na.NamedArray, index: Any, values: Any, kwargs: dict[str, Any]
) -> _na.NamedArray:
    """Runs an indexing operation through a jitted helper cached by index structure."""
    split = _split_index(index, f"NamedArray.at[...].{op}", arr.named_shape)
    static_kwargs = tuple(sorted(kwargs.items()))
    try:
        hash(static_kwargs)
    except TypeError:
        split = None
    if isinstance(values, list):
        values = np.asarray(values)
    traceable = values is None or isinstance(
        values, _na.NamedArray | jax.Array | np.ndarray | np.generic | bool | int | float | complex
    )
    if split is None or not traceable:
        return _eager_op(op, arr, index, values, kwargs)
    static, dynamic = split
    return _jitted_op(op, static, static_kwargs, arr, values, dynamic)


def _align_update_values(
    values: Any,
    arr: _na.NamedArray,
    spec: _DictIndex,
    what: str,
) -> _na.NamedArray:
    """Lays out update values like the base array's indexed positional slice."""
    value = values if isinstance(values, _na.NamedArray) else _na.wrap(values)
    named = arr.named_shape
    b_shape = np.broadcast_shapes(*(_index_shape(v) for _, v in spec.advanced))
    clash = [n for n, _ in spec.advanced if n in value.named_shape]
    if clash:
        raise ValueError(
            f"{what}: the update values have named axes {clash}, which are indexed by"
            " integers or arrays and so do not exist in the indexed result. Values"
            f" named_shape {value.named_shape}."
        )
    slice_names = [n for n, _ in spec.slices]
    sizes = {n: len(range(named[n])[s]) for n, s in spec.slices}
    wrong = {n: value.named_shape[n] for n in slice_names if n in value.named_shape}
    wrong = {n: s for n, s in wrong.items() if s != sizes[n]}
    if wrong:
        raise ValueError(
            f"{what}: update values have axes {wrong} but the sliced sizes are"
            f" { {n: sizes[n] for n in wrong} }."
        )
    target = tuple(b_shape) + arr.positional_shape
    missing = {n: sizes[n] for n in slice_names if n not in value.named_shape}
    value = value.broadcast_to(target, missing).with_positional_prefix()
    positional = list(range(len(target)))
    wanted = (
        positional[: len(b_shape)] + value._dims_of(slice_names, what) + positional[len(b_shape) :]
    )
    return value._make_positional(wanted)


def _update(
    arr: _na.NamedArray, index: Any, method: str, values: Any, kwargs: dict[str, Any]
) -> _na.NamedArray:
    what = f"NamedArray.at[...].{method}"
    if not isinstance(index, Mapping):
        comps = index if isinstance(index, tuple) else (index,)
        comps = tuple(_normalize(c, what) for c in comps)
        direct = _direct_positional_update(arr, comps, method, values, kwargs)
        if direct is not None:
            return direct
        return _layout_like(_nmapped(arr, comps, method, values, kwargs), arr)
    spec = _DictIndex(arr, index, what)
    if spec.new:
        raise ValueError(f"{what}: None entries (new axes) cannot be updated: {spec.new}.")
    names = spec.names()
    for name, value in spec.advanced:
        if isinstance(value, _na.NamedArray) and name in value.named_shape:
            raise ValueError(
                f"{what}: the index for axis {name!r} is a NamedArray that itself has an"
                f" axis {name!r}; rename the index's axis."
            )
    dim_of = {n: d for d, n in enumerate(arr._full_names()) if n is not None}
    by_dim = {dim_of[name]: value for name, value in spec.advanced + spec.slices}
    direct = _direct_update(arr, by_dim, method, values, kwargs)
    if direct is not None:  # e.g. the cache update `x.at[{"seq": i}].set(v)`
        return direct
    if method != "apply":
        values = _align_update_values(values, arr, spec, what)
    base = arr.untag_prefix(*names)
    result = _nmapped(base, spec.comps(), method, values, kwargs)
    return _layout_like(result.tag_prefix(*names), arr)


def _layout_like(result: _na.NamedArray, arr: _na.NamedArray) -> _na.NamedArray:
    """An updated array in the layout of the array it updates, where the axes allow.

    A stable layout keeps eager update loops on one compiled helper, and
    keeps e.g. a cache updated in a `lax.scan` in its original layout.
    """
    if result.axis_names == arr.axis_names:
        return result
    if set(result.named_shape) != set(arr.named_shape):
        return result  # the values added axes: there is no common layout
    return result.order_like(arr)


def _is_scalar_index(value: Any) -> bool:
    if isinstance(value, jax.Array | np.ndarray):
        return value.ndim == 0 and np.issubdtype(value.dtype, np.integer)
    return _is_int(value)


def _direct_positional_update(
    arr: _na.NamedArray, comps: tuple[Any, ...], method: str, values: Any, kwargs: dict[str, Any]
) -> _na.NamedArray | None:
    """`_direct_update` for a positional index such as `x.at[0]` or `x.at[..., 1:]`."""
    if not all(c is Ellipsis or isinstance(c, slice) or _is_scalar_index(c) for c in comps):
        return None
    full = arr._full_names()
    pos_dims = [d for d, n in enumerate(full) if n is None]
    ellipses = [i for i, c in enumerate(comps) if c is Ellipsis]
    if len(ellipses) > 1:
        return None
    if ellipses:
        at = ellipses[0]
        fill = (slice(None),) * (len(pos_dims) - len(comps) + 1)
        comps = comps[:at] + fill + comps[at + 1 :]
    if len(comps) > len(pos_dims):
        return None
    return _direct_update(arr, dict(zip(pos_dims, comps)), method, values, kwargs)


def _direct_update(
    arr: _na.NamedArray,
    index_of_dim: dict[int, Any],
    method: str,
    values: Any,
    kwargs: dict[str, Any],
) -> _na.NamedArray | None:
    """Updates in the array's own layout, without moving its data.

    Handles integer and slice indices (keyed by data dimension); returns None
    for anything else (index arrays, masks, values that do not simply fit the
    indexed part), which takes the general path and its error messages.
    """
    if not all(isinstance(c, slice) or _is_scalar_index(c) for c in index_of_dim.values()):
        return None
    full = arr._full_names()
    index = [index_of_dim.get(d, slice(None)) for d in range(len(full))]
    shape = arr.data_array.shape
    kept = [d for d in range(len(full)) if isinstance(index[d], slice)]
    layout = [full[d] for d in kept]
    sizes = [len(range(shape[d])[index[d]]) for d in kept]
    data = arr.data_array
    if not isinstance(data, jax.Array):
        data = jnp.asarray(data)
    ref = getattr(data.at[tuple(index)], method)
    if method == "apply":
        return _na._new(ref(values, **kwargs), arr.axis_names)
    aligned = _align_to_layout(values, layout, sizes)
    if aligned is None:
        return None
    return _na._new(ref(aligned, **kwargs), arr.axis_names)


def _align_to_layout(values: Any, layout: list[Any], sizes: list[int]) -> Any:
    """Moves update values into `layout` (a name or None per dim); None if unsure.

    Positional axes of the values align with the trailing positional axes of
    `layout` and may have size 1; named axes must exist in `layout` with
    exactly its size.
    """
    if isinstance(values, _na.NamedArray):
        value = values
    elif isinstance(values, bool | int | float | complex):
        return values
    elif isinstance(values, jax.Array | np.ndarray | np.generic):
        value = _na._new(values, ())
    else:
        return None
    vfull = value._full_names()
    slots = [i for i, n in enumerate(layout) if n is None]
    vpos = [d for d, n in enumerate(vfull) if n is None]
    if len(vpos) > len(slots):
        return None
    slot_of = dict(zip(slots[len(slots) - len(vpos) :], vpos))
    where = {n: i for i, n in enumerate(layout) if n is not None}
    for d, n in enumerate(vfull):
        if n is not None:
            if n not in where:
                return None
            slot_of[where[n]] = d
    vshape = value.data_array.shape
    for i, d in slot_of.items():
        if vshape[d] != sizes[i] and not (layout[i] is None and vshape[d] == 1):
            return None
    data = value.data_array
    if not slot_of:
        return data
    used = sorted(slot_of)
    perm = [slot_of[i] for i in used]
    if perm != sorted(perm):
        data = jax.lax.transpose(data, perm)
    new_shape = tuple(
        vshape[slot_of[i]] if i in slot_of else 1 for i in range(used[0], len(layout))
    )
    if new_shape != tuple(data.shape):
        data = jax.lax.reshape(data, new_shape)
    return data


def getitem(arr: _na.NamedArray, index: Any) -> _na.NamedArray:
    """`arr[index]`: positional numpy-style indexing, or indexing by name with a dict."""
    if _has_named(index):
        # Vectorized indices run through nmap; a cached jitted helper keeps
        # that cheap for eager calls.
        return _dispatch("getitem", arr, index, None, {})
    return _eager_op("getitem", arr, index, None, {})


class IndexUpdateRef:
    """The object returned by `arr.at[index]`; its methods return updated copies.

    Indices work as in `arr[index]`: positional, or a dict by name. Values are
    broadcast by name; positional values broadcast against the indexed part.

    Example:
      >>> from saikei import sk
      >>> x = sk.nx.zeros({"a": 3})
      >>> x.at[{"a": 1}].set(5.0).unwrap("a").tolist()
      [0.0, 5.0, 0.0]
    """

    def __init__(self, array: _na.NamedArray, index: Any) -> None:
        self._array = array
        self._index = index

    def get(self, **kwargs: Any) -> _na.NamedArray:
        """Reads the indexed values (like `arr[index]`, with jax's `.get` options)."""
        return _dispatch("get", self._array, self._index, None, kwargs)

    def set(self, values: Any, **kwargs: Any) -> _na.NamedArray:
        """Replaces the indexed values."""
        return _dispatch("set", self._array, self._index, values, kwargs)

    def apply(self, func: Callable[[Any], Any], **kwargs: Any) -> _na.NamedArray:
        """Applies a unary elementwise function to the indexed values."""
        return _update(self._array, self._index, "apply", func, kwargs)

    def add(self, values: Any, **kwargs: Any) -> _na.NamedArray:
        """Adds to the indexed values."""
        return _dispatch("add", self._array, self._index, values, kwargs)

    def multiply(self, values: Any, **kwargs: Any) -> _na.NamedArray:
        """Multiplies the indexed values."""
        return _dispatch("multiply", self._array, self._index, values, kwargs)

    mul = multiply

    def divide(self, values: Any, **kwargs: Any) -> _na.NamedArray:
        """Divides the indexed values."""
        return _dispatch("divide", self._array, self._index, values, kwargs)

    div = divide

    def power(self, values: Any, **kwargs: Any) -> _na.NamedArray:
        """Raises the indexed values to a power."""
        return _dispatch("power", self._array, self._index, values, kwargs)

    def min(self, values: Any, **kwargs: Any) -> _na.NamedArray:
        """Takes the elementwise minimum with the indexed values."""
        return _dispatch("min", self._array, self._index, values, kwargs)

    def max(self, values: Any, **kwargs: Any) -> _na.NamedArray:
        """Takes the elementwise maximum with the indexed values."""
        return _dispatch("max", self._array, self._index, values, kwargs)


class IndexUpdateHelper:
    """The `arr.at` property: `arr.at[index]` gives an `IndexUpdateRef`."""

    def __init__(self, array: _na.NamedArray) -> None:
        self._array = array

    def __getitem__(self, index: Any) -> IndexUpdateRef:
        return IndexUpdateRef(self._array, index)
