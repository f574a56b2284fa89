"""`LayerStack`: N layers of one structure, run by a rolled `jax.lax.scan`.

A LayerStack holds one prototype layer whose stacked data carry an extra named
axis (the stack axis). Calling it scans over that axis: XLA compiles the block
once, so compile time does not grow with depth. penzai 0.2.5 passes
`unroll=True` to the scan, which compiles every layer separately; here the
unroll factor is a field, 1 by default.

What is sliced per layer, and what is the same for every layer:

* every NamedArray in the prototype that has the stack axis (parameter values
  and constants) is sliced; everything else (arrays without the axis, plain
  jax arrays, Python values) is shared by all layers;
* Parameters are frozen for the call: layers can read them, not write them;
* a StateVariable in the prototype says what it is per layer in its metadata,
  `{"layerstack_axes": {stack_axis: LayerStackVarBehavior.PER_LAYER | SHARED}}`:
  PER_LAYER values are sliced and re-stacked, SHARED values are carried from
  layer to layer;
* StateVariables that reach the layers through side inputs (a RandomStream's
  offset, say) are carried like SHARED ones;
* each layer gets the side input `layerstack_index`, `{stack_axis: i}` with
  the index of the running layer (merged with that of an enclosing stack).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp

from saikei.core._struct import pytree_dataclass
from saikei.core._tree_util import CustomGetAttrKey, pretty_keystr
from saikei.core._variables import (
    AbstractVariable,
    AbstractVariableValue,
    StateVariable,
    bind_variables,
    freeze_params,
    unbind_variables,
)
from saikei.core.named_axes import NamedArray, is_namedarray
from saikei.core.named_axes import wrap as nx_wrap
from saikei.nn._layer import Layer
from saikei.nn._layer_stack_types import (
    LAYERSTACK_AXES_METADATA_KEY,
    LAYERSTACK_INDEX_INPUT_NAME,
    LayerStackVarBehavior,
    declared_behavior,
)

AxisName = Hashable

_DECLARE_HINT = (
    "Declare how it behaves across the stack in its metadata, e.g."
    " `sk.StateVariable(value, label=..., metadata={{'layerstack_axes': {{{axis!r}:"
    " sk.nn.LayerStackVarBehavior.PER_LAYER}}}})` for a value with one slice per layer"
    " (its NamedArrays must have the axis {axis!r}), or `LayerStackVarBehavior.SHARED` for"
    " one value that every layer reads and updates in turn."
)


@dataclasses.dataclass(frozen=True)
class LayerStackGetAttrKey(CustomGetAttrKey):
    """The keypath entry of `LayerStack.stacked_sublayers`, with the stack's axis.

    It prints as `.stacked_sublayers` (like a plain attribute key) but also
    records the stack axis and its size, so code that walks a model by
    keypath can tell that a leaf lives inside a LayerStack (see
    `layerstack_axes_from_keypath`).

    Attributes:
      name: The field name, `"stacked_sublayers"`.
      stack_axis: The stack's axis name.
      stack_axis_size: The number of layers in the stack.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> key = sk.nn.LayerStackGetAttrKey("stacked_sublayers", "layers", 4)
      >>> jax.tree_util.keystr((key,))
      '.stacked_sublayers'
    """

    stack_axis: AxisName
    stack_axis_size: int


def layerstack_axes_from_keypath(keypath: tuple[Any, ...]) -> dict[AxisName, int]:
    """The stack axes (name -> size) of every LayerStack a keypath passes through.

    A variable added inside a LayerStack's prototype (by a model-surgery
    tool, say) must carry these axes: in its values when it is per layer, and
    in its `"layerstack_axes"` metadata either way.

    Args:
      keypath: A keypath into a model, as from `jax.tree_util.tree_flatten_with_path`.

    Returns:
      `{stack_axis: stack_axis_size}` for each enclosing LayerStack, outermost
      first; empty when the path is not inside any LayerStack.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> stack = sk.nn.LayerStack(
      ...     sk.nn.Elementwise(jax.nn.relu), stack_axis="layers", stack_axis_size=3)
      >>> path = jax.tree_util.tree_flatten_with_path(
      ...     stack, is_leaf=lambda x: isinstance(x, sk.nn.Elementwise))[0][0][0]
      >>> sk.nn.layerstack_axes_from_keypath(path)
      {'layers': 3}
    """
    axes: dict[AxisName, int] = {}
    for key in keypath:
        if isinstance(key, LayerStackGetAttrKey):
            axes[key.stack_axis] = key.stack_axis_size
    return axes


@pytree_dataclass
class LayerStack(Layer):
    """A stack of layers with one structure, run by a rolled `jax.lax.scan`.

    `stacked_sublayers` is one prototype layer; every NamedArray in it that
    has the axis `stack_axis` holds one slice per layer. Calling the stack
    runs the prototype `stack_axis_size` times, each time with the next slice,
    feeding each layer's output to the next. The scan is not unrolled (unless
    `unroll` says so), so XLA compiles the block once whatever the depth.

    Parameters are read-only during the call. StateVariables in the prototype
    need the metadata `{"layerstack_axes": {stack_axis: behavior}}` with a
    `LayerStackVarBehavior`: PER_LAYER values are sliced per layer and
    re-stacked, SHARED values are carried from layer to layer; the key
    `"*"` gives the behavior in every stack not named (savers use it).
    StateVariables in the side inputs are carried like SHARED ones. Side
    inputs reach every layer, with one more: `layerstack_index`, a dict
    `{stack_axis: index}` holding the running layer's index (an int32
    scalar), merged with the dict of an enclosing stack. A layer that keeps
    one SHARED value for all layers reads its own part with it (a
    KVCachingAttention writes and reads its slice of a cache stacked over the
    layers in place, where a PER_LAYER cache would be copied out and back at
    every layer). Each layer's output must have the structure, shapes and
    dtypes of its input (it becomes the next layer's input).

    Selecting inside the prototype (`sk.select(stack).at_instances_of(...)`)
    patches every layer at once.

    Attributes:
      stacked_sublayers: The prototype layer, with stacked data.
      stack_axis: The named axis that indexes the layers.
      stack_axis_size: The number of layers.
      unroll: How many layers each iteration of the compiled loop runs (the
        `unroll` of `jax.lax.scan`); 1 compiles the block once.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from saikei import sk
      >>> @sk.pytree_dataclass
      ... class AddBias(sk.nn.Layer):
      ...   bias: sk.nn.ParameterLike
      ...   def __call__(self, x, /, **side_inputs):
      ...     return x + self.bias.value
      >>> stack = sk.nn.LayerStack(
      ...     AddBias(sk.Parameter(label="bias", value=sk.nx.wrap(jnp.arange(3.0), "layers"))),
      ...     stack_axis="layers", stack_axis_size=3)
      >>> float(stack(sk.nx.wrap(10.0)).unwrap())  # 10 + 0 + 1 + 2
      13.0
    """

    stacked_sublayers: Any
    stack_axis: AxisName = dataclasses.field(metadata={"pytree_node": False})
    stack_axis_size: int = dataclasses.field(metadata={"pytree_node": False})
    unroll: int = dataclasses.field(default=1, metadata={"pytree_node": False})

    def __post_init__(self) -> None:
        size = self.stack_axis_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"LayerStack: stack_axis_size must be a positive int, got {size!r}"
                f" (stack_axis {self.stack_axis!r})."
            )
        unroll = self.unroll
        if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
            raise ValueError(
                f"LayerStack: unroll must be a positive int (layers per loop iteration),"
                f" got {unroll!r}. Use unroll=stack_axis_size to unroll the loop fully."
            )

    def key_for_field(self, field_name: str) -> Any:
        """Keys `stacked_sublayers` with a `LayerStackGetAttrKey` (stack axis and size)."""
        if field_name == "stacked_sublayers":
            return LayerStackGetAttrKey(field_name, self.stack_axis, self.stack_axis_size)
        return super().key_for_field(field_name)

    @classmethod
    def from_sublayer_builder(
        cls,
        builder: Callable[..., Any],
        stack_axis: AxisName,
        stack_axis_size: int,
        init_base_rng: jax.Array | None,
        builder_kwargs: dict[str, Any],
        unroll: int = 1,
    ) -> LayerStack:
        """Builds a stack of independently initialized layers from a one-layer builder.

        `builder(init_base_rng=key, **builder_kwargs)` is run once under
        `jax.vmap`, over one key per layer (split from `init_base_rng`), so
        every layer gets its own parameter values while the labels stay those
        the builder gives (e.g. `"blocks/Linear.weights"` for the whole stack).
        Every NamedArray the builder makes (parameter values, state, constants)
        gets the stack axis in front; StateVariables it makes are marked
        PER_LAYER unless their metadata already says SHARED for this axis.
        With `init_base_rng=None` the builder makes `ParameterSlot`s, which
        stay slots (load stacked values into them later).

        Variables that the builder takes from `builder_kwargs` (rather than
        creating) are left as they are: every layer shares them.

        Args:
          builder: Builds one layer; must accept the keyword `init_base_rng`.
            Every variable value it creates must be made of NamedArrays, and
            any other array that depends on the key must be a NamedArray too.
          stack_axis: The name of the new axis.
          stack_axis_size: The number of layers.
          init_base_rng: The base key, or None to build parameter slots.
          builder_kwargs: Keyword arguments for `builder`.
          unroll: The `unroll` field of the new stack.

        Returns:
          A LayerStack whose prototype is the builder's layer with stacked data.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> def block(init_base_rng, width):
          ...   return sk.nn.Residual(ScaleBy(sk.nn.make_parameter(
          ...       "block/scale", init_base_rng,
          ...       lambda key: sk.nx.wrap(jax.random.normal(key, (width,)), "features"))))
          >>> @sk.pytree_dataclass
          ... class ScaleBy(sk.nn.Layer):
          ...   scale: sk.nn.ParameterLike
          ...   def __call__(self, x, /, **side_inputs):
          ...     return x * self.scale.value
          >>> stack = sk.nn.LayerStack.from_sublayer_builder(
          ...     block, "layers", 4, jax.random.key(0), {"width": 8})
          >>> param = stack.stacked_sublayers.delta.scale
          >>> param.label, param.value.named_shape
          ('block/scale', {'layers': 4, 'features': 8})
          >>> sk.nn.LayerStack.from_sublayer_builder(
          ...     block, "layers", 4, None, {"width": 8}).stacked_sublayers.delta.scale
          ParameterSlot(label='block/scale')
        """
        prototype = _build_stacked(
            builder, stack_axis, stack_axis_size, init_base_rng, builder_kwargs
        )
        return cls(
            stacked_sublayers=prototype,
            stack_axis=stack_axis,
            stack_axis_size=stack_axis_size,
            unroll=unroll,
        )

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Runs the stacked layers in order under one `jax.lax.scan`."""
        return _run_stack(self, argument, side_inputs)


# Calling ---------------------------------------------------------------------------


def _leaf_paths(tree: Any) -> list[tuple[Any, Any]]:
    """(keypath, leaf) pairs, stopping at NamedArrays and variables (for errors)."""
    return jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: is_namedarray(x) or isinstance(x, AbstractVariable)
    )[0]


def _stack_keystr(stack: LayerStack, prototype: Any, path: tuple[Any, ...]) -> str:
    """`pretty_keystr` of a path inside `prototype`, read from the LayerStack down."""
    root = type(stack).from_attributes(
        **{**stack.attributes_dict(), "stacked_sublayers": prototype}
    )
    return pretty_keystr((stack.key_for_field("stacked_sublayers"), *path), root)


def _where(stack: LayerStack, target: Any) -> str:
    """A readable path to `target` (found by identity) in the stack, for error messages."""
    for path, leaf in _leaf_paths(stack.stacked_sublayers):
        if leaf is target:
            return _stack_keystr(stack, stack.stacked_sublayers, path)
    return "LayerStack.stacked_sublayers"


def _state_behavior(stack: LayerStack, variable: AbstractVariable) -> LayerStackVarBehavior:
    axis = stack.stack_axis
    behavior = declared_behavior(variable, axis)
    label = getattr(variable, "label", variable)
    where = _where(stack, variable)
    if behavior is None:
        axes = (getattr(variable, "metadata", None) or {}).get(LAYERSTACK_AXES_METADATA_KEY)
        found = "no 'layerstack_axes' metadata" if axes is None else f"'layerstack_axes': {axes!r}"
        raise ValueError(
            f"LayerStack (stack_axis {axis!r}): the {type(variable).__name__} {label!r} at"
            f" {where} has {found}, so it is not known whether each layer has its own"
            f" value or all layers share one. " + _DECLARE_HINT.format(axis=axis)
        )
    if not isinstance(behavior, LayerStackVarBehavior):
        raise ValueError(
            f"LayerStack (stack_axis {axis!r}): the {type(variable).__name__} {label!r} at"
            f" {where} has 'layerstack_axes'[{axis!r}] = {behavior!r}; expected a"
            " sk.nn.LayerStackVarBehavior (PER_LAYER or SHARED)."
        )
    return behavior


def _check_stacked_leaf(stack: LayerStack, leaf: NamedArray, describe: Callable[[], str]) -> None:
    size = leaf.named_shape[stack.stack_axis]
    if size != stack.stack_axis_size:
        raise ValueError(
            f"LayerStack: {describe()} has {stack.stack_axis!r} of size {size}, but the"
            f" stack has stack_axis_size={stack.stack_axis_size} (named_shape"
            f" {leaf.named_shape}). Every stacked array needs one slice per layer."
        )


def _scan_ready(leaf: NamedArray, axis: AxisName) -> NamedArray:
    # Puts the stack axis first in memory, as the positional axis lax.scan
    # slices; a no-op for arrays built by from_sublayer_builder.
    return leaf.untag_prefix(axis).with_positional_prefix()


def _per_layer_xs(stack: LayerStack, frozen: AbstractVariableValue) -> Any:
    axis = stack.stack_axis
    label = getattr(frozen, "label", "?")

    def prepare(path: Any, leaf: Any) -> Any:
        where = f"the PER_LAYER state {label!r}" + (
            f" (at {jax.tree_util.keystr(path)} in its value)" if path else ""
        )
        if not is_namedarray(leaf) or axis not in leaf.named_shape:
            shape = leaf.named_shape if is_namedarray(leaf) else getattr(leaf, "shape", leaf)
            raise ValueError(
                f"LayerStack (stack_axis {axis!r}): {where} must hold NamedArrays with the"
                f" axis {axis!r} (one slice per layer), but found {shape!r}. Give its value"
                f" the stack axis, or mark it SHARED if all layers share one value."
            )
        _check_stacked_leaf(stack, leaf, lambda: where)
        return _scan_ready(leaf, axis)

    return jax.tree_util.tree_map_with_path(prepare, frozen, is_leaf=is_namedarray)


def _restack(new: Any, original: Any, axis: AxisName) -> Any:
    def stack(value: Any) -> Any:
        return (value if is_namedarray(value) else nx_wrap(value)).tag_prefix(axis)

    def retag(value: Any, reference: Any) -> Any:
        return stack(value).order_like(reference)

    if jax.tree_util.tree_structure(new, is_leaf=is_namedarray) != jax.tree_util.tree_structure(
        original, is_leaf=is_namedarray
    ):
        # The layers gave the state its first value (e.g. a saver that held None).
        return jax.tree_util.tree_map(stack, new, is_leaf=is_namedarray)
    return jax.tree_util.tree_map(retag, new, original, is_leaf=is_namedarray)


def _like_carry(new: Any, old: Any) -> Any:
    """Gives NamedArrays in `new` the memory layout of those in `old` (scan needs it)."""

    def reorder(value: Any, reference: Any) -> Any:
        if (
            is_namedarray(value)
            and is_namedarray(reference)
            and set(value.named_shape) == set(reference.named_shape)
            and len(value.positional_shape) == len(reference.positional_shape)
        ):
            return value.order_like(reference)
        return value

    if jax.tree_util.tree_structure(new, is_leaf=is_namedarray) != jax.tree_util.tree_structure(
        old, is_leaf=is_namedarray
    ):
        return new
    return jax.tree_util.tree_map(reorder, new, old, is_leaf=is_namedarray)


def _describe_avals(tree: Any) -> str:
    def describe(leaf: Any) -> str:
        if is_namedarray(leaf):
            return f"{leaf.dtype}(positional {leaf.positional_shape} | named {leaf.named_shape})"
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            return f"{leaf.dtype}{list(leaf.shape)}"
        return repr(leaf)

    return repr(jax.tree_util.tree_map(describe, tree, is_leaf=is_namedarray))


def _check_same_avals(new: Any, old: Any, what: Callable[[], str]) -> None:
    new_leaves, new_def = jax.tree_util.tree_flatten(new)
    old_leaves, old_def = jax.tree_util.tree_flatten(old)
    same = new_def == old_def and all(
        jnp.shape(a) == jnp.shape(b) and jnp.result_type(a) == jnp.result_type(b)
        for a, b in zip(new_leaves, old_leaves)
    )
    if not same:
        raise ValueError(
            f"LayerStack: {what()} must keep its structure, shapes and dtypes from layer to"
            f" layer (it is carried through the scan), but one layer turned"
            f" {_describe_avals(old)} into {_describe_avals(new)}."
        )


def _check_no_variables(tree: Any, what: str) -> None:
    for path, leaf in _leaf_paths(tree):
        if isinstance(leaf, AbstractVariable):
            raise ValueError(
                f"LayerStack: {what} holds the {type(leaf).__name__}"
                f" {getattr(leaf, 'label', leaf)!r} at {pretty_keystr(path, tree) or '<root>'};"
                " the value passed from layer to layer must be plain arrays. Pass variables"
                " as side inputs (they are carried through the stack) instead."
            )


def _run_stack(stack: LayerStack, argument: Any, side_inputs: dict[str, Any]) -> Any:
    axis = stack.stack_axis
    _check_no_variables(argument, "the argument")

    # Parameters are frozen (read-only inside the scan); every other variable
    # is unbound into a slot, and its value threaded through the scan.
    prototype = freeze_params(stack.stacked_sublayers)
    frozen_side_inputs = freeze_params(side_inputs)
    in_prototype = {
        id(leaf)
        for leaf in jax.tree_util.tree_leaves(prototype)
        if isinstance(leaf, AbstractVariable)
    }
    (prototype, frozen_side_inputs), state_vars = unbind_variables((prototype, frozen_side_inputs))

    shared_vars: list[AbstractVariable] = []
    per_layer_vars: list[AbstractVariable] = []
    for var in state_vars:
        if id(var) in in_prototype and (
            _state_behavior(stack, var) is LayerStackVarBehavior.PER_LAYER
        ):
            per_layer_vars.append(var)
        else:
            shared_vars.append(var)
    shared_init = tuple(var.freeze() for var in shared_vars)
    per_layer_frozen = [var.freeze() for var in per_layer_vars]
    per_layer_xs = tuple(_per_layer_xs(stack, frozen) for frozen in per_layer_frozen)

    # Slice every NamedArray of the prototype that has the stack axis; close
    # over the rest, which is the same for every layer.
    leaves, treedef = jax.tree_util.tree_flatten(prototype, is_leaf=is_namedarray)
    stacked_positions = [
        i for i, leaf in enumerate(leaves) if is_namedarray(leaf) and axis in leaf.named_shape
    ]
    for i in stacked_positions:
        _check_stacked_leaf(
            stack,
            leaves[i],
            lambda i=i: (
                "the array at "
                + _stack_keystr(
                    stack,
                    prototype,
                    jax.tree_util.tree_flatten_with_path(prototype, is_leaf=is_namedarray)[0][i][0],
                )
            ),
        )
    stacked_xs = tuple(_scan_ready(leaves[i], axis) for i in stacked_positions)

    outer_index = side_inputs.get(LAYERSTACK_INDEX_INPUT_NAME, {})
    if not isinstance(outer_index, dict):
        raise TypeError(
            f"LayerStack (stack_axis {axis!r}): the side input {LAYERSTACK_INDEX_INPUT_NAME!r}"
            f" is the LayerStack's own (a dict of stack axes to layer indices), got"
            f" {outer_index!r}. Rename your side input."
        )

    def body(carry: Any, xs: Any) -> tuple[Any, Any]:
        value, shared_values = carry
        layer_leaves, per_layer_values, index = xs
        step_leaves = list(leaves)
        for i, leaf in zip(stacked_positions, layer_leaves):
            step_leaves[i] = leaf
        layer = treedef.unflatten(step_leaves)
        temporaries = [frozen.unfreeze_as_copy() for frozen in (*shared_values, *per_layer_values)]
        layer, step_side_inputs = bind_variables(
            (layer, frozen_side_inputs), temporaries, allow_unused=True
        )
        step_side_inputs = {
            **step_side_inputs,
            LAYERSTACK_INDEX_INPUT_NAME: {**outer_index, axis: index},
        }
        output = layer(value, **step_side_inputs)
        _check_no_variables(output, "the output of a layer")
        output = _like_carry(output, value)
        _check_same_avals(output, value, lambda: "the value passed between layers")
        new_values = [var.freeze() for var in temporaries]
        new_shared = tuple(
            _like_carry(new, old)
            for new, old in zip(new_values[: len(shared_values)], shared_values)
        )
        for new, old in zip(new_shared, shared_values):
            _check_same_avals(new, old, lambda old=old: f"the SHARED state {old.label!r}")
        return (output, new_shared), tuple(new_values[len(shared_values) :])

    with jax.named_scope(f"LayerStack[{axis}]"):
        (result, shared_final), per_layer_out = jax.lax.scan(
            body,
            (argument, shared_init),
            (stacked_xs, per_layer_xs, jnp.arange(stack.stack_axis_size, dtype=jnp.int32)),
            length=stack.stack_axis_size,
            unroll=stack.unroll,
        )

    for var, final in zip(shared_vars, shared_final):
        var.update(final)
    for var, original, new in zip(per_layer_vars, per_layer_frozen, per_layer_out):
        var.update(_restack(new, original, axis))
    return result


# Building --------------------------------------------------------------------------


def _is_array_leaf(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | jax.core.Tracer) or hasattr(leaf, "__jax_array__")


def _build_stacked(
    builder: Callable[..., Any],
    axis: AxisName,
    size: int,
    init_base_rng: jax.Array | None,
    builder_kwargs: dict[str, Any],
) -> Any:
    outside = {
        id(leaf)
        for leaf in jax.tree_util.tree_leaves(builder_kwargs)
        if isinstance(leaf, AbstractVariable)
    }
    # Filled while the builder is traced: everything about the layer that is
    # not an array batched over the stack.
    record: dict[str, Any] = {}

    def build_one(key: Any) -> tuple[list[Any], list[Any]]:
        layer = builder(init_base_rng=None if init_base_rng is None else key, **builder_kwargs)
        layer_slots, created = unbind_variables(layer, predicate=lambda v: id(v) not in outside)
        stacked_values: list[Any] = []
        shared_values: list[Any] = []
        plans = []
        for var in created:
            label = getattr(var, "label", var)
            frozen = var.freeze()
            for path, leaf in jax.tree_util.tree_flatten_with_path(
                frozen.value, is_leaf=is_namedarray
            )[0]:
                if not is_namedarray(leaf):
                    raise TypeError(
                        f"LayerStack.from_sublayer_builder: the {type(var).__name__} {label!r}"
                        f" built by {getattr(builder, '__name__', builder)!r} holds"
                        f" {type(leaf).__name__} {getattr(leaf, 'shape', leaf)!r}"
                        f"{' at ' + jax.tree_util.keystr(path) if path else ''} in its value;"
                        " every variable value the builder creates must be made of"
                        " NamedArrays, so that the stack axis can be added by name. Wrap it,"
                        " e.g. `sk.nx.wrap(array, 'features')`."
                    )
            shared = isinstance(var, StateVariable) and (
                (var.metadata.get(LAYERSTACK_AXES_METADATA_KEY) or {}).get(axis)
                is LayerStackVarBehavior.SHARED
            )
            (shared_values if shared else stacked_values).append(frozen)
            plans.append((var, shared))
        layer_leaves, layer_def = jax.tree_util.tree_flatten(layer_slots, is_leaf=is_namedarray)
        named = [i for i, leaf in enumerate(layer_leaves) if is_namedarray(leaf)]
        plain = [
            i
            for i, leaf in enumerate(layer_leaves)
            if not is_namedarray(leaf) and _is_array_leaf(leaf)
        ]
        record.update(
            plans=plans,
            layer_leaves=layer_leaves,
            layer_def=layer_def,
            named=named,
            plain=plain,
            layer_slots=layer_slots,
        )
        stacked = [*stacked_values, *(layer_leaves[i] for i in named)]
        unstacked = [*shared_values, *(layer_leaves[i] for i in plain)]
        return stacked, unstacked

    if init_base_rng is None:
        keys: Any = jnp.arange(size)
    else:
        keys = jax.random.split(init_base_rng, size)
    try:
        stacked, unstacked = jax.vmap(build_one, out_axes=(0, None))(keys)
    except ValueError as error:
        if "out_axes" not in str(error):
            raise
        candidates = _dependent_leaf_paths(record)
        raise ValueError(
            "LayerStack.from_sublayer_builder: the builder made a value that depends on"
            " init_base_rng but is not a NamedArray (or is a SHARED StateVariable), so it"
            f" cannot be given the stack axis {axis!r}. Look at: {candidates}. Make it a"
            " NamedArray (`sk.nx.wrap(...)`), or a Parameter whose value is one."
        ) from error

    def add_axis(leaf: Any) -> Any:
        return leaf.tag_prefix(axis)

    stacked_iter = iter(jax.tree_util.tree_map(add_axis, stacked, is_leaf=is_namedarray))
    unstacked_iter = iter(unstacked)
    replacements = []
    for var, shared in record["plans"]:
        frozen = next(unstacked_iter) if shared else next(stacked_iter)
        new_var = frozen.unfreeze_as_copy()
        if not shared and isinstance(var, StateVariable):
            axes = dict(var.metadata.get(LAYERSTACK_AXES_METADATA_KEY) or {})
            axes[axis] = LayerStackVarBehavior.PER_LAYER
            new_var.metadata = {**var.metadata, LAYERSTACK_AXES_METADATA_KEY: axes}
        replacements.append(new_var)
    layer_leaves = list(record["layer_leaves"])
    for i in record["named"]:
        layer_leaves[i] = next(stacked_iter)
    for i in record["plain"]:
        layer_leaves[i] = next(unstacked_iter)
    layer_slots = record["layer_def"].unflatten(layer_leaves)
    return bind_variables(layer_slots, replacements)


def _dependent_leaf_paths(record: dict[str, Any]) -> list[str]:
    """Paths of the non-NamedArray values that may depend on the key (for errors)."""
    found = []
    layer_slots = record.get("layer_slots")
    if layer_slots is not None:
        for path, leaf in jax.tree_util.tree_flatten_with_path(layer_slots, is_leaf=is_namedarray)[
            0
        ]:
            if not is_namedarray(leaf) and isinstance(leaf, jax.core.Tracer):
                found.append(pretty_keystr(path, layer_slots) or "<root>")
    for var, shared in record.get("plans", []):
        if shared:
            found.append(f"SHARED {type(var).__name__} {getattr(var, 'label', var)!r}")
    return found
