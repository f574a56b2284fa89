"""The `NamedArray` data structure: an array whose trailing axes may carry names.

A NamedArray stores one array (`data_array`) and a static tuple `axis_names`
aligned with the *trailing* dimensions of that array. Entry `i` of
`axis_names` names data dimension `ndim - len(axis_names) + i`; a `None` entry
marks a positional axis, and data dimensions not covered by `axis_names` (the
leading ones) are positional too. Positional axes are ordered by their order in
the data.

Because names are aligned from the end, anything that adds leading dimensions
to every leaf of a tree (`jax.vmap`, `lax.scan`, stacking with
`jax.tree_util.tree_map`) keeps a NamedArray valid: the new dimensions simply
become leading positional axes. `tag` and `untag` only relabel dimensions; data
moves only when an operation asks for an order the data does not already have.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import _viz_hooks
from saikei.core._struct import Struct, StructStaticMetadata, pytree_dataclass
from saikei.core.named_axes._array_methods import ArrayMethods
from saikei.core.named_axes._layout import (
    MislabeledNamedArrayError,
    _aux_for,
    _check_name,  # noqa: F401  (used by sibling modules as `_na._check_name`)
    _check_names,
    _from_named_axes,
    _from_view_fields,
    _LayoutAux,
    _mislabeled_error,
    _no_shape_error,
    _rank_error,
    _strip_leading_none,
    _trailing,
)

AxisName: TypeAlias = Hashable
"""An axis name: any hashable value except an `int` (or `None`, which marks a
positional axis)."""


class TmpPosAxisMarker:
    """A unique axis name, used to give a positional axis a temporary name.

    Every instance is equal only to itself, so a marker can never clash with a
    user's axis name.

    Example:
      >>> from saikei import sk
      >>> marker = sk.nx.TmpPosAxisMarker()
      >>> x = sk.nx.wrap([1, 2, 3]).tag(marker)
      >>> x.untag(marker).unwrap().tolist()
      [1, 2, 3]
    """

    _counter = itertools.count()

    def __init__(self) -> None:
        self._id = next(TmpPosAxisMarker._counter)

    def __repr__(self) -> str:
        return f"TmpPosAxisMarker({self._id})"


_DATA_KEY = jax.tree_util.GetAttrKey("data_array")
_object_new = object.__new__
_UNSET: Any = object()


@pytree_dataclass(eq=False)
class NamedArray(ArrayMethods, Struct):
    """An array whose axes are positional or named.

    saikei has a single named-array type. penzai's `NamedArray` (positional
    prefix, named suffix) and `NamedArrayView` (axes in any order) are both
    values of this class, and `sk.nx.NamedArrayBase` / `sk.nx.NamedArrayView`
    are aliases of it.

    Attributes:
      data_array: The underlying array (a `jax.Array`, `np.ndarray`,
        `jax.ShapeDtypeStruct` or tracer).
      axis_names: One entry per trailing dimension of `data_array`: an axis
        name, or `None` for a positional axis. Leading dimensions not covered
        are positional. Leading `None` entries are dropped on construction.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> x = sk.nx.NamedArray(jnp.zeros((2, 3)), axis_names=("rows", "cols"))
      >>> x.named_shape
      {'rows': 2, 'cols': 3}
    """

    data_array: Any
    axis_names: tuple[AxisName | None, ...] = dataclasses.field(metadata={"pytree_node": False})

    # Sizes of the trailing dims that `axis_names` cover, kept only when the
    # data cannot confirm them: it has no shape (e.g. a tree of shardings), or
    # it no longer matches them (then `axis_names` is withheld, see
    # __getattr__).
    _axis_sizes: ClassVar[tuple[int, ...] | None] = None

    def __init__(
        self,
        data_array: Any = _UNSET,
        axis_names: Sequence[AxisName | None] = (),
        *,
        named_axes: Mapping[AxisName, int] | None = None,
        data_shape: Sequence[int] | None = None,
        data_axis_for_logical_axis: Sequence[int] | None = None,
        data_axis_for_name: Mapping[AxisName, int] | None = None,
    ) -> None:
        if isinstance(data_array, Mapping) and named_axes is None:
            # penzai's positional order: NamedArray(named_axes, data_array).
            data_array, named_axes = axis_names, data_array
            axis_names = ()
        if data_array is _UNSET:
            raise TypeError("NamedArray() needs a data_array.")
        view = (data_shape, data_axis_for_logical_axis, data_axis_for_name)
        d = self.__dict__
        if named_axes is not None:
            if axis_names or any(v is not None for v in view):
                raise TypeError(
                    "NamedArray: pass either axis_names, named_axes (penzai's"
                    " NamedArray) or data_shape/data_axis_for_logical_axis/"
                    "data_axis_for_name (penzai's NamedArrayView), not several."
                )
            data_array, names, sizes = _from_named_axes(data_array, named_axes)
        elif any(v is not None for v in view):
            if axis_names:
                raise TypeError(
                    "NamedArray: pass either axis_names or penzai's NamedArrayView"
                    " fields (data_shape, data_axis_for_logical_axis, data_axis_for_name),"
                    " not both."
                )
            data_array, names, sizes = _from_view_fields(data_array, *view)
        else:
            names = tuple(axis_names)
            _check_names([n for n in names if n is not None], "NamedArray(axis_names=...)")
            shape = getattr(data_array, "shape", None)
            if shape is not None and len(names) > len(shape):
                raise ValueError(
                    f"NamedArray: axis_names {names} has {len(names)} entries but"
                    f" data_array has only {len(shape)} dimensions (shape {tuple(shape)})."
                )
            sizes = None
        names = _strip_leading_none(names)
        if sizes is not None:
            d["_axis_sizes"] = sizes[len(sizes) - len(names) :]
        d["data_array"] = data_array
        d["axis_names"] = names

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes missing from the instance. A NamedArray
        # rebuilt by `tree_unflatten` gets its `axis_names` here, on first
        # use, once its data has been checked against the sizes the names
        # were flattened with; a mismatch withholds the names for good, so
        # that every operation (they all read them) raises instead of
        # relabelling the data.
        if name == "axis_names":
            d = self.__dict__
            if "_mislabeled_names" not in d:
                aux = d.get("_aux")
                if aux is None:
                    raise AttributeError("NamedArray has no axis_names (it was never set)")
                static = aux.static_fields
                names, sizes = static[0][1], static[1][1]
                if sizes is not None:
                    shape = getattr(d["data_array"], "shape", None)
                    if shape is None:
                        d["_axis_sizes"] = sizes  # e.g. a sharding standing in for data
                    elif len(shape) >= len(sizes) and _trailing(shape, len(sizes)) != sizes:
                        # (Too few dims is reported by every use as a rank error.)
                        d["_axis_sizes"] = sizes
                        d["_mislabeled_names"] = names
                if "_mislabeled_names" not in d:
                    d["axis_names"] = names
                    return names
            raise _mislabeled_error(d["_mislabeled_names"], d["_axis_sizes"], d["data_array"].shape)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _is_mislabeled(self) -> bool:
        """Whether the data no longer matches the names (checks them if needed)."""
        try:
            self.axis_names  # noqa: B018
        except MislabeledNamedArrayError:
            return True
        return False

    def _layout_aux(self) -> _LayoutAux:
        d = self.__dict__
        aux = d.get("_aux")
        if aux is not None:
            return aux
        names = d["axis_names"]
        sizes = d.get("_axis_sizes")
        if sizes is None:
            shape = getattr(d["data_array"], "shape", None)
            if shape is not None:
                sizes = _trailing(shape, len(names))
        aux = d["_aux"] = _aux_for(names, sizes)
        return aux

    # Flattening is on the hot path of every jitted call that takes a
    # NamedArray, so it is written out here rather than inherited.
    def tree_flatten(self) -> tuple[tuple[Any, ...], StructStaticMetadata]:
        """Pytree protocol: the data array is the only child."""
        return (self.data_array,), self._layout_aux()

    def tree_flatten_with_keys(self) -> tuple[list[tuple[Any, Any]], StructStaticMetadata]:
        """Pytree protocol: the data array, keyed `.data_array`."""
        return [(_DATA_KEY, self.data_array)], self._layout_aux()

    @classmethod
    def tree_unflatten(cls, aux: StructStaticMetadata, children: Any) -> NamedArray:
        """Pytree protocol: rebuilds without validating (leaves may be anything).

        The names are checked against the data on first use: if the data's
        shape contradicts the sizes the names were flattened with, using the
        array raises `MislabeledNamedArrayError`.
        """
        obj = _object_new(cls)
        d = obj.__dict__
        d["data_array"] = children[0]
        d["_aux"] = aux
        return obj

    # ------------------------------------------------ penzai's field names
    #
    # penzai stores a NamedArray as `named_axes` (an ordered name -> size
    # mapping for a named suffix of the data) and a NamedArrayView as
    # `data_shape`, `data_axis_for_logical_axis` and `data_axis_for_name`.
    # saikei's single representation answers all of them.

    @property
    def named_axes(self) -> collections.OrderedDict[AxisName, int]:
        """penzai's field: the named axes and their sizes, in data order.

        Example:
          >>> from saikei import sk
          >>> list(sk.nx.zeros({"a": 2, "b": 3}).named_axes.items())
          [('a', 2), ('b', 3)]
        """
        return collections.OrderedDict(self.named_shape)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """penzai's NamedArrayView field: the shape of `data_array`.

        Example:
          >>> from saikei import sk
          >>> sk.nx.zeros({"a": 2, "b": 3}).untag("b").data_shape
          (2, 3)
        """
        self.axis_names  # noqa: B018  (raises for a mislabeled array)
        return tuple(self.data_array.shape)

    @property
    def data_axis_for_logical_axis(self) -> tuple[int, ...]:
        """penzai's NamedArrayView field: the data dimension of each positional axis.

        Example:
          >>> from saikei import sk
          >>> sk.nx.zeros({"a": 2, "b": 3}).untag("b").data_axis_for_logical_axis
          (1,)
        """
        return tuple(d for d, n in enumerate(self._full_names()) if n is None)

    @property
    def data_axis_for_name(self) -> dict[AxisName, int]:
        """penzai's NamedArrayView field: the data dimension of each named axis.

        Example:
          >>> from saikei import sk
          >>> sk.nx.zeros({"a": 2, "b": 3}).untag("b").data_axis_for_name
          {'a': 0}
        """
        return {n: d for d, n in enumerate(self._full_names()) if n is not None}

    @staticmethod
    def wrap(array: Any, *names: AxisName) -> NamedArray:
        """Same as `sk.nx.wrap` (kept as a method for penzai compatibility).

        Example:
          >>> from saikei import sk
          >>> sk.nx.NamedArray.wrap([1, 2], "a").named_shape
          {'a': 2}
        """
        return wrap(array, *names)

    # ------------------------------------------------------------------ shape

    @property
    def named_shape(self) -> dict[AxisName, int]:
        """The size of each named axis, in the order of the data's dimensions.

        Example:
          >>> from saikei import sk
          >>> sk.nx.zeros({"a": 2, "b": 3}).named_shape
          {'a': 2, 'b': 3}
        """
        names = self.axis_names
        if not names:
            return {}
        shape = getattr(self.data_array, "shape", None)
        if shape is None and self._axis_sizes is not None:
            shape = self._axis_sizes  # data without a shape, e.g. a sharding
        elif shape is None:
            raise _no_shape_error(self.data_array)
        if len(names) > len(shape):
            raise _rank_error(names, shape)
        shape = shape[-len(names) :]
        if None not in names:
            return dict(zip(names, shape))
        return {n: s for n, s in zip(names, shape) if n is not None}

    @property
    def positional_shape(self) -> tuple[int, ...]:
        """The sizes of the positional axes, in order.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> sk.nx.wrap(jnp.zeros((2, 3))).tag_prefix("a").positional_shape
          (3,)
        """
        names = self.axis_names
        shape = tuple(self.data_array.shape)
        lead = len(shape) - len(names)
        if lead < 0:
            raise _rank_error(names, shape)
        if None not in names:
            return shape[:lead]
        return shape[:lead] + tuple(s for n, s in zip(names, shape[lead:]) if n is None)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the data.

        Example:
          >>> from saikei import sk
          >>> sk.nx.ones({"a": 2}).dtype
          dtype('float32')
        """
        return self.data_array.dtype

    def _full_names(self) -> tuple[AxisName | None, ...]:
        names = self.axis_names
        lead = self.data_array.ndim - len(names)
        if lead < 0:
            raise _rank_error(names, self.data_array.shape)
        return (None,) * lead + names

    def check_valid(self) -> None:
        """Raises a ValueError if this NamedArray is inconsistent.

        Checks that `data_array` is an array with a shape and dtype, that
        `axis_names` is a tuple no longer than the data's rank, and that the
        names are valid and distinct.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> sk.nx.wrap(jnp.zeros(3)).tag("a").check_valid()
        """
        data = self.data_array
        if not (hasattr(data, "shape") and hasattr(data, "dtype")):
            raise ValueError(
                "NamedArray.data_array must be an array (jax.Array, np.ndarray,"
                f" jax.ShapeDtypeStruct or tracer); got {type(data).__name__}: {data!r}."
            )
        names = self.axis_names
        if not isinstance(names, tuple):
            raise ValueError(f"NamedArray.axis_names must be a tuple, got {names!r}.")
        if len(names) > len(data.shape):
            raise _rank_error(names, data.shape)
        _check_names([n for n in names if n is not None], "NamedArray.axis_names")

    # ------------------------------------------------------------ relabelling

    def _with_layout(self, full: list[AxisName | None], perm: list[int] | None) -> NamedArray:
        data = self.data_array
        if perm is not None and perm != list(range(len(perm))):
            data = jax.lax.transpose(data, perm)
        return _new(data, _strip_leading_none(full))

    def _make_positional(self, dims: Sequence[int]) -> NamedArray:
        """Turns data dims `dims` into positional axes, in that order."""
        full = list(self._full_names())
        for d in dims:
            full[d] = None
        pos_dims = [d for d in range(len(full)) if full[d] is None and d not in dims]
        # Positional axes are ordered by data position: new ones go first.
        wanted = list(dims) + pos_dims
        slots = sorted(wanted)
        if wanted == slots:
            return self._with_layout(full, None)
        perm = list(range(len(full)))
        for slot, d in zip(slots, wanted):
            perm[slot] = d
        return self._with_layout([full[p] for p in perm], perm)

    def _dims_of(self, names: Sequence[AxisName], what: str) -> list[int]:
        full = self._full_names()
        index = {n: d for d, n in enumerate(full) if n is not None}
        missing = [n for n in names if n not in index]
        if missing:
            raise ValueError(
                f"{what}: axis names {missing} are not present in the array; its"
                f" named_shape is {self.named_shape} (positional_shape"
                f" {self.positional_shape})."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"{what}: repeated axis names in {tuple(names)}.")
        return [index[n] for n in names]

    def untag(self, *names: AxisName) -> NamedArray:
        """Makes the named axes `names` positional, in the given order.

        The array must not already have positional axes (use `untag_prefix`
        to add positional axes in front of existing ones).

        Args:
          *names: Names of axes to make positional.

        Returns:
          An array whose positional axes are `names`, in order.

        Example:
          >>> from saikei import sk
          >>> x = sk.nx.zeros({"a": 2, "b": 3}).untag("b")
          >>> x.positional_shape, x.named_shape
          ((3,), {'a': 2})
        """
        if not names:
            return self
        axis_names = self.axis_names
        if self.data_array.ndim != len(axis_names) or None in axis_names:
            if self.data_array.ndim < len(axis_names):
                raise _rank_error(axis_names, self.data_array.shape)
            raise ValueError(
                f"untag{names}: the array already has positional axes (positional_shape"
                f" {self.positional_shape}, named_shape {self.named_shape}). Name them"
                " first with `tag`, or use `untag_prefix` to put the new positional"
                " axes in front of them."
            )
        try:
            dims = [axis_names.index(n) for n in names]
        except ValueError:
            dims = self._dims_of(names, f"untag{names}")  # raises with details
        if len(set(dims)) != len(dims):
            self._dims_of(names, f"untag{names}")
        if dims == sorted(dims):
            # Already in data order: relabel only.
            full = list(axis_names)
            for d in dims:
                full[d] = None
            return _new(self.data_array, _strip_leading_none(full))
        return self._make_positional(dims)

    def untag_prefix(self, *names: AxisName) -> NamedArray:
        """Makes the named axes `names` positional, in front of existing positional axes.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> x = sk.nx.wrap(jnp.zeros((2, 3))).tag_prefix("a")
          >>> x.untag_prefix("a").positional_shape
          (2, 3)
        """
        if not names:
            return self
        return self._make_positional(self._dims_of(names, f"untag_prefix{names}"))

    def _tag_positional(self, positions: Sequence[int], names: Sequence[AxisName]) -> NamedArray:
        full = list(self._full_names())
        pos_dims = [d for d, n in enumerate(full) if n is None]
        for p, name in zip(positions, names):
            full[pos_dims[p]] = name
        return _new(self.data_array, _strip_leading_none(full))

    def tag(self, *names: AxisName) -> NamedArray:
        """Names every positional axis, in order.

        Args:
          *names: One new axis name per positional axis.

        Returns:
          An array with no positional axes.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> sk.nx.wrap(jnp.zeros((2, 3))).tag("a", "b").named_shape
          {'a': 2, 'b': 3}
        """
        axis_names = self.axis_names
        if not axis_names and len(names) == self.data_array.ndim:
            _check_names(names, f"tag{names}")
            return _new(self.data_array, names)
        pos = self.positional_shape
        if len(names) != len(pos):
            raise ValueError(
                f"tag{names}: expected exactly one name per positional axis, but got"
                f" {len(names)} name(s) for positional_shape {pos} (named_shape"
                f" {self.named_shape}). Use `tag_prefix` to name only the first axes."
            )
        _check_names(names, f"tag{names}", tuple(self.named_shape))
        return self._tag_positional(range(len(names)), names)

    def tag_prefix(self, *names: AxisName) -> NamedArray:
        """Names the first `len(names)` positional axes.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> x = sk.nx.wrap(jnp.zeros((2, 3))).tag_prefix("a")
          >>> x.named_shape, x.positional_shape
          ({'a': 2}, (3,))
        """
        pos = self.positional_shape
        if len(names) > len(pos):
            raise ValueError(
                f"tag_prefix{names}: got {len(names)} names but the array has only"
                f" {len(pos)} positional axes (positional_shape {pos}, named_shape"
                f" {self.named_shape})."
            )
        _check_names(names, f"tag_prefix{names}", tuple(self.named_shape))
        return self._tag_positional(range(len(names)), names)

    def unwrap(self, *names: AxisName) -> Any:
        """Returns the positional data; `names` are untagged first.

        Args:
          *names: If given, these named axes become the positional axes (the
            array must then have no positional axes of its own).

        Returns:
          The data array with positional axes only.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> sk.nx.wrap(jnp.zeros((2, 3))).tag("a", "b").unwrap("b", "a").shape
          (3, 2)
        """
        arr = self.untag(*names) if names else self
        if arr.named_shape:
            raise ValueError(
                f"unwrap{names}: the array still has named axes {arr.named_shape};"
                f" pass every name (in the order you want) to unwrap, e.g."
                f" `unwrap{tuple(arr.named_shape)}`, or untag them first."
            )
        return arr.data_array

    def with_positional_prefix(self) -> NamedArray:
        """Moves data so that positional axes come first, followed by named axes.

        The result has the canonical layout: it stays valid under
        `jax.tree_util.tree_map` operations that add leading axes.

        Example:
          >>> from saikei import sk
          >>> x = sk.nx.zeros({"a": 2, "b": 3}).untag("b").with_positional_prefix()
          >>> x.data_array.shape
          (3, 2)
        """
        names = self.axis_names
        if None not in names:
            return self
        full = self._full_names()
        pos = [d for d, n in enumerate(full) if n is None]
        named = [d for d, n in enumerate(full) if n is not None]
        return _new(jax.lax.transpose(self.data_array, pos + named), tuple(full[d] for d in named))

    def as_namedarrayview(self) -> NamedArray:
        """Returns this array unchanged.

        penzai distinguishes `NamedArray` and `NamedArrayView`; saikei has one
        representation, so this conversion is the identity. It exists so
        penzai code keeps working.

        Example:
          >>> from saikei import sk
          >>> x = sk.nx.ones({"a": 2})
          >>> x.as_namedarrayview() is x
          True
        """
        return self

    def order_as(self, *names: AxisName) -> NamedArray:
        """Transposes the data to a positional prefix followed by `names` in order.

        Args:
          *names: Every axis name of the array, in the desired order.

        Example:
          >>> from saikei import sk
          >>> sk.nx.zeros({"a": 2, "b": 3}).order_as("b", "a").data_array.shape
          (3, 2)
        """
        if set(names) != set(self.named_shape) or len(names) != len(self.named_shape):
            raise ValueError(
                f"order_as{names}: expected every axis name exactly once; the array"
                f" has named_shape {self.named_shape}."
            )
        if self.axis_names == names:
            return self
        full = self._full_names()
        pos = [d for d, n in enumerate(full) if n is None]
        perm = pos + self._dims_of(names, "order_as")
        return _new(jax.lax.transpose(self.data_array, perm), tuple(names))

    def order_like(self, other: NamedArray) -> NamedArray:
        """Transposes the data into the same layout as `other`.

        `other` must have the same axis names and the same number of positional
        axes. Afterwards both arrays have the same pytree structure.

        Example:
          >>> from saikei import sk
          >>> a = sk.nx.zeros({"a": 2, "b": 3})
          >>> b = sk.nx.zeros({"b": 3, "a": 2})
          >>> a.order_like(b).axis_names
          ('b', 'a')
        """
        if not isinstance(other, NamedArray):
            raise TypeError(f"order_like expects a NamedArray, got {type(other).__name__}.")
        if self.axis_names == other.axis_names and self.data_array.ndim == other.data_array.ndim:
            return self
        other_full = other._full_names()
        other_pos = sum(1 for n in other_full if n is None)
        mine = self.named_shape
        if set(mine) != set(other.named_shape) or len(self.positional_shape) != other_pos:
            raise ValueError(
                f"order_like: the arrays have different axes: this one has named_shape"
                f" {mine} and positional_shape {self.positional_shape}; the reference"
                f" has named_shape {other.named_shape} and positional_shape"
                f" {other.positional_shape}."
            )
        full = self._full_names()
        my_pos = iter(d for d, n in enumerate(full) if n is None)
        index = {n: d for d, n in enumerate(full) if n is not None}
        perm = [next(my_pos) if n is None else index[n] for n in other_full]
        return self._with_layout(list(other_full), perm)

    def canonicalize(self) -> NamedArray:
        """Transposes to a positional prefix followed by the names in sorted order.

        Names that cannot be compared with each other are sorted by type name
        and `repr`.

        Example:
          >>> from saikei import sk
          >>> sk.nx.zeros({"b": 3, "a": 2}).canonicalize().axis_names
          ('a', 'b')
        """
        names = list(self.named_shape)
        try:
            ordered = sorted(names)
        except TypeError:
            ordered = sorted(names, key=lambda n: (type(n).__name__, repr(n)))
        return self.order_as(*ordered)

    def broadcast_to(
        self,
        positional_shape: Sequence[int] = (),
        named_shape: Mapping[AxisName, int] | None = None,
    ) -> NamedArray:
        """Broadcasts positional axes (numpy-style) and adds named axes.

        Args:
          positional_shape: Target positional shape; the current positional
            shape must broadcast to it.
          named_shape: Named axes the result must have. Names already present
            must have exactly this size; new names are added.

        Returns:
          A broadcast array with a positional prefix.

        Example:
          >>> from saikei import sk
          >>> x = sk.nx.ones({"a": 2}).broadcast_to((3,), {"b": 4})
          >>> x.positional_shape, x.named_shape
          ((3,), {'a': 2, 'b': 4})
        """
        target_pos = tuple(int(s) for s in positional_shape)
        named = dict(named_shape or {})
        mine = self.named_shape
        pos = self.positional_shape
        bad = {n: (mine[n], s) for n, s in named.items() if n in mine and mine[n] != s}
        if bad:
            raise ValueError(
                "broadcast_to: named axes cannot change size; "
                + ", ".join(f"{n!r} has size {a}, requested {b}" for n, (a, b) in bad.items())
                + f". Array named_shape {mine}, requested named_shape {named}."
            )
        new_names = [n for n in named if n not in mine]
        _check_names(new_names, "broadcast_to(named_shape=...)")
        try:
            ok = len(pos) <= len(target_pos) and np.broadcast_shapes(pos, target_pos) == target_pos
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"broadcast_to: positional_shape {pos} cannot be broadcast to"
                f" {target_pos} (named_shape {mine})."
            )
        if not new_names and pos == target_pos:
            return self
        arr = self.with_positional_prefix()
        out_names = arr.axis_names + tuple(new_names)
        shape = (
            target_pos + tuple(mine[n] for n in arr.axis_names) + tuple(named[n] for n in new_names)
        )
        offset = len(target_pos) - len(pos)
        dims = tuple(range(offset, offset + arr.data_array.ndim))
        data = jax.lax.broadcast_in_dim(arr.data_array, shape, dims)
        return _new(data, out_names)

    def broadcast_like(self, other: NamedArray | jax.Array) -> NamedArray:
        """Broadcasts to the positional and named shape of `other`.

        Example:
          >>> from saikei import sk
          >>> sk.nx.ones({"a": 2}).broadcast_like(sk.nx.zeros({"a": 2, "b": 3})).named_shape
          {'a': 2, 'b': 3}
        """
        if isinstance(other, NamedArray):
            return self.broadcast_to(other.positional_shape, other.named_shape)
        return self.broadcast_to(tuple(np.shape(other)), {})

    # ------------------------------------------------------------------ repr

    # the viz layer registers both treescope implementations (core never imports it).
    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """Treescope hook: a summary with dtype, shapes and statistics, foldable into fields."""
        return _viz_hooks.render("named_array", self, path, subtree_renderer)

    def __treescope_ndarray_adapter__(self) -> Any:
        """Treescope hook: the adapter that lets `render_array` address axes by name."""
        return _viz_hooks.require("named_array_adapter", "Rendering a NamedArray as an array")()

    def _summary(self) -> str:
        full = self._full_names()
        shape = tuple(self.data_array.shape)
        pos = ", ".join(str(s) for s, n in zip(shape, full) if n is None)
        named = ", ".join(f"{n}:{s}" for s, n in zip(shape, full) if n is not None)
        dtype = getattr(self.data_array, "dtype", None)
        dtype_name = getattr(dtype, "name", str(dtype))
        head = f"{pos} |" if pos else "|"
        return f"{dtype_name}({head} {named})" if named else f"{dtype_name}({head})"

    def __repr__(self) -> str:
        data = self.data_array
        if self._is_mislabeled():
            return (
                f"NamedArray(<mislabeled: names {self.__dict__['_mislabeled_names']} were"
                " given to sizes"
                f" {self._axis_sizes}, data shape is now {tuple(data.shape)}>)"
            )
        if not (hasattr(data, "shape") and hasattr(data, "dtype")):
            return f"NamedArray(data_array={data!r}, axis_names={self.axis_names!r})"
        try:
            summary = self._summary()
        except Exception:  # An inconsistent array must still print.
            return f"NamedArray(data_array={data!r}, axis_names={self.axis_names!r})"
        if isinstance(data, jax.core.Tracer | jax.ShapeDtypeStruct):
            return f"NamedArray({summary})"
        size = int(np.prod(data.shape))
        if size > 24:
            return f"NamedArray({summary})"
        try:
            values = np.asarray(data)
        except Exception:  # E.g. deleted buffers; the summary suffices.
            return f"NamedArray({summary})"
        full = self._full_names()
        order = [d for d, n in enumerate(full) if n is None] + [
            d for d, n in enumerate(full) if n is not None
        ]
        text = np.array2string(np.transpose(values, order), separator=", ")
        return f"NamedArray({summary}, {text})"


def _new(data: Any, names: tuple[AxisName | None, ...]) -> NamedArray:
    """Builds a NamedArray without validation (names must already be normalized)."""
    obj = _object_new(NamedArray)
    d = obj.__dict__
    d["data_array"] = data
    d["axis_names"] = names
    return obj


NamedArrayBase = NamedArray
NamedArrayView = NamedArray


def is_namedarray(value: Any) -> bool:
    """Whether `value` is a NamedArray.

    Example:
      >>> from saikei import sk
      >>> sk.nx.is_namedarray(sk.nx.ones({"a": 2})), sk.nx.is_namedarray(1.0)
      (True, False)
    """
    return isinstance(value, NamedArray)


def wrap(array: Any, *names: AxisName) -> NamedArray:
    """Wraps an array as a NamedArray, optionally naming all of its axes.

    Python scalars, lists and numpy arrays are converted with `jnp.asarray`;
    jax arrays, tracers and `jax.ShapeDtypeStruct`s are stored as they are.

    Args:
      array: The array to wrap.
      *names: Optional names, one per axis (as in `tag`).

    Returns:
      A NamedArray with positional axes, or named axes if `names` are given.

    Example:
      >>> from saikei import sk
      >>> sk.nx.wrap([[1, 2, 3]], "row", "col").named_shape
      {'row': 1, 'col': 3}
    """
    if isinstance(array, NamedArray):
        raise TypeError(
            "wrap: the value is already a NamedArray"
            f" ({array._summary()}); use `.tag(...)` to name its axes."
        )
    if not (isinstance(array, jax.Array | jax.ShapeDtypeStruct) or hasattr(array, "aval")):
        if isinstance(array, bool | int | float | complex | list | tuple | np.ndarray | np.generic):
            array = jnp.asarray(array)
        elif not (hasattr(array, "shape") and hasattr(array, "dtype")):
            raise TypeError(
                f"wrap expects an array (jax.Array, np.ndarray, scalar, list or"
                f" jax.ShapeDtypeStruct); got {type(array).__name__}: {array!r}."
            )
    result = _new(array, ())
    return result.tag(*names) if names else result
