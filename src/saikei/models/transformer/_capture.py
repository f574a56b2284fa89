"""Capturing hook point values at every step of `generate` (its `capture=` option).

Each captured hook point is replaced, inside the compiled generation
function, by a `StepRecorder` holding a fixed-size buffer (a StateVariable
with a `step` axis of size `max_new_tokens`, and one slice per layer inside a
`LayerStack`). The value at the last position of each call is written into
the buffer at the index given by the side input `capture_step`: 0 for the
prefill (the activations that predict the first new token), `s` for the
decode step that predicts token `s`. The buffers travel through the decode
loop with the KV caches, so capturing adds no recompiles per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from saikei import nn
from saikei.core import StateVariable, bind_variables, select, unbind_state_vars
from saikei.core import named_axes as nx
from saikei.core._struct import pytree_dataclass
from saikei.models.transformer._hook_points import HookPoint
from saikei.models.transformer._kv_caching import _eval_shape_with_variables
from saikei.nn._layer_stack_types import LAYERSTACK_AXES_METADATA_KEY, LayerStackVarBehavior

CAPTURE_STEP_INPUT_NAME = "capture_step"
"""The side input holding the generation step a call's activations belong to."""

LABEL_PREFIX = "generate.capture/"

# Filled by `_ShapeProbe` layers while the model is traced for shapes.
_SINKS: list[dict[int, Any]] = []


def _last_position(value: nx.NamedArray) -> nx.NamedArray:
    if "seq" not in value.named_shape:
        return value
    return nx.nmap(lambda a: a[-1])(value.untag("seq"))


@pytree_dataclass
class _ShapeProbe(nn.Layer):
    hook: Any
    key: int = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        value = self.hook(value, **side_inputs)
        user = _last_position(self.hook.to_user(value))
        _SINKS[-1][self.key] = (dict(user.named_shape), user.dtype)
        return value


@pytree_dataclass
class StepRecorder(nn.Layer):
    """Writes the value at a hook point (last position) into a per-step buffer.

    Attributes:
      hook: The hook point it stands in for (run first, so it still marks
        the place).
      buffer: A StateVariable whose value has a `step` axis; the value seen
        at the last position of the call (head axes merged as users see
        them, `seq` dropped) goes to index `side_inputs["capture_step"]`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.models.transformer import _capture, _hook_points
      >>> rec = _capture.StepRecorder(_hook_points.HookPoint("embed"),
      ...     sk.StateVariable(sk.nx.zeros({"step": 3, "embedding": 2}), label="b"))
      >>> _ = rec(sk.nx.ones({"seq": 4, "embedding": 2}), capture_step=jnp.int32(1))
      >>> rec.buffer.value.unwrap("step", "embedding").tolist()
      [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    """

    hook: Any
    buffer: StateVariable

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        value = self.hook(value, **side_inputs)
        step = side_inputs.get(CAPTURE_STEP_INPUT_NAME)
        if step is None:
            raise ValueError(
                f"StepRecorder({self.hook.name!r}): the side input {CAPTURE_STEP_INPUT_NAME!r}"
                " is missing; step recorders run inside generate(..., capture=...)."
            )
        user = _last_position(self.hook.to_user(value))
        buffer = self.buffer.value
        written = nx.nmap(lambda b, v: b.at[step].set(v.astype(b.dtype)))(
            buffer.untag("step"), user
        ).tag("step")
        self.buffer.value = written.order_like(buffer)
        return value


def add_step_recorders(
    model: Any, names: tuple[str, ...], steps: int, probe: Any
) -> tuple[Any, list[tuple[HookPoint, StateVariable]]]:
    """Replaces the hook points that `names` cover by `StepRecorder`s with zero buffers.

    Args:
      model: The (cached) model, with hook points.
      names: Full hook point names to capture.
      steps: The size of the `step` axis.
      probe: `probe(model_with_probes)` traces one decoding call (e.g. with
        `jax.eval_shape`) so that the shape of each value can be seen.

    Returns:
      The model with recorders, and `(hook point, buffer)` pairs in the
      order the buffers appear in the model.
    """
    wanted = set(names)
    found = select(model).at_instances_of(HookPoint).get_by_path()
    targets = {path: hook for path, hook in found.items() if wanted & set(hook.names)}
    paths = list(targets)
    probed = (
        select(model)
        .at_keypaths(paths)
        .set_by_path({path: _ShapeProbe(targets[path], i) for i, path in enumerate(paths)})
    )
    _SINKS.append({})
    try:
        probe(probed)
        shapes = _SINKS[-1]
    finally:
        _SINKS.pop()
    recorders = {}
    pairs = []
    for i, path in enumerate(paths):
        hook = targets[path]
        shape, dtype = shapes[i]
        stack = {} if hook.layers is None else {hook.stack_axis: len(hook.layers)}
        metadata = {}
        if stack:
            metadata = {
                LAYERSTACK_AXES_METADATA_KEY: {hook.stack_axis: LayerStackVarBehavior.PER_LAYER}
            }
        buffer = StateVariable(
            nx.zeros({**stack, "step": steps, **shape}, dtype),
            label=f"{LABEL_PREFIX}{i}:{hook.name}",
            metadata=metadata,
        )
        recorders[path] = StepRecorder(hook, buffer)
        pairs.append((hook, buffer))
    return select(model).at_keypaths(paths).set_by_path(recorders), pairs


def split_captured(
    hooks: list[HookPoint], values: list[nx.NamedArray], names: tuple[str, ...]
) -> dict[str, nx.NamedArray]:
    """The captured buffers by full name (one entry per layer for stacked hook points).

    Example:
      >>> from saikei import sk
      >>> from saikei.models.transformer import _capture, _hook_points
      >>> hook = _hook_points.HookPoint("blocks.{layer}.attn_out", layers=(0, 1),
      ...     stack_axis="blocks")
      >>> got = _capture.split_captured([hook], [sk.nx.zeros({"blocks": 2, "step": 3})],
      ...     ("blocks.1.attn_out",))
      >>> {name: value.named_shape for name, value in got.items()}
      {'blocks.1.attn_out': {'step': 3}}
    """
    entries = {}
    for hook, value in zip(hooks, values):
        if hook.layers is None:
            entries[hook.name] = value
            continue
        sliced = value.untag(hook.stack_axis)
        for s, name in enumerate(hook.names):
            entries[name] = nx.nmap(lambda a, s=s: a[s])(sliced)
    return {name: entries[name] for name in names if name in entries}


def zeros_like_tokens(batch_axes: dict[str, int]) -> tuple[nx.NamedArray, nx.NamedArray]:
    """One token and its position per sequence (the shape of a decoding call), for probing."""
    names = (*batch_axes, "seq")
    shape = (*batch_axes.values(), 1)
    return (
        nx.wrap(jnp.zeros(shape, jnp.int32), *names),
        nx.wrap(jnp.zeros(shape, jnp.int32), *names),
    )


def attach(
    model: Any, state: tuple[Any, ...], names: tuple[str, ...], steps: int, prompt: nx.NamedArray
) -> tuple[Any, tuple[Any, ...], Any]:
    """Adds step recorders to a cached model whose state is held apart (as in `generate`).

    Args:
      model: The `KVCachingTransformerLM` with its state unbound (slots).
      state: The frozen values of that state.
      names: Full hook point names to capture.
      steps: `max_new_tokens`.
      prompt: The prompt (its batch axes size the buffers).

    Returns:
      `(model, state, collect)`: the model with recorders (their buffers
      unbound too), the state with the buffers' zero values appended, and
      `collect(final_state)`, which turns the state after generation into
      `{name: value with a step axis}`.
    """
    batch_axes = {n: s for n, s in prompt.named_shape.items() if n != "seq"}

    def probe(probed: Any) -> None:
        bound = bind_variables(probed, [value.unfreeze_as_copy() for value in state])
        tokens, positions = zeros_like_tokens(batch_axes)
        step = {CAPTURE_STEP_INPUT_NAME: jnp.int32(0)}
        _eval_shape_with_variables(
            lambda m, t, p: m(t, token_positions=p, **step), bound, tokens, positions
        )

    recording, pairs = add_step_recorders(model, names, steps, probe)
    recording, fresh = unbind_state_vars(recording, freeze=True)
    by_label = {buffer.label: hook for hook, buffer in pairs}
    hooks = [by_label[value.label] for value in fresh]
    count = len(fresh)

    def collect(final_state: tuple[Any, ...]) -> dict[str, nx.NamedArray]:
        values = [value.value for value in final_state[len(final_state) - count :]]
        return split_captured(hooks, values, names)

    return recording, (*state, *fresh), collect
