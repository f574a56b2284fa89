"""Capture the values (or just the shapes) flowing through a model as it runs.

`SaveIntermediate` is an identity layer that stores whatever passes through it
in a `StateVariable`; `SaveIntermediateShape` stores only its shape and dtype.
`saving_all_intermediates` returns a copy of a model with savers around and
between the sublayers of its `Sequential`-like groups, labelled
`ScopedStateVarLabel(group, 0)`, `(group, 1)`, ... in the order the model runs
them, so the labels are the same each time the copy is made.

Inside a `LayerStack` every saver keeps one value per layer: after a call its
value has the stack axis, so block `i` is `saver.saved.value[{"blocks": i}]`
(with the stack's axis name). Savers also work inside the compiled loop of
`generate` (they then hold the values of the last step).

Saving every activation of a large model costs a lot of memory; use
`shapes_only=True` to see only the shapes.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Hashable, Iterator
from typing import Any

from saikei.core import shapecheck
from saikei.core._selectors import select
from saikei.core._struct import pytree_dataclass
from saikei.core._variables import (
    AutoStateVarLabel,
    ScopedStateVarLabel,
    StateVariable,
    unbind_variables,
)
from saikei.nn._grouping import CheckedSequential, NamedGroup, Sequential
from saikei.nn._layer import Layer
from saikei.nn._layer_stack_types import (
    ANY_STACK_AXIS,
    LAYERSTACK_AXES_METADATA_KEY,
    LayerStackVarBehavior,
)

__all__ = ["SaveIntermediate", "SaveIntermediateShape", "saving_all_intermediates"]

_GROUPS = (Sequential, NamedGroup, CheckedSequential)

# A saver inside a LayerStack keeps one value per layer, in any stack.
_PER_LAYER_METADATA = {
    LAYERSTACK_AXES_METADATA_KEY: {ANY_STACK_AXIS: LayerStackVarBehavior.PER_LAYER}
}


def _saver_metadata() -> dict[Any, Any]:
    return {LAYERSTACK_AXES_METADATA_KEY: dict(_PER_LAYER_METADATA[LAYERSTACK_AXES_METADATA_KEY])}


def _empty_state() -> StateVariable:
    return StateVariable(None, metadata=_saver_metadata())


def _copy_for_another_place(saver: Any) -> Any:
    """A saver like `saver` with its own new variable (for `insert_after` at many places)."""
    var = saver.saved
    if not isinstance(var.label, AutoStateVarLabel):
        raise ValueError(
            f"{type(saver).__name__}: a saver labelled {var.label!r} was inserted at several"
            " places, where every place needs its own variable (one shared variable would"
            " keep only the last value). Insert `SaveIntermediate()` without a variable"
            " (each place then gets its own automatic label), or use"
            " `sk.select(...).apply_with_selected_index(...)` to give each place its own"
            " labelled saver."
        )
    return type(saver)(StateVariable(None, metadata=dict(var.metadata)))


@pytree_dataclass
class SaveIntermediate(Layer):
    """An identity layer that stores the value passing through it.

    Attributes:
      saved: The StateVariable that receives each value seen (the last call
        wins). Built without arguments, it starts as `None`, gets an automatic
        label, and keeps one value per layer inside a `LayerStack`; inserted at
        several places with `insert_after`, each place gets its own.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.save_intermediates import SaveIntermediate
      >>> saver = SaveIntermediate(sk.StateVariable(None, label="x"))
      >>> saver(jnp.arange(3))
      Array([0, 1, 2], dtype=int32)
      >>> saver.saved.value
      Array([0, 1, 2], dtype=int32)
    """

    saved: StateVariable = dataclasses.field(default_factory=_empty_state)

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Stores `argument` in `saved` and returns it unchanged."""
        self.saved.value = argument
        return argument

    def __saikei_insert_copy__(self) -> SaveIntermediate:
        """A copy with its own variable, for `insert_after`/`insert_before` at many places."""
        return _copy_for_another_place(self)


@pytree_dataclass
class SaveIntermediateShape(Layer):
    """An identity layer that stores the structure (shapes, dtypes) of its input.

    The stored value is `sk.chk.as_array_structure(argument)`: arrays and
    NamedArrays become `sk.chk.ArraySpec`s, which hold no arrays, so nothing
    large is kept alive.

    Attributes:
      saved: The StateVariable that receives the structure of each value seen.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.save_intermediates import SaveIntermediateShape
      >>> saver = SaveIntermediateShape(sk.StateVariable(None, label="x"))
      >>> _ = saver(jnp.zeros((2, 3)))
      >>> saver.saved.value
      ArraySpec(shape=(2, 3), dtype=dtype('float32'), named_shape={})
    """

    saved: StateVariable = dataclasses.field(default_factory=_empty_state)

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Stores the shape structure of `argument` in `saved`; returns `argument`."""
        self.saved.value = shapecheck.as_array_structure(argument)
        return argument

    def __saikei_insert_copy__(self) -> SaveIntermediateShape:
        """A copy with its own variable, for `insert_after`/`insert_before` at many places."""
        return _copy_for_another_place(self)


def saving_all_intermediates(
    model: Any, intermediates_group: Hashable | None = "intermediates", shapes_only: bool = False
) -> Any:
    """Returns a copy of `model` with savers around and between its sublayers.

    Where the savers go: the model's own sublayers (when it is a `Sequential`,
    `CheckedSequential` or `NamedGroup`) get a saver before the first, between
    each two and after the last; a model of any other kind is wrapped in a
    `Sequential` with one saver before it and one after. A group that is itself
    a sublayer of a group gets savers only between its sublayers (the
    enclosing group's savers already see its input and output); a group found
    anywhere else (e.g. the `delta` of a residual layer, or the block inside a
    `LayerStack`) gets all three kinds. One saver between two sublayers holds
    both the output of the first and the input of the second. The model itself
    is not modified.

    Args:
      model: A layer or tree of layers.
      intermediates_group: Savers are labelled `ScopedStateVarLabel(group, i)`,
        with `i` counting savers in the order the model runs them; use another
        group to add a second set of savers to a model that already has some.
        None gives every saver its own automatic label instead.
      shapes_only: Insert `SaveIntermediateShape` (shapes and dtypes) instead
        of `SaveIntermediate` (values).

    Returns:
      The copy with savers. Run it, then read the values with e.g.
      `sk.select(copy).at_instances_of(SaveIntermediate).get_sequence()`.
      Inside a `LayerStack`, each value has the stack axis (one slice per layer).

    Raises:
      ValueError: If `model` already holds a variable with one of the new
        labels (e.g. savers from an earlier call with the same group).

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed import save_intermediates as si
      >>> model = sk.nn.Sequential([sk.nn.Elementwise(jnp.exp), sk.nn.Elementwise(jnp.log)])
      >>> saving = si.saving_all_intermediates(model)
      >>> _ = saving(jnp.zeros(2))
      >>> [s.saved.value for s in sk.select(saving).at_instances_of(si.SaveIntermediate).get_sequence()]
      [Array([0., 0.], dtype=float32), Array([1., 1.], dtype=float32), Array([0., 0.], dtype=float32)]
    """
    saver_type = SaveIntermediateShape if shapes_only else SaveIntermediate
    counter = itertools.count()
    new_labels: list[ScopedStateVarLabel] = []

    def new_saver() -> Layer:
        if intermediates_group is None:
            return saver_type(StateVariable(None, metadata=_saver_metadata()))
        label = ScopedStateVarLabel(group=intermediates_group, index=next(counter))
        new_labels.append(label)
        return saver_type(StateVariable(None, label=label, metadata=_saver_metadata()))

    def fill(group: Any, ends: bool) -> Any:
        # Savers are made in the order the model will run them.
        sublayers: list[Any] = [new_saver()] if ends else []
        for i, sublayer in enumerate(group.sublayers):
            if i:
                sublayers.append(new_saver())
            sublayers.append(visit(sublayer, in_group=True))
        if ends:
            sublayers.append(new_saver())
        return dataclasses.replace(group, sublayers=sublayers)

    def visit(node: Any, in_group: bool) -> Any:
        if isinstance(node, _GROUPS):
            return fill(node, ends=not in_group)
        return (
            select(node)
            .at_subtrees_where(lambda x: isinstance(x, _GROUPS))
            .apply(lambda group: fill(group, ends=True))
        )

    if isinstance(model, _GROUPS):
        result = fill(model, ends=True)
    else:
        first = new_saver()
        inner = visit(model, in_group=True)
        result = Sequential([first, inner, new_saver()])
    _check_fresh_labels(model, new_labels, intermediates_group)
    return result


def _existing_labels(model: Any) -> Iterator[Any]:
    _, variables = unbind_variables(model)
    return (var.label for var in variables)


def _check_fresh_labels(model: Any, new_labels: list[ScopedStateVarLabel], group: Hashable) -> None:
    clashes = set(new_labels).intersection(_existing_labels(model))
    if clashes:
        raise ValueError(
            f"saving_all_intermediates: the model already holds variables labelled"
            f" {sorted(clashes)} (group {group!r}); the new savers would clash with them."
            " Pass a different `group=`, or remove the old savers first."
        )
