"""Shard trees of named arrays over a device mesh by axis name.

Each named axis of an array is laid out along the mesh axis (or axes) of the
same name, or of the name given by `axis_name_to_mesh_name`; axes with no
matching mesh axis, and positional axes, are replicated. Only the current
`jax.sharding` API is used (`Mesh`, `NamedSharding`, `PartitionSpec`).

Example:
  >>> import jax
  >>> import numpy as np
  >>> from saikei import sk
  >>> from saikei.toolshed import sharding_util
  >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
  >>> x = sk.nx.ones({"batch": 4, "features": 3})
  >>> sharding_util.name_to_name_sharding(x, mesh).data_array.spec
  P('batch', None)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.core._tree_util import pretty_keystr
from saikei.core._variables_binding import bind_variables, unbind_variables
from saikei.core._variables_types import AbstractVariable, LabeledVariable
from saikei.nn._layer import Layer

NamedArray = named_axes.NamedArray

__all__ = [
    "ConstrainSharding",
    "ConstrainShardingByName",
    "name_to_name_device_put",
    "name_to_name_sharding",
    "sharded_init",
]

MeshAxes = str | tuple[str, ...]


def _check_mapping(
    mesh: Mesh, axis_name_to_mesh_name: Mapping[Hashable, MeshAxes] | None
) -> dict[Hashable, MeshAxes]:
    """Validates the axis-name mapping, or builds the identity one from the mesh."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"Expected a jax.sharding.Mesh as `mesh`, got {mesh!r}. Build one with"
            " jax.sharding.Mesh(device_array, axis_names) or jax.make_mesh(...)."
        )
    if axis_name_to_mesh_name is None:
        return {name: name for name in mesh.axis_names}
    if not isinstance(axis_name_to_mesh_name, Mapping):
        raise TypeError(
            "axis_name_to_mesh_name must be a mapping from array axis names to mesh axis"
            f" names (or tuples of them), got {axis_name_to_mesh_name!r}."
        )
    mapping = dict(axis_name_to_mesh_name)
    used: dict[str, Hashable] = {}
    for axis, target in mapping.items():
        targets = target if isinstance(target, tuple) else (target,)
        for t in targets:
            if t not in mesh.axis_names:
                raise ValueError(
                    f"axis_name_to_mesh_name maps axis {axis!r} to mesh axis {t!r}, but the"
                    f" mesh only has axes {tuple(mesh.axis_names)}."
                )
            if t in used and used[t] != axis:
                raise ValueError(
                    f"axis_name_to_mesh_name maps both {used[t]!r} and {axis!r} to mesh axis"
                    f" {t!r}; a mesh axis can shard at most one array axis."
                )
            used[t] = axis
    return mapping


def _spec_for(array: NamedArray, mapping: Mapping[Hashable, MeshAxes]) -> PartitionSpec:
    ndim = len(array.data_array.shape)
    names = (None,) * (ndim - len(array.axis_names)) + tuple(array.axis_names)
    return PartitionSpec(*(None if n is None else mapping.get(n) for n in names))


def _is_leaf(node: Any) -> bool:
    return isinstance(node, (NamedArray, AbstractVariable))


def _unnamed_error(path: Any, leaf: Any, tree: Any) -> ValueError:
    if isinstance(leaf, AbstractVariable):
        hint = (
            " Variables are not sharded in place here: take them out first with"
            " `tree, values = sk.unbind_variables(tree, freeze=True)` and shard `values`,"
            " or use `name_to_name_device_put`, which updates variables."
        )
    else:
        hint = (
            " Wrap it as a NamedArray (sk.nx.wrap), or pass ignore_unnamed_arrays=True to"
            " give it a None sharding."
        )
    return ValueError(
        f"name_to_name_sharding: the leaf at {pretty_keystr(path, tree)} is a"
        f" {type(leaf).__name__}, not a NamedArray, so it has no axis names to shard by." + hint
    )


def name_to_name_sharding(
    tree: Any,
    mesh: Mesh,
    axis_name_to_mesh_name: Mapping[Hashable, MeshAxes] | None = None,
    ignore_unnamed_arrays: bool = False,
    as_shape_dtype_struct: bool = False,
) -> Any:
    """Builds a `NamedSharding` for each NamedArray of a tree from its axis names.

    Args:
      tree: A pytree of NamedArrays (their data may be `jax.ShapeDtypeStruct`s).
      mesh: The device mesh.
      axis_name_to_mesh_name: Maps array axis names to a mesh axis name or a
        tuple of them. Axes not listed are replicated. Defaults to the identity
        on the mesh's axis names.
      ignore_unnamed_arrays: Give other leaves a `None` sharding instead of
        raising an error.
      as_shape_dtype_struct: Return `jax.ShapeDtypeStruct`s carrying the
        sharding (e.g. as a restore target for orbax) instead of shardings.

    Returns:
      The tree with each NamedArray's data array replaced by its sharding (or
      ShapeDtypeStruct), usable as `in_shardings`/`out_shardings` of `jax.jit`
      or as the sharding argument of `jax.device_put`.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from saikei import sk
      >>> from saikei.toolshed import sharding_util
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("m",))
      >>> s = sharding_util.name_to_name_sharding(
      ...     sk.nx.ones({"a": 2, "b": 3}), mesh, axis_name_to_mesh_name={"b": "m"})
      >>> s.data_array.spec
      P(None, 'm')
    """
    mapping = _check_mapping(mesh, axis_name_to_mesh_name)

    shardings: dict[PartitionSpec, NamedSharding] = {}

    def go(leaf: Any) -> Any:
        if isinstance(leaf, NamedArray):
            spec = _spec_for(leaf, mapping)
            sharding = shardings.get(spec)
            if sharding is None:
                sharding = shardings[spec] = NamedSharding(mesh, spec)
            if as_shape_dtype_struct:
                data = leaf.data_array
                sharding = jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
            return NamedArray.tree_unflatten(*_flat_with(leaf, sharding))
        if ignore_unnamed_arrays:
            return None
        # Key paths are only needed for the message, so they are computed here.
        for path, bad in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_leaf)[0]:
            if bad is leaf:
                raise _unnamed_error(path, leaf, tree)
        raise _unnamed_error((), leaf, tree)

    return jax.tree_util.tree_map(go, tree, is_leaf=_is_leaf)


def _flat_with(array: NamedArray, new_data: Any) -> tuple[Any, tuple[Any]]:
    """Returns `tree_unflatten` arguments for `array` with its data replaced (no validation,
    since the data is a sharding rather than an array)."""
    return array.tree_flatten()[1], (new_data,)


def name_to_name_device_put(
    tree: Any,
    mesh: Mesh,
    axis_name_to_mesh_name: Mapping[Hashable, MeshAxes] | None = None,
) -> Any:
    """Moves every NamedArray of a tree onto the mesh, sharded by axis name.

    Variables (Parameters, StateVariables) in the tree are updated in place: their
    values are replaced by sharded copies, so parameter sharing is kept.

    Args:
      tree: A pytree of NamedArrays, possibly holding variables whose values are
        pytrees of NamedArrays (e.g. a model).
      mesh: The device mesh.
      axis_name_to_mesh_name: As for `name_to_name_sharding`.

    Returns:
      The tree with its arrays on the mesh (the same variable objects).

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from saikei import sk
      >>> from saikei.toolshed import sharding_util
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("a",))
      >>> y = sharding_util.name_to_name_device_put(sk.nx.ones({"a": 2}), mesh)
      >>> y.data_array.sharding.spec
      P('a',)
    """
    mapping = _check_mapping(mesh, axis_name_to_mesh_name)
    slotted, variables = unbind_variables(tree)
    for var in variables:
        if not isinstance(var, LabeledVariable):
            raise TypeError(
                f"name_to_name_device_put: cannot update variable {var!r} in place (not a"
                " LabeledVariable)."
            )
        shardings = name_to_name_sharding(var.value, mesh, mapping)
        var.value = jax.device_put(var.value, shardings)
    shardings = name_to_name_sharding(slotted, mesh, mapping)
    return bind_variables(jax.device_put(slotted, shardings), variables)


def sharded_init(
    initializer: Callable[..., Any],
    *init_args: Any,
    mesh: Mesh,
    axis_name_to_mesh_name: Mapping[Hashable, MeshAxes] | None = None,
    **init_kwargs: Any,
) -> Any:
    """Runs an initializer so that its arrays are created already sharded on the mesh.

    The initializer is traced once to learn the shapes, then compiled with output
    shardings derived from the axis names, so no full unsharded copy of a large
    model has to fit on one device. Arrays that are not NamedArrays are replicated.

    Args:
      initializer: Builds and returns a pytree of NamedArrays, Parameters and
        StateVariables (e.g. `MLP.from_config`). Its variables must be new ones.
      *init_args: Positional arguments for the initializer.
      mesh: The device mesh.
      axis_name_to_mesh_name: As for `name_to_name_sharding`.
      **init_kwargs: Keyword arguments for the initializer.

    Returns:
      What the initializer returns, with sharded arrays and fresh variables.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from saikei.models import simple_mlp
      >>> from saikei.toolshed import sharding_util
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("features",))
      >>> mlp = sharding_util.sharded_init(simple_mlp.MLP.from_config, name="mlp",
      ...     init_base_rng=jax.random.key(0), feature_sizes=[2, 4], mesh=mesh)
      >>> mlp.sublayers[0].sublayers[0].weights.value.data_array.sharding.spec
      P('features', None)
    """
    mapping = _check_mapping(mesh, axis_name_to_mesh_name)

    def build() -> tuple[Any, tuple[Any, ...]]:
        return unbind_variables(initializer(*init_args, **init_kwargs), freeze=True)

    shapes = jax.eval_shape(build)
    replicated = NamedSharding(mesh, PartitionSpec())

    def sharding_of(leaf: Any) -> Any:
        if isinstance(leaf, NamedArray):
            return dataclasses.replace(
                leaf, data_array=NamedSharding(mesh, _spec_for(leaf, mapping))
            )
        return replicated

    out_shardings = jax.tree_util.tree_map(
        sharding_of, shapes, is_leaf=lambda x: isinstance(x, NamedArray)
    )
    tree, values = jax.jit(build, out_shardings=out_shardings)()
    return bind_variables(tree, values, unfreeze_as_copy=True)


def _mapping_items(mapping: Any) -> Any:
    if mapping is None or isinstance(mapping, tuple):
        return mapping
    return tuple(mapping.items())


class _ShardingTree:
    """Holds a pytree of shardings so it can be a static (hashable) field.

    Trees such as a NamedArray whose data is a `NamedSharding` are not hashable
    themselves; equality and hashing here go through the flattened form.
    """

    __slots__ = ("_key", "tree")

    def __init__(self, tree: Any):
        self.tree = tree
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        self._key = (treedef, tuple(leaves))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ShardingTree) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return repr(self.tree)


@pytree_dataclass
class ConstrainSharding(Layer):
    """A layer that pins the sharding of its input (`jax.lax.with_sharding_constraint`).

    Attributes:
      sharding: A sharding, or a pytree of shardings matching the input's structure
        (e.g. from `name_to_name_sharding`). Unhashable trees are kept in a small
        hashable holder; read them back with `layer.sharding_tree`.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from saikei import sk
      >>> from saikei.toolshed import sharding_util
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("a",))
      >>> x = sk.nx.ones({"a": 2})
      >>> layer = sharding_util.ConstrainSharding(
      ...     sharding_util.name_to_name_sharding(x, mesh))
      >>> jax.jit(layer)(x).named_shape
      {'a': 2}
    """

    sharding: Any = dataclasses.field(metadata={"pytree_node": False})

    def __post_init__(self) -> None:
        try:
            hash(self.sharding)
        except TypeError:
            object.__setattr__(self, "sharding", _ShardingTree(self.sharding))

    @property
    def sharding_tree(self) -> Any:
        """The pytree of shardings given at construction."""
        s = self.sharding
        return s.tree if isinstance(s, _ShardingTree) else s

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Returns `argument` constrained to the sharding."""
        return jax.lax.with_sharding_constraint(argument, self.sharding_tree)


@pytree_dataclass
class ConstrainShardingByName(Layer):
    """A layer that pins the sharding of its NamedArray input(s) by axis name.

    Attributes:
      mesh: The device mesh.
      axis_name_to_mesh_name: As for `name_to_name_sharding` (a dict is stored as
        a tuple of `(axis, mesh_axes)` pairs so the layer stays hashable).

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from saikei import sk
      >>> from saikei.toolshed import sharding_util
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("a",))
      >>> layer = sharding_util.ConstrainShardingByName(mesh)
      >>> jax.jit(layer)(sk.nx.ones({"a": 2})).named_shape
      {'a': 2}
    """

    mesh: Mesh = dataclasses.field(metadata={"pytree_node": False})
    axis_name_to_mesh_name: Any = dataclasses.field(default=None, metadata={"pytree_node": False})

    def __post_init__(self) -> None:
        _check_mapping(self.mesh, self._mapping())
        object.__setattr__(
            self, "axis_name_to_mesh_name", _mapping_items(self.axis_name_to_mesh_name)
        )

    def _mapping(self) -> dict[Hashable, MeshAxes] | None:
        items = self.axis_name_to_mesh_name
        if items is None or isinstance(items, Mapping):
            return items
        return dict(items)

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Returns `argument` constrained to the sharding given by its axis names."""
        sharding = name_to_name_sharding(argument, self.mesh, self._mapping())
        return jax.lax.with_sharding_constraint(argument, sharding)
