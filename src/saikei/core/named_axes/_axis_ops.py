"""Operations along one named axis: `stack`, `concatenate`, `unstack`, `scan`; `order_like`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from saikei.core.named_axes import _named_array as _na
from saikei.core.named_axes import _nmap

PyTree = Any


def _as_named(value: Any) -> _na.NamedArray:
    return value if isinstance(value, _na.NamedArray) else _na.wrap(value)


def _same_layout(arrays: Sequence[_na.NamedArray]) -> bool:
    first = arrays[0]
    return all(
        a.axis_names == first.axis_names and a.data_array.ndim == first.data_array.ndim
        for a in arrays[1:]
    )


def concatenate(arrays: Sequence[_na.NamedArray], axis_name: _na.AxisName) -> _na.NamedArray:
    """Joins arrays along an existing named axis.

    Other named axes are matched by name (and broadcast where missing), as in
    `nmap`.

    Args:
      arrays: NamedArrays that all have the axis `axis_name`.
      axis_name: The axis to concatenate along.

    Returns:
      The concatenated array.

    Example:
      >>> from saikei import sk
      >>> x = sk.nx.concatenate([sk.nx.ones({"a": 2}), sk.nx.zeros({"a": 3})], "a")
      >>> x.unwrap("a").tolist()
      [1.0, 1.0, 0.0, 0.0, 0.0]
    """
    arrays = [_as_named(a) for a in arrays]
    if not arrays:
        raise ValueError("concatenate: needs at least one array.")
    missing = [i for i, a in enumerate(arrays) if axis_name not in a.named_shape]
    if missing:
        shapes = ", ".join(f"[{i}] {arrays[i].named_shape}" for i in missing)
        raise ValueError(
            f"concatenate: arrays {missing} have no axis {axis_name!r} (named shapes:"
            f" {shapes}). Every array must have the axis being concatenated; use `stack`"
            " to create a new axis."
        )
    if _same_layout(arrays):
        dim = arrays[0]._dims_of([axis_name], "concatenate")[0]
        others = [a.data_array.shape[:dim] + a.data_array.shape[dim + 1 :] for a in arrays]
        if all(s == others[0] for s in others):
            data = jnp.concatenate([a.data_array for a in arrays], axis=dim)
            return _na._new(data, arrays[0].axis_names)

    def join(*xs: Any) -> Any:
        return jnp.concatenate(xs, axis=0)

    join.__name__ = "concatenate"
    return _nmap.nmap(join)(*[a.untag_prefix(axis_name) for a in arrays]).tag_prefix(axis_name)


def stack(arrays: Sequence[_na.NamedArray], axis_name: _na.AxisName) -> _na.NamedArray:
    """Stacks arrays along a new named axis.

    Args:
      arrays: NamedArrays (or plain arrays, taken as positional) without the
        axis `axis_name`; other named axes are matched by name.
      axis_name: The name of the new axis.

    Returns:
      The stacked array.

    Example:
      >>> from saikei import sk
      >>> sk.nx.stack([sk.nx.ones({"a": 2}), sk.nx.zeros({"a": 2})], "s").named_shape
      {'s': 2, 'a': 2}
    """
    arrays = [_as_named(a) for a in arrays]
    if not arrays:
        raise ValueError("stack: needs at least one array.")
    _na._check_name(axis_name, "stack")
    clash = [i for i, a in enumerate(arrays) if axis_name in a.named_shape]
    if clash:
        raise ValueError(
            f"stack: arrays {clash} already have an axis {axis_name!r} (named shape"
            f" {arrays[clash[0]].named_shape}); use `concatenate` to join along it."
        )
    first = arrays[0]
    if all(
        a.axis_names == first.axis_names and a.data_array.shape == first.data_array.shape
        for a in arrays[1:]
    ):
        # The new axis leads: each array is then copied as one contiguous block
        # (several times faster than interleaving), and `scan` or `nmap` over
        # the new axis read it in place.
        data = jnp.stack([a.data_array for a in arrays], axis=0)
        return _na._new(data, (axis_name, *first._full_names()))

    def stack_positional(*xs: Any) -> Any:
        return jnp.stack(xs)

    stack_positional.__name__ = "stack"
    return _nmap.nmap(stack_positional)(*arrays).tag_prefix(axis_name)


def unstack(array: _na.NamedArray, axis_name: _na.AxisName) -> list[_na.NamedArray]:
    """Splits an array into a list of slices along a named axis.

    Example:
      >>> from saikei import sk
      >>> parts = sk.nx.unstack(sk.nx.arange("a", 3), "a")
      >>> [int(p) for p in parts]
      [0, 1, 2]
    """
    if not isinstance(array, _na.NamedArray):
        raise TypeError(f"unstack expects a NamedArray, got {type(array).__name__}.")
    dim = array._dims_of([axis_name], "unstack")[0]
    full = list(array._full_names())
    del full[dim]
    names = _na._strip_leading_none(full)
    return [_na._new(x, names) for x in jnp.unstack(array.data_array, axis=dim)]


def order_like(value_tree: PyTree, reference_tree: PyTree) -> PyTree:
    """Transposes every NamedArray in `value_tree` into the layout of its counterpart.

    Useful to make two trees with the same axes have the same pytree structure
    (for example a `lax.scan` carry, or `jax.tree_util.tree_map` over both).

    Args:
      value_tree: A tree containing NamedArrays.
      reference_tree: A tree with the same structure; each NamedArray in
        `value_tree` must correspond to a NamedArray with the same axes.

    Returns:
      `value_tree` with its NamedArrays reordered.

    Example:
      >>> from saikei import sk
      >>> tree = {"x": sk.nx.zeros({"a": 2, "b": 3})}
      >>> ref = {"x": sk.nx.zeros({"b": 3, "a": 2})}
      >>> sk.nx.order_like(tree, ref)["x"].axis_names
      ('b', 'a')
    """

    def reorder(value: Any, reference: Any) -> Any:
        if not isinstance(value, _na.NamedArray):
            return value
        if not isinstance(reference, _na.NamedArray):
            raise TypeError(
                "order_like: a NamedArray in value_tree corresponds to"
                f" {type(reference).__name__} in reference_tree; expected a NamedArray."
            )
        return value.order_like(reference)

    return jax.tree_util.tree_map(reorder, value_tree, reference_tree, is_leaf=_na.is_namedarray)


def scan(
    f: Callable[[Any, Any], tuple[Any, Any]],
    axis: _na.AxisName,
    init: PyTree,
    xs: PyTree = None,
    **scan_kwargs: Any,
) -> tuple[PyTree, PyTree]:
    """`jax.lax.scan` along a named axis.

    Every NamedArray in `xs` is sliced along `axis` (plain arrays along their
    first axis); `f(carry, x)` sees NamedArrays without that axis. The carry
    returned by `f` is reordered like the input carry, and every leaf of the
    stacked outputs gets `axis` back as a named axis.

    Args:
      f: `(carry, x) -> (carry, y)`, as for `jax.lax.scan`.
      axis: The named axis to scan over.
      init: The initial carry.
      xs: Values to scan over; may be None when `length` is given.
      **scan_kwargs: Passed to `jax.lax.scan` (`length`, `reverse`, `unroll`).

    Returns:
      `(final_carry, ys)`.

    Example:
      >>> from saikei import sk
      >>> xs = sk.nx.arange("t", 4)
      >>> step = lambda c, x: (c + x, c + x)
      >>> total, running = sk.nx.scan(step, "t", sk.nx.wrap(0), xs)
      >>> int(total), running.unwrap("t").tolist()
      (6, [0, 1, 3, 6])
    """

    def slice_first(x: Any) -> Any:
        if not isinstance(x, _na.NamedArray):
            return x
        if axis not in x.named_shape:
            raise ValueError(
                f"scan: a NamedArray in xs has no axis {axis!r} (named_shape"
                f" {x.named_shape}); every NamedArray in xs must have the scanned axis."
            )
        return x.untag_prefix(axis).with_positional_prefix()

    prepared = jax.tree_util.tree_map(slice_first, xs, is_leaf=_na.is_namedarray)

    def reorder(value: Any, reference: Any) -> Any:
        if isinstance(value, _na.NamedArray) and isinstance(reference, _na.NamedArray):
            return value.order_like(reference)
        return value

    def body(carry: Any, x: Any) -> tuple[Any, Any]:
        new_carry, y = f(carry, x)
        try:
            new_carry = jax.tree_util.tree_map(reorder, new_carry, carry, is_leaf=_na.is_namedarray)
        except ValueError as e:
            if "order_like" in str(e):
                raise
            # Different tree structures: lax.scan reports that more clearly.
        return new_carry, y

    final, ys = jax.lax.scan(body, init, prepared, **scan_kwargs)

    def retag(y: Any) -> Any:
        return _as_named(y).tag_prefix(axis)

    return final, jax.tree_util.tree_map(retag, ys, is_leaf=_na.is_namedarray)
