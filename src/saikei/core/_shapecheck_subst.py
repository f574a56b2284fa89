"""Listing and substituting the dimension variables of a structure."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from saikei.core._shapecheck import (
    ANY,
    ArraySpec,
    DimVar,
    KnownDim,
    MultiDimVar,
    RemainingAxisPlaceholder,
    StructureAnnotation,
    _show_var_name,
    _trusted_spec,
)
from saikei.core._shapecheck_match import _array_info, _is_namedarray, _is_pattern_leaf
from saikei.core._tree_util import pretty_keystr


@dataclasses.dataclass
class DimensionVariableSubstitution:
    """Values for the dimension variables of a structure, by kind.

    `get_dimension_variables` returns one that maps every variable to itself;
    replace its values and pass it to `full_substitute_dimension_variables`.
    Values may themselves contain variables, e.g. to rename them.

    Attributes:
      size_variables: `var(n)` (and element `var(n)[k]`) name -> size.
      sequence_variables: `*var(n)` name -> tuple of dims.
      mapping_variables: `**var(n)` name -> dict of named axes.

    Example:
      >>> from saikei import sk
      >>> spec = sk.chk.ArraySpec(shape=(sk.chk.var("n"),))
      >>> subst = sk.chk.get_dimension_variables(spec)
      >>> subst.size_variables["n"] = 5
      >>> sk.chk.full_substitute_dimension_variables(spec, subst).shape
      (5,)
    """

    size_variables: dict[Any, Any] = dataclasses.field(default_factory=dict)
    sequence_variables: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    mapping_variables: dict[str, dict[Any, Any]] = dataclasses.field(default_factory=dict)


def _array_specs(structure: Any) -> list[tuple[tuple[Any, ...], ArraySpec]]:
    with_path, _ = jax.tree_util.tree_flatten_with_path(structure, is_leaf=_is_pattern_leaf)
    return [(path, leaf) for path, leaf in with_path if isinstance(leaf, ArraySpec)]


def get_dimension_variables(structure: StructureAnnotation) -> DimensionVariableSubstitution:
    """Lists every dimension variable in the ArraySpecs of a structure.

    `KnownDim`s are not listed: their values are already known.

    Args:
      structure: A pytree with `ArraySpec` leaves.

    Returns:
      A substitution mapping each variable to itself (so substituting it
      changes nothing but `KnownDim`s); fill in the values you want.

    Example:
      >>> from saikei import sk
      >>> v = sk.chk.var
      >>> spec = sk.chk.ArraySpec(shape=(v("n"), *v("batch")), named_shape={**v("rest")})
      >>> subst = sk.chk.get_dimension_variables({"x": spec})
      >>> list(subst.size_variables), list(subst.sequence_variables), list(subst.mapping_variables)
      (['n'], ['batch'], ['rest'])
    """
    result = DimensionVariableSubstitution()
    for _, spec in _array_specs(structure):
        for dim in spec.shape:
            if isinstance(dim, DimVar):
                result.size_variables[dim.name] = dim
            elif isinstance(dim, MultiDimVar):
                result.sequence_variables[dim.name] = (dim,)
        for axis, dim in spec.named_shape.items():
            if isinstance(axis, MultiDimVar):
                result.mapping_variables[axis.name] = {axis: RemainingAxisPlaceholder()}
            elif isinstance(dim, DimVar):
                result.size_variables[dim.name] = dim
    return result


class _MissingValue(Exception):
    """A variable had no value; carries the message, the keypath is added later."""


class _Substituter:
    def __init__(self, substitution: DimensionVariableSubstitution):
        self.sizes = substitution.size_variables
        self.sequences = substitution.sequence_variables
        self.mappings = substitution.mapping_variables

    def dim(self, dim: Any) -> Any:
        if isinstance(dim, KnownDim):
            return dim.size
        if not isinstance(dim, DimVar):
            return dim
        if dim.name in self.sizes:
            return self.sizes[dim.name]
        if isinstance(dim.name, tuple):
            # An element of a collection whose whole value was substituted.
            parent, key = dim.name
            collection = self.sequences.get(parent)
            if collection is None:
                collection = self.mappings.get(parent)
                if collection is not None and key in collection:
                    return collection[key]
            elif type(key) is int and 0 <= key < len(collection):
                return collection[key]
        raise _MissingValue(f"there is no value for the variable {_show_var_name(dim.name)}")

    def spec(self, spec: ArraySpec) -> ArraySpec:
        shape: list[Any] = []
        for dim in spec.shape:
            if type(dim) is int:
                shape.append(dim)
            elif isinstance(dim, MultiDimVar):
                values = self.sequences.get(dim.name)
                if values is None:
                    raise _MissingValue(f"there is no value for *{dim.name}")
                shape.extend(values)
            else:
                shape.append(self.dim(dim))
        named: dict[Any, Any] = {}
        for axis, dim in spec.named_shape.items():
            if isinstance(axis, MultiDimVar):
                values = self.mappings.get(axis.name)
                if values is None:
                    raise _MissingValue(f"there is no value for **{axis.name}")
                for new_axis, new_dim in values.items():
                    if new_axis in named:
                        raise _MissingValue(
                            f"the named axis {new_axis!r} from **{axis.name} is already present"
                        )
                    named[new_axis] = new_dim
            else:
                if axis in named:
                    raise _MissingValue(f"the named axis {axis!r} appears twice")
                named[axis] = dim if type(dim) is int else self.dim(dim)
        concrete = all(type(d) is int and d >= 0 for d in shape) and all(
            type(d) is int and d >= 0 and type(a) is not MultiDimVar for a, d in named.items()
        )
        if concrete and (isinstance(spec.dtype, np.dtype) or spec.dtype is np.generic):
            return _trusted_spec(tuple(shape), spec.dtype, named)
        return ArraySpec(shape=tuple(shape), dtype=spec.dtype, named_shape=named)


def full_substitute_dimension_variables(
    structure: StructureAnnotation, substitution: DimensionVariableSubstitution
) -> Any:
    """Replaces the dimension variables in a structure's ArraySpecs by values.

    `KnownDim`s become their sizes. Element variables `var(n)[k]` not listed
    in `size_variables` take element `k` of the value given for `*var(n)` or
    `**var(n)`.

    Args:
      structure: A pytree with `ArraySpec` leaves (other leaves are kept).
      substitution: Values for every variable in the structure.

    Returns:
      The structure with new ArraySpecs; fully concrete if the values were.

    Raises:
      ValueError: if a variable has no value, naming it and its keypath.

    Example:
      >>> from saikei import sk
      >>> v = sk.chk.var
      >>> spec = sk.chk.ArraySpec(shape=(*v("b"), 3), named_shape={**v("r")})
      >>> subst = sk.chk.DimensionVariableSubstitution(
      ...     sequence_variables={"b": (1, 2)}, mapping_variables={"r": {"seq": 4}}
      ... )
      >>> new = sk.chk.full_substitute_dimension_variables(spec, subst)
      >>> new.shape, dict(new.named_shape)
      ((1, 2, 3), {'seq': 4})
    """
    substituter = _Substituter(substitution)
    leaves, treedef = jax.tree_util.tree_flatten(structure, is_leaf=_is_pattern_leaf)
    new_leaves = []
    for index, leaf in enumerate(leaves):
        if isinstance(leaf, ArraySpec):
            try:
                leaf = substituter.spec(leaf)
            except _MissingValue as problem:
                with_path, _ = jax.tree_util.tree_flatten_with_path(
                    structure, is_leaf=_is_pattern_leaf
                )
                where = pretty_keystr(with_path[index][0], structure) or "root"
                raise ValueError(
                    f"full_substitute_dimension_variables: at {where}, {problem}. Give every"
                    " variable a value (get_dimension_variables lists them all)."
                ) from None
        new_leaves.append(leaf)
    return treedef.unflatten(new_leaves)


def _leaf_structure(leaf: Any) -> Any:
    info = _array_info(leaf)
    if type(info) is str:
        return ANY
    shape, named_shape, dtype = info
    if isinstance(dtype, np.dtype) and all(type(d) is int for d in shape):
        return _trusted_spec(shape, dtype, named_shape)
    return ArraySpec(shape=shape, dtype=dtype, named_shape=named_shape)


def as_array_structure(tree: Any) -> StructureAnnotation:
    """Abstracts a tree of values into a tree of ArraySpecs.

    Arrays, NamedArrays, `jax.ShapeDtypeStruct`s and Python numbers become
    concrete `ArraySpec`s; every other leaf becomes `ANY`. Checking the tree
    against the result always succeeds.

    Args:
      tree: Any pytree.

    Returns:
      The same tree with its array leaves replaced by ArraySpecs.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> sk.chk.as_array_structure({"w": jnp.zeros((2, 3)), "name": "lin"})
      {'name': Wildcard(description=None), 'w': ArraySpec(shape=(2, 3), dtype=dtype('float32'), named_shape={})}
    """
    return jax.tree_util.tree_map(_leaf_structure, tree, is_leaf=_is_namedarray)
