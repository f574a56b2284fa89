"""Shape-check vocabulary: dimension variables, `ArraySpec` and wildcards.

A pattern for `check_structure` is a pytree whose leaves are `ArraySpec`s
(array shapes and dtypes that may contain dimension variables), `Wildcard`s
(anything goes) or plain values (compared by equality). This module defines
those pieces; the solver lives in `_shapecheck_match.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection, Hashable, Iterator, Mapping
from typing import Any, TypeAlias

import jax
import numpy as np

from saikei.core import _viz_hooks
from saikei.core._struct import Struct, pytree_dataclass

AxisName: TypeAlias = Hashable


def _show_var_name(name: Any) -> str:
    if isinstance(name, tuple):
        return f"{name[0]}[{name[1]!r}]"
    return str(name)


@dataclasses.dataclass(frozen=True)
class RemainingAxisPlaceholder:
    """The value paired with a `MultiDimVar` key in a named shape.

    `{"a": 3, **var("rest")}` expands to
    `{"a": 3, MultiDimVar("rest"): RemainingAxisPlaceholder()}`: "and any
    other named axes, whose sizes are collected into `rest`". All instances
    are equal.

    Example:
      >>> from saikei import sk
      >>> {**sk.chk.var("rest")}
      {MultiDimVar(name='rest'): RemainingAxisPlaceholder()}
    """


@dataclasses.dataclass(frozen=True)
class MultiDimVar:
    """A variable standing for a run of positional dims or a set of named axes.

    Made by unpacking a `DimVar`: `(2, *var("batch"))` in a positional shape
    captures a tuple of sizes; `{**var("batch")}` in a named shape captures a
    dict of axis sizes.

    Attributes:
      name: The variable's name; the solved value is reported under it.

    Example:
      >>> from saikei import sk
      >>> (1, *sk.chk.var("rest"))
      (1, MultiDimVar(name='rest'))
    """

    name: str

    # Treescope hook; the viz layer registers the renderer (core never imports it).
    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """Treescope hook: a compact one-line rendering (constructor when expanded)."""
        return _viz_hooks.render("dim_var", self, path, subtree_renderer)


@dataclasses.dataclass(frozen=True)
class DimVar:
    """A variable standing for the size of one dimension.

    Every use of the same name must see the same size. `*dimvar` and
    `**dimvar` unpack it into a `MultiDimVar` (a run of positional dims, or
    "all other named axes"), and `dimvar[key]` is the size of element `key` of
    that collection (an index for a run, an axis name for named axes).

    Attributes:
      name: A string, or `(collection_name, key)` for an element of a
        collection variable.

    Example:
      >>> from saikei import sk
      >>> sk.chk.var("heads")["query"]
      DimVar(name=('heads', 'query'))
    """

    name: str | tuple[str, str | int]

    # Treescope hook; the viz layer registers the renderer (core never imports it).
    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """Treescope hook: a compact one-line rendering (constructor when expanded)."""
        return _viz_hooks.render("dim_var", self, path, subtree_renderer)

    def __iter__(self) -> Iterator[MultiDimVar]:
        yield MultiDimVar(self._collection_name("*"))

    def keys(self) -> tuple[MultiDimVar]:
        """The single key `**dimvar` contributes to a named shape."""
        return (MultiDimVar(self._collection_name("**")),)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, MultiDimVar):
            if key.name != self.name:
                raise KeyError(key)
            return RemainingAxisPlaceholder()
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TypeError(
                f"var({self.name!r})[{key!r}]: an element of a dimension variable is"
                " chosen by an int (position in a `*var`) or a str (axis name in a"
                f" `**var`), not {type(key).__name__}."
            )
        return DimVar((self._collection_name(f"[{key!r}]"), key))

    def _collection_name(self, use: str) -> str:
        if not isinstance(self.name, str):
            raise TypeError(
                f"{use} cannot be applied to the element variable {_show_var_name(self.name)};"
                " only top-level variables made by `var(name)` are collections."
            )
        return self.name


@dataclasses.dataclass(frozen=True)
class KnownDim:
    """A dimension whose size is known, bound to a variable name.

    `vars_for_axes` makes these for axes given with a size; matching checks
    the size and also binds the name to it.

    Attributes:
      name: The variable name (a string or `(collection_name, key)`).
      size: The known size.
      from_keypath: Where the size came from, shown in error messages.

    Example:
      >>> from saikei import sk
      >>> sk.chk.check_structure(
      ...     jax.numpy.zeros(3), sk.chk.ArraySpec(shape=(sk.chk.KnownDim("n", 3),))
      ... )
      MatchResult({'n': 3})
    """

    name: str | tuple[str, str | int]
    size: int
    from_keypath: str | None = None

    # Treescope hook; the viz layer registers the renderer (core never imports it).
    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """Treescope hook: a compact one-line rendering (constructor when expanded)."""
        return _viz_hooks.render("dim_var", self, path, subtree_renderer)


def var(name: str) -> DimVar:
    """Makes a dimension variable for use in `ArraySpec` shapes.

    `var(n)` stands for one dimension; `*var(n)` for a run of positional
    dimensions; `**var(n)` (inside a named-shape dict) for all the named axes
    not listed explicitly; `var(n)[k]` for one element of such a collection.
    Every use of a name must agree, across the whole checked tree.

    Args:
      name: The variable's name; `check_structure` reports its value under it.

    Returns:
      A `DimVar`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> spec = sk.chk.ArraySpec(shape=(sk.chk.var("n"), *sk.chk.var("rest")))
      >>> dict(sk.chk.check_structure(jnp.zeros((2, 3, 4)), spec))
      {'n': 2, 'rest': (3, 4)}
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"var() needs a non-empty string name, got {name!r}.")
    return DimVar(name)


def vars_for_axes(
    var_name: str, axis_names_or_specs: Collection[AxisName] | Mapping[AxisName, int | None]
) -> dict[AxisName, DimVar | KnownDim]:
    """Makes one element variable `var(var_name)[axis]` per named axis.

    Use it as (part of) a named shape: the sizes of exactly these axes are
    then reported together as the dict `result[var_name]`.

    Args:
      var_name: Name of the collection variable.
      axis_names_or_specs: Axis names, or a mapping from axis name to a known
        size (checked) or None (unknown).

    Returns:
      A dict from axis name to `DimVar` (unknown size) or `KnownDim`.

    Example:
      >>> from saikei import sk
      >>> spec = sk.chk.ArraySpec(named_shape=sk.chk.vars_for_axes("io", {"in": 2, "out": None}))
      >>> dict(sk.chk.check_structure(sk.nx.zeros({"in": 2, "out": 5}), spec))
      {'io': {'in': 2, 'out': 5}}
    """
    if not isinstance(var_name, str) or not var_name:
        raise TypeError(f"vars_for_axes() needs a non-empty string var_name, got {var_name!r}.")
    if isinstance(axis_names_or_specs, str):
        raise TypeError(
            f"vars_for_axes({var_name!r}, {axis_names_or_specs!r}): pass a collection of"
            " axis names (e.g. a list), not a single string."
        )
    if isinstance(axis_names_or_specs, Mapping):
        result: dict[AxisName, DimVar | KnownDim] = {}
        for axis, size in axis_names_or_specs.items():
            if size is None:
                result[axis] = DimVar((var_name, axis))
            elif isinstance(size, int | np.integer) and not isinstance(size, bool):
                result[axis] = KnownDim((var_name, axis), int(size))
            else:
                raise TypeError(
                    f"vars_for_axes({var_name!r}, ...): the size of axis {axis!r} must be"
                    f" an int or None, got {size!r}."
                )
        return result
    return {axis: DimVar((var_name, axis)) for axis in axis_names_or_specs}


class _NamedShape(dict):
    """An immutable, hashable dict, so ArraySpecs can live in tree metadata."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "An ArraySpec's named_shape is immutable; build a new ArraySpec, e.g."
            " `dataclasses.replace(spec, named_shape={**spec.named_shape, ...})`."
        )

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> Any:
        return (_NamedShape, (dict(self),))

    def __copy__(self) -> _NamedShape:
        return self

    def __deepcopy__(self, memo: Any) -> _NamedShape:
        return self


_EMPTY_NAMED_SHAPE = _NamedShape()


_dtype_cache: dict[Any, Any] = {}


def _normalize_dtype(dtype: Any) -> Any:
    try:
        return _dtype_cache[dtype]
    except (KeyError, TypeError):
        pass
    normalized = _normalize_dtype_uncached(dtype)
    with contextlib.suppress(TypeError):  # Unhashable dtype-likes are just not cached.
        _dtype_cache[dtype] = normalized
    return normalized


def _normalize_dtype_uncached(dtype: Any) -> Any:
    if isinstance(dtype, np.dtype):
        return dtype
    if dtype is not None:  # np.dtype(None) would silently mean float64.
        try:
            return np.dtype(dtype)
        except TypeError:
            pass
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        return dtype  # An abstract category such as np.floating.
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return dtype
    raise TypeError(
        f"ArraySpec dtype {dtype!r} is neither a dtype nor an abstract dtype category;"
        " use e.g. jnp.float32, np.dtype('int8') or np.floating."
    )


def _is_size(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0


def _normalize_shape(shape: Any) -> tuple[Any, ...]:
    if isinstance(shape, DimVar):
        # penzai reads `shape=var("x")` as `shape=(*var("x"),)`: any positional shape.
        shape = (*shape,)
    if not isinstance(shape, tuple | list):
        raise TypeError(
            f"ArraySpec shape must be a tuple of dims, got {shape!r}. Write (n,) for one dim."
        )
    out = []
    for dim in shape:
        if isinstance(dim, DimVar | MultiDimVar | KnownDim):
            out.append(dim)
        elif _is_size(dim):
            out.append(int(dim))
        elif isinstance(dim, int | np.integer) and not isinstance(dim, bool):
            raise ValueError(f"ArraySpec shape {tuple(shape)!r} has a negative dim {dim}.")
        else:
            raise TypeError(
                f"ArraySpec shape {tuple(shape)!r} has an invalid dim {dim!r}; dims are"
                " non-negative ints, var(name), *var(name) or KnownDim."
            )
    return tuple(out)


def _normalize_named_shape(named_shape: Any) -> _NamedShape:
    if isinstance(named_shape, DimVar):
        # penzai reads `named_shape=var("x")` as `named_shape={**var("x")}`.
        named_shape = {**named_shape}
    if type(named_shape) is not dict and not isinstance(named_shape, Mapping):
        raise TypeError(f"ArraySpec named_shape must be a dict, got {named_shape!r}.")
    if not named_shape:
        return _EMPTY_NAMED_SHAPE
    for name, dim in named_shape.items():
        kind = type(dim)
        if kind is int:
            if dim < 0 or type(name) is MultiDimVar:
                break
        elif kind is DimVar or kind is KnownDim:
            if type(name) is MultiDimVar:
                break
        elif kind is not RemainingAxisPlaceholder or type(name) is not MultiDimVar:
            break
    else:
        return _NamedShape(named_shape)
    out = {}
    for name, dim in named_shape.items():
        if isinstance(name, MultiDimVar):
            if not isinstance(dim, RemainingAxisPlaceholder):
                raise TypeError(
                    f"ArraySpec named_shape key {name!r} must map to RemainingAxisPlaceholder()"
                    f" (write **var({name.name!r})), got {dim!r}."
                )
        elif isinstance(dim, RemainingAxisPlaceholder):
            raise TypeError(
                f"ArraySpec named_shape axis {name!r} maps to RemainingAxisPlaceholder(),"
                " which only belongs under a **var(...) key."
            )
        elif isinstance(dim, DimVar | KnownDim):
            pass
        elif _is_size(dim):
            dim = int(dim)
        else:
            raise TypeError(
                f"ArraySpec named_shape axis {name!r} has an invalid size {dim!r}; sizes are"
                " non-negative ints, var(name) or KnownDim."
            )
        out[name] = dim
    return _NamedShape(out)


@pytree_dataclass
class ArraySpec(Struct):
    """The expected shape and dtype of a (named) array, possibly with variables.

    Like `jax.ShapeDtypeStruct`, but an ArraySpec is a pytree node with no
    children (flattening it yields no leaves), supports named axes, and may
    contain dimension variables (`var`) and abstract dtypes (`np.floating`).
    A plain array matches an ArraySpec whose `named_shape` is empty; a
    NamedArray matches on both its positional and its named shape.

    Attributes:
      shape: The positional shape: ints, `var(n)`, `*var(n)` or `KnownDim`s.
        A bare `var(n)` (not in a tuple) means `(*var(n),)`, as in penzai.
      dtype: A concrete dtype (stored as `np.dtype`) or an abstract category
        such as `np.floating` or `np.integer` (any sub-dtype matches). The
        default `np.generic` matches every dtype.
      named_shape: Axis name to size (int, `var(n)`, `KnownDim`), plus at most
        a few `**var(n)` entries that match "all other named axes". Stored as
        an immutable dict, so ArraySpecs are hashable.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> spec = sk.chk.ArraySpec(shape=(sk.chk.var("n"), 3), dtype=jnp.float32)
      >>> sk.chk.check_structure(jnp.zeros((5, 3)), spec)
      MatchResult({'n': 5})
    """

    shape: tuple[Any, ...] = dataclasses.field(default=(), metadata={"pytree_node": False})
    dtype: Any = dataclasses.field(default=np.generic, metadata={"pytree_node": False})
    named_shape: Mapping[Any, Any] = dataclasses.field(
        default=_EMPTY_NAMED_SHAPE, metadata={"pytree_node": False}
    )

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """Treescope hook: `<ArraySpec dtype(positional | named)>` (registered by the viz layer)."""
        return _viz_hooks.render("arrayspec", self, path, subtree_renderer)

    @property
    def positional_shape(self) -> tuple[Any, ...]:
        """The positional shape (same as `shape`; named axes are separate).

        Example:
          >>> from saikei import sk
          >>> sk.chk.ArraySpec(shape=(2,), named_shape={"a": 3}).positional_shape
          (2,)
        """
        return self.shape

    @classmethod
    def floating_named(cls, named_shape: Mapping[Any, Any]) -> ArraySpec:
        """An ArraySpec with this named shape, no positional axes, any float dtype.

        Args:
          named_shape: The named shape, as for the `named_shape` field.

        Returns:
          `ArraySpec(named_shape=named_shape, dtype=np.floating)`.

        Example:
          >>> from saikei import sk
          >>> sk.chk.ArraySpec.floating_named({"embedding": 8}).dtype
          <class 'numpy.floating'>
        """
        return cls(named_shape=named_shape, dtype=np.floating)

    def into_pytree(self) -> Any:
        """Turns a fully concrete ArraySpec into a `jax.ShapeDtypeStruct` leaf.

        With named axes, the result is a NamedArray wrapping a
        ShapeDtypeStruct whose positional axes come first, then the named axes
        in the order of `named_shape`. Useful to build abstract inputs, e.g.
        for `jax.eval_shape`.

        Returns:
          A `jax.ShapeDtypeStruct`, or a NamedArray wrapping one.

        Raises:
          ValueError: if a dim is a variable or the dtype is abstract.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> sk.chk.ArraySpec(shape=(2, 3), dtype=jnp.int8).into_pytree()
          ShapeDtypeStruct(shape=(2, 3), dtype=int8)
        """
        if not isinstance(self.dtype, np.dtype) and not jax.dtypes.issubdtype(
            self.dtype, jax.dtypes.extended
        ):
            raise ValueError(
                f"into_pytree needs a concrete dtype, but {self!r} has the abstract dtype"
                f" {self.dtype!r}; pick one, e.g. dataclasses.replace(spec, dtype=jnp.float32)."
            )
        positional = tuple(self._concrete_dim(d, f"shape[{i}]") for i, d in enumerate(self.shape))
        named = {name: self._concrete_dim(d, repr(name)) for name, d in self.named_shape.items()}
        struct = jax.ShapeDtypeStruct(positional + tuple(named.values()), self.dtype)
        if not named:
            return struct
        from saikei.core import named_axes

        return named_axes.NamedArray(struct, axis_names=tuple(named))

    def _concrete_dim(self, dim: Any, where: str) -> int:
        if type(dim) is int:
            return dim
        if isinstance(dim, KnownDim):
            return dim.size
        raise ValueError(
            f"into_pytree needs concrete sizes, but {where} of {self!r} is {dim!r}. Substitute"
            " the variables first, e.g. with full_substitute_dimension_variables."
        )


def _init_arrayspec(
    self: ArraySpec,
    shape: tuple[Any, ...] = (),
    dtype: Any = np.generic,
    named_shape: Mapping[Any, Any] = _EMPTY_NAMED_SHAPE,
) -> None:
    # Replaces the generated dataclass __init__: specs are built often (inside
    # layers, on every call), so validation must stay cheap in the common case.
    fields = self.__dict__
    if type(shape) is tuple:
        for dim in shape:
            kind = type(dim)
            if kind is int:
                if dim < 0:
                    shape = _normalize_shape(shape)
                    break
            elif kind is not DimVar and kind is not MultiDimVar and kind is not KnownDim:
                shape = _normalize_shape(shape)
                break
    else:
        shape = _normalize_shape(shape)
    fields["shape"] = shape
    if dtype is not np.generic:
        try:
            dtype = _dtype_cache[dtype]
        except (KeyError, TypeError):
            dtype = _normalize_dtype(dtype)
    fields["dtype"] = dtype
    if type(named_shape) is not _NamedShape:
        if type(named_shape) is dict:
            for name, dim in named_shape.items():
                if type(dim) is not int or dim < 0 or type(name) is MultiDimVar:
                    named_shape = _normalize_named_shape(named_shape)
                    break
            else:
                named_shape = _NamedShape(named_shape) if named_shape else _EMPTY_NAMED_SHAPE
        else:
            named_shape = _normalize_named_shape(named_shape)
    fields["named_shape"] = named_shape


_init_arrayspec.__qualname__ = "ArraySpec.__init__"
ArraySpec.__init__ = _init_arrayspec  # type: ignore[method-assign]


def _trusted_spec(
    shape: tuple[int, ...], dtype: np.dtype, named_shape: Mapping[Any, int]
) -> ArraySpec:
    """An ArraySpec from values already known to be valid (concrete sizes, np.dtype)."""
    spec = object.__new__(ArraySpec)
    fields = spec.__dict__
    fields["shape"] = shape
    fields["dtype"] = dtype
    fields["named_shape"] = _NamedShape(named_shape) if named_shape else _EMPTY_NAMED_SHAPE
    return spec


@pytree_dataclass
class Wildcard(Struct):
    """A pattern leaf that matches any value or subtree.

    Attributes:
      description: Optional text saying what is expected there (for readers).

    Example:
      >>> from saikei import sk
      >>> sk.chk.check_structure({"x": [1, 2], "y": "z"}, {"x": sk.chk.Wildcard("ints"), "y": "z"})
      MatchResult({})
    """

    description: str | None = dataclasses.field(default=None, metadata={"pytree_node": False})

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        """Treescope hook: `<Wildcard>` (registered by the viz layer)."""
        return _viz_hooks.render("wildcard", self, path, subtree_renderer)


ANY = Wildcard()
"""A `Wildcard` that matches anything."""

StructureAnnotation: TypeAlias = Any
"""A pytree of `ArraySpec`, `Wildcard` and plain leaves, used as a pattern."""
