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
import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import numpy as np
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
    "gather_to_host",
    "global_from_process_local",
    "make_global_mesh",
    "name_to_name_device_put",
    "name_to_name_sharding",
    "sharded_init",
    "tensor_parallel_rules",
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
    for axis, target in mapping.items():
        targets = target if isinstance(target, tuple) else (target,)
        for t in targets:
            if t not in mesh.axis_names:
                raise ValueError(
                    f"axis_name_to_mesh_name maps axis {axis!r} to mesh axis {t!r}, but the"
                    f" mesh only has axes {tuple(mesh.axis_names)}."
                )
    # Several array axes may share a mesh axis (e.g. `heads` and `neurons` both on
    # `model`); only an array carrying two of them at once is an error (`_spec_for`).
    return mapping


def _spec_for(
    array: Any, mapping: Mapping[Hashable, MeshAxes], where: str = "an array"
) -> PartitionSpec:
    """The PartitionSpec of a NamedArray (or NamedArray-shaped struct) under `mapping`."""
    ndim = len(array.data_array.shape)
    names = (None,) * (ndim - len(array.axis_names)) + tuple(array.axis_names)
    entries = [None if n is None else mapping.get(n) for n in names]
    owner: dict[str, Hashable] = {}
    for name, target in zip(names, entries):
        for t in (target,) if isinstance(target, str) else target or ():
            if t in owner:
                raise ValueError(
                    f"The rule table maps both axis {owner[t]!r} and axis {name!r} of {where}"
                    f" (named shape {dict(array.named_shape)}) to mesh axis {t!r}; one array"
                    " cannot be split along one mesh axis twice. Map one of them to another"
                    " mesh axis (or to nothing) in axis_name_to_mesh_name."
                )
            owner[t] = name
    return PartitionSpec(*entries)


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
            spec = _spec_for(leaf, mapping, _path_of(leaf, tree))
            sharding = shardings.get(spec)
            if sharding is None:
                sharding = shardings[spec] = NamedSharding(mesh, spec)
            if as_shape_dtype_struct:
                data = leaf.data_array
                sharding = jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
            return NamedArray.tree_unflatten(*_flat_with(leaf, sharding))
        if ignore_unnamed_arrays:
            return None
        for path, bad in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_leaf)[0]:
            if bad is leaf:
                raise _unnamed_error(path, leaf, tree)
        raise _unnamed_error((), leaf, tree)

    return jax.tree_util.tree_map(go, tree, is_leaf=_is_leaf)


class _LazyPath:
    """Formats a leaf's key path only when an error message needs it."""

    def __init__(self, leaf: Any, tree: Any):
        self.leaf, self.tree = leaf, tree

    def __str__(self) -> str:
        for path, node in jax.tree_util.tree_flatten_with_path(self.tree, is_leaf=_is_leaf)[0]:
            if node is self.leaf:
                return f"the array at {pretty_keystr(path, self.tree)}"
        return "an array"


def _path_of(leaf: Any, tree: Any) -> Any:
    return _LazyPath(leaf, tree)


def _flat_with(array: NamedArray, new_data: Any) -> tuple[Any, tuple[Any]]:
    """Returns `tree_unflatten` arguments for `array` with its data replaced (no validation,
    since the data is a sharding rather than an array)."""
    return array.tree_flatten()[1], (new_data,)


def _put(value: Any, sharding: NamedSharding) -> jax.Array:
    """Places one array with `sharding`; in several processes every one passes the same value."""
    # An equivalent layout is kept as it is (no copy), as long as it is a NamedSharding
    # on the same mesh, so that callers always find the mesh and spec they asked for.
    if (
        isinstance(value, jax.Array)
        and isinstance(value.sharding, NamedSharding)
        and value.sharding.mesh == sharding.mesh
        and value.sharding.is_equivalent_to(sharding, value.ndim)
    ):
        return value
    return jax.device_put(value, sharding)


def name_to_name_device_put(
    tree: Any,
    mesh: Mesh,
    axis_name_to_mesh_name: Mapping[Hashable, MeshAxes] | None = None,
) -> Any:
    """Moves every array of a tree (a whole model, say) onto the mesh, NamedArrays by axis name.

    Variables (Parameters, StateVariables) in the tree are updated in place: their
    values are replaced by sharded copies, so parameter sharing is kept. Plain JAX
    arrays are replicated over the mesh; other leaves (Python numbers such as a
    norm's epsilon, strings, numpy arrays) are left as they are. In a
    multi-process run every process makes the same call; arrays that are already
    global (sharded over several processes) are resharded, local ones must hold
    the same values in every process.

    Args:
      tree: A pytree, possibly holding variables (e.g. a model).
      mesh: The device mesh.
      axis_name_to_mesh_name: As for `name_to_name_sharding`. Several array axes
        may map to one mesh axis, as long as no single array carries two of them.

    Returns:
      The tree with its arrays on the mesh (the same variable objects).

    Raises:
      ValueError: an array carries two axes that map to the same mesh axis, or
        an axis whose size the mesh axis does not divide (the message names it).

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from saikei import sk
      >>> from saikei.toolshed import sharding_util
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("a",))
      >>> y = sharding_util.name_to_name_device_put({"x": sk.nx.ones({"a": 2}), "eps": 1e-6}, mesh)
      >>> y["x"].data_array.sharding.spec, y["eps"]
      (P('a',), 1e-06)
    """
    mapping = _check_mapping(mesh, axis_name_to_mesh_name)
    slotted, variables = unbind_variables(tree)
    for var in variables:
        if not isinstance(var, LabeledVariable):
            raise TypeError(
                f"name_to_name_device_put: cannot update variable {var!r} in place (not a"
                " LabeledVariable)."
            )
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(subtree: Any, where: str) -> Any:
        def go(path: Any, leaf: Any) -> Any:
            if isinstance(leaf, NamedArray):
                at = f"{where} {pretty_keystr(path, subtree)}".strip()
                spec = _spec_for(leaf, mapping, at)
                _check_divisible(leaf, spec, mesh, at)
                return dataclasses.replace(
                    leaf, data_array=_put(leaf.data_array, NamedSharding(mesh, spec))
                )
            if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
                return _put(leaf, replicated)
            return leaf

        return jax.tree_util.tree_map_with_path(
            go, subtree, is_leaf=lambda x: isinstance(x, NamedArray)
        )

    for var in variables:
        var.value = place(var.value, f"variable {var.label!r}")
    return bind_variables(place(slotted, "the array at"), variables)


def _check_divisible(array: NamedArray, spec: PartitionSpec, mesh: Mesh, where: str) -> None:
    shape = array.data_array.shape
    names = (None,) * (len(shape) - len(array.axis_names)) + tuple(array.axis_names)
    for size, name, target in zip(shape, names, spec):
        if target is None:
            continue
        targets = (target,) if isinstance(target, str) else tuple(target)
        parts = math.prod(mesh.shape[t] for t in targets)
        if size % parts:
            raise ValueError(
                f"Cannot shard axis {name!r} (size {size}) of {where} over mesh axes"
                f" {targets} ({parts} devices): {parts} does not divide {size}. Map"
                f" {name!r} to a smaller mesh axis or to nothing in axis_name_to_mesh_name."
            )


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


def make_global_mesh(axes: Mapping[str, int], devices: Any = None) -> Mesh:
    """A mesh over the devices of every process, with the given axis names and sizes.

    The devices are arranged so that the last axes vary fastest within a process
    (`jax.make_mesh` picks an interconnect-friendly order on accelerators), so a
    `{"data": P, "model": D}` mesh over P processes of D devices each keeps each
    model-parallel group inside one process. One size may be -1: it takes all
    remaining devices. The axes are `Auto` axes: shardings follow from the
    inputs' shardings and the name-based rules, not from types.

    Args:
      axes: Mesh axis names and sizes, e.g. `{"data": 2, "model": 2}`.
      devices: The devices to use; defaults to `jax.devices()` (all processes).

    Returns:
      A `jax.sharding.Mesh`.

    Raises:
      ValueError: the sizes do not multiply to the number of devices.

    Example:
      >>> import jax
      >>> from saikei.toolshed import sharding_util
      >>> mesh = sharding_util.make_global_mesh({"data": -1, "model": 1})
      >>> dict(mesh.shape) == {"data": len(jax.devices()), "model": 1}
      True
    """
    devices = list(jax.devices() if devices is None else devices)
    names, sizes = tuple(axes), [int(v) for v in axes.values()]
    if sizes.count(-1) > 1 or any(v == 0 or v < -1 for v in sizes):
        raise ValueError(
            f"make_global_mesh: axis sizes must be positive, with at most one -1; got {dict(axes)}."
        )
    known = math.prod(v for v in sizes if v != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"make_global_mesh: {len(devices)} devices cannot fill {dict(axes)}:"
                f" {known} does not divide {len(devices)}."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"make_global_mesh: axes {dict(zip(names, sizes))} need {math.prod(sizes)} devices,"
            f" but there are {len(devices)} ({jax.process_count()} process(es) with"
            f" {jax.local_device_count()} each). Change the sizes or the device count."
        )
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(tuple(sizes), names, axis_types=auto, devices=devices)


def tensor_parallel_rules(
    data: MeshAxes | None = "data", model: MeshAxes | None = "model"
) -> dict[str, MeshAxes]:
    """The usual rule table for saikei transformers: batch over `data`, the rest over `model`.

    `batch` goes to the data-parallel mesh axis; attention heads (`heads`, or
    `head_groups` under grouped-query attention), MLP `neurons` and the
    `vocabulary` go to the model-parallel axis (Megatron-style tensor
    parallelism). `embedding`, `projection`, `seq` and `query_heads` stay
    replicated. No saikei parameter carries two of the model-parallel axes, so
    one mesh axis serves them all; the sizes must be divisible by the mesh
    axis (e.g. the number of key/value heads by the `model` size).

    Args:
      data: The mesh axis for the batch (None: replicate).
      model: The mesh axis for heads, neurons and vocabulary (None: replicate).

    Returns:
      A dict usable as `axis_name_to_mesh_name`.

    Example:
      >>> from saikei.toolshed import sharding_util
      >>> sharding_util.tensor_parallel_rules()
      {'batch': 'data', 'heads': 'model', 'head_groups': 'model', 'neurons': 'model', 'vocabulary': 'model'}
    """
    rules: dict[str, MeshAxes] = {}
    if data is not None:
        rules["batch"] = data
    if model is not None:
        rules.update(heads=model, head_groups=model, neurons=model, vocabulary=model)
    return rules


def global_from_process_local(
    local: Any,
    mesh: Mesh,
    axis_name_to_mesh_name: Mapping[Hashable, MeshAxes] | None = None,
) -> Any:
    """Builds global NamedArrays from the slice of the data that this process holds.

    Each process passes its own part of the data (e.g. its rows of the batch);
    the result is one global array per leaf, sharded by axis name
    (`jax.make_array_from_process_local_data`). Along a sharded axis the
    process-local parts are concatenated in process order; along a replicated
    axis every process must pass the whole axis.

    Args:
      local: A pytree of NamedArrays (host or local device data).
      mesh: The global mesh.
      axis_name_to_mesh_name: As for `name_to_name_sharding`.

    Returns:
      The tree with each NamedArray's data replaced by the global array.

    Example:
      >>> import jax
      >>> import numpy as np
      >>> from saikei import sk
      >>> from saikei.toolshed import sharding_util
      >>> mesh = sharding_util.make_global_mesh({"data": -1})
      >>> tokens = sk.nx.wrap(np.arange(6).reshape(2, 3), "batch", "seq")
      >>> batch = sharding_util.global_from_process_local(tokens, mesh, {"batch": "data"})
      >>> batch.named_shape, batch.data_array.sharding.spec
      ({'batch': 2, 'seq': 3}, P('data', None))
    """
    mapping = _check_mapping(mesh, axis_name_to_mesh_name)

    def go(leaf: Any) -> Any:
        if not isinstance(leaf, NamedArray):
            raise TypeError(
                f"global_from_process_local: expected NamedArrays, got a {type(leaf).__name__};"
                " wrap the data with sk.nx.wrap(array, *axis_names)."
            )
        spec = _spec_for(leaf, mapping)
        sharding = NamedSharding(mesh, spec)
        data = np.asarray(leaf.data_array)
        return dataclasses.replace(
            leaf, data_array=jax.make_array_from_process_local_data(sharding, data)
        )

    return jax.tree_util.tree_map(go, local, is_leaf=lambda x: isinstance(x, NamedArray))


def gather_to_host(tree: Any) -> Any:
    """Copies every array of a tree, global or local, to numpy in every process.

    Global arrays spread over several processes are gathered
    (`jax.experimental.multihost_utils.process_allgather`), so every process
    must make the same call; NamedArrays keep their axis names (with numpy
    data). Use it to print, compare or save results of a multi-process run.

    Args:
      tree: A pytree of arrays and NamedArrays.

    Returns:
      The tree with numpy arrays in place of JAX arrays.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed import sharding_util
      >>> sharding_util.gather_to_host({"x": sk.nx.wrap(jnp.arange(3), "a")})["x"].data_array
      array([0, 1, 2], dtype=int32)
    """
    from jax.experimental import multihost_utils

    def go(leaf: Any) -> Any:
        if isinstance(leaf, NamedArray):
            return dataclasses.replace(leaf, data_array=go(leaf.data_array))
        if isinstance(leaf, jax.Array):
            if leaf.is_fully_addressable or leaf.is_fully_replicated:
                return np.asarray(leaf)
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return leaf

    return jax.tree_util.tree_map(go, tree, is_leaf=lambda x: isinstance(x, NamedArray))


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
