"""Capture the values (or just the shapes) flowing through a model as it runs.

`SaveIntermediate` is an identity layer that stores whatever passes through it
in a `StateVariable`; `SaveIntermediateShape` stores only its shape and dtype.
`saving_all_intermediates` returns a copy of a model with a saver before and
after every sublayer of every `Sequential`-like group, labelled
`ScopedStateVarLabel(group, 0)`, `(group, 1)`, ... in the order the values are
produced, so the labels are the same each time the copy is made.

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
from saikei.core._variables import ScopedStateVarLabel, StateVariable, unbind_variables
from saikei.nn._grouping import is_sequential_or_named
from saikei.nn._layer import Layer

__all__ = ["SaveIntermediate", "SaveIntermediateShape", "saving_all_intermediates"]


def _empty_state() -> StateVariable:
    return StateVariable(None)


@pytree_dataclass
class SaveIntermediate(Layer):
    """An identity layer that stores the value passing through it.

    Attributes:
      saved: The StateVariable that receives each value seen (the last call
        wins). Starts as `None` when built without arguments.

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


def saving_all_intermediates(
    model: Any, group: Hashable = "intermediates", shapes_only: bool = False
) -> Any:
    """Returns a copy of `model` with savers before and after every sublayer.

    Every `Sequential`, `CheckedSequential` or `NamedGroup` in the model (at
    any depth) gets a saver at the start, between consecutive sublayers and
    at the end; one saver between two sublayers holds both the output of the
    first and the input of the second. Labels are
    `ScopedStateVarLabel(group, i)` with `i` counting savers in the order the
    model runs them (a group's inner savers are numbered before the saver that
    follows the group). The model itself is not modified.

    Args:
      model: A layer or tree of layers.
      group: Part of every saver's label; use another group to add a second
        set of savers to a model that already has some.
      shapes_only: Insert `SaveIntermediateShape` (shapes and dtypes) instead
        of `SaveIntermediate` (values).

    Returns:
      The copy with savers. Run it, then read the values with e.g.
      `sk.select(copy).at_instances_of(SaveIntermediate).get_sequence()`.

    Raises:
      ValueError: If `model` already holds a variable with one of the new
        labels (e.g. savers from an earlier call with the same `group`).

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
        label = ScopedStateVarLabel(group=group, index=next(counter))
        new_labels.append(label)
        return saver_type(StateVariable(None, label=label))

    def rebuild_group(node: Any) -> Any:
        sublayers: list[Any] = [new_saver()]
        for sublayer in node.sublayers:
            sublayers.append(insert(sublayer))
            sublayers.append(new_saver())
        return dataclasses.replace(node, sublayers=sublayers)

    def insert(tree: Any) -> Any:
        return select(tree).at_subtrees_where(is_sequential_or_named).apply(rebuild_group)

    result = insert(model)
    _check_fresh_labels(model, new_labels, group)
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
