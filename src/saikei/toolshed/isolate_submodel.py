"""Capture one layer of a larger model, with its inputs, so it can be replayed alone.

`call_and_extract_submodel` runs a model once with one of its layers wrapped
in a recorder. For each call of that layer, the recorder keeps the layer (its
parameters frozen, its state variables unbound), the argument and side
inputs it got, the output it produced, and the values of the state
variables it could reach just before and just after the call. Replaying the
call with `stateless_call` then gives the same output bit for bit, without
running the rest of the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from saikei.core._selectors import Selection
from saikei.core._struct import Struct, pytree_dataclass
from saikei.core._tree_util import pretty_keystr
from saikei.core._variables import (
    AbstractVariableValue,
    freeze_params,
    unbind_state_vars,
)
from saikei.nn._layer import Layer

__all__ = ["IsolatedSubmodel", "call_and_extract_submodel"]


@pytree_dataclass
class IsolatedSubmodel(Struct):
    """One recorded call of a layer, replayable without the rest of the model.

    Replay it with::

      output, final_values = isolated.submodel.stateless_call(
          isolated.initial_var_values, isolated.saved_arg, **isolated.saved_side_inputs
      )

    `output` then equals `saved_output` and `final_values` equal
    `final_var_values`.

    Attributes:
      submodel: The selected layer, with Parameters frozen into
        `ParameterValue`s and StateVariables replaced by slots.
      saved_arg: The argument of the call (variables in it, rarely any,
        handled as in `submodel`).
      saved_side_inputs: The side inputs of the call; variables in them (e.g.
        a `RandomStream`'s offset) are replaced by slots.
      saved_output: What the layer returned.
      initial_var_values: Frozen values of the unbound state variables just
        before the call.
      final_var_values: Frozen values of the same variables just after it.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.isolate_submodel import call_and_extract_submodel
      >>> model = sk.nn.Sequential([sk.nn.Elementwise(jnp.exp), sk.nn.Elementwise(jnp.sin)])
      >>> iso = call_and_extract_submodel(
      ...     sk.select(model).at_instances_of(sk.nn.Elementwise).pick_nth_selected(1), jnp.zeros(2))
      >>> iso.saved_arg
      Array([1., 1.], dtype=float32)
      >>> out, _ = iso.submodel.stateless_call(iso.initial_var_values, iso.saved_arg)
      >>> bool((out == iso.saved_output).all())
      True
    """

    submodel: Layer
    saved_arg: Any
    saved_side_inputs: dict[str, Any]
    saved_output: Any
    initial_var_values: tuple[AbstractVariableValue, ...]
    final_var_values: tuple[AbstractVariableValue, ...]


class _Log:
    """A mutable list of records, opaque to pytree operations (a static field)."""

    def __init__(self) -> None:
        self.records: list[IsolatedSubmodel] = []


def _reject_tracers(tree: Any, what: str) -> None:
    leaves_with_paths = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in leaves_with_paths:
        if isinstance(leaf, jax.core.Tracer):
            raise ValueError(
                f"call_and_extract_submodel: the {what} of the selected layer holds a traced"
                f" value at {pretty_keystr(path, tree)}; the layer runs under a JAX"
                " transformation (jit, scan, vmap, a LayerStack, ...), whose values cannot"
                " be recorded. Select a layer that runs outside transformations, or call the"
                " model without jit."
            )


@pytree_dataclass
class _Recorder(Layer):
    """Runs `body` and appends an `IsolatedSubmodel` to `log` for each call."""

    body: Layer
    log: _Log = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        _reject_tracers((argument, side_inputs), "input")
        slotted, state_vars = unbind_state_vars((self.body, argument, side_inputs))
        submodel, saved_arg, saved_side_inputs = freeze_params(slotted)
        initial = tuple(var.freeze() for var in state_vars)
        output = self.body(argument, **side_inputs)
        _reject_tracers(output, "output")
        final = tuple(var.freeze() for var in state_vars)
        self.log.records.append(
            IsolatedSubmodel(
                submodel=submodel,
                saved_arg=saved_arg,
                saved_side_inputs=saved_side_inputs,
                saved_output=output,
                initial_var_values=initial,
                final_var_values=final,
            )
        )
        return output


def call_and_extract_submodel(
    submodel_selection: Selection, argument: Any, /, **side_inputs: Any
) -> IsolatedSubmodel | list[IsolatedSubmodel]:
    """Calls a model and records every call of one selected layer inside it.

    The model is `submodel_selection.deselect()`; it runs for real (its
    StateVariables are updated as in an ordinary call). Run it outside
    `jax.jit`: values seen inside a transformation cannot be recorded.

    Args:
      submodel_selection: A selection of exactly one `sk.nn.Layer` in a model.
      argument: The model's argument.
      **side_inputs: The model's side inputs.

    Returns:
      The `IsolatedSubmodel` of the call when the model called the selected
      layer once (the usual case); a list of them, in call order, when it
      called it several times; an empty list when it never called it (as
      penzai does).

    Raises:
      ValueError: If the selection does not hold exactly one Layer, or the
        layer runs under a JAX transformation.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.isolate_submodel import call_and_extract_submodel
      >>> exp = sk.nn.Elementwise(jnp.exp)
      >>> call_and_extract_submodel(
      ...     sk.select(sk.nn.Sequential([exp])).at_instances_of(sk.nn.Elementwise), jnp.zeros(1)
      ... ).saved_output
      Array([1.], dtype=float32)
    """
    model = submodel_selection.deselect()
    if submodel_selection.count() != 1:
        raise ValueError(
            "call_and_extract_submodel: the selection must hold exactly one layer, but it"
            f" holds {submodel_selection.count()} subtrees at"
            f" {[pretty_keystr(p, model) for p in submodel_selection.get_keypaths()]}. Narrow it,"
            " e.g. with `.pick_nth_selected(0)`."
        )
    selected = submodel_selection.get()
    if not isinstance(selected, Layer):
        [path] = submodel_selection.get_keypaths()
        raise ValueError(
            "call_and_extract_submodel: the selected subtree at"
            f" {pretty_keystr(path, model) or '<root>'} is a {type(selected).__name__}, not an"
            " sk.nn.Layer. Select a layer."
        )
    log = _Log()
    recording = submodel_selection.apply(lambda layer: _Recorder(body=layer, log=log))
    recording(argument, **side_inputs)
    if len(log.records) == 1:
        return log.records[0]
    return list(log.records)
