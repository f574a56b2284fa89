"""`Checkpointed`: run a layer under `jax.checkpoint` (rematerialization) with its variables.

`jax.checkpoint` needs a pure function of arrays. `Checkpointed` unbinds the
variables reachable from its body, argument and side inputs, runs the body as
a pure function of their values under `jax.checkpoint`, and writes the new
state values back, so StateVariables (e.g. a `RandomStream`'s offset) advance
exactly as in an ordinary call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from saikei.core._struct import pytree_dataclass
from saikei.core._variables import (
    Parameter,
    bind_variables,
    unbind_variables,
)
from saikei.nn._layer import Layer

__all__ = ["Checkpointed"]


def _is_traceable(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray)


@pytree_dataclass
class Checkpointed(Layer):
    """Runs `body` with gradient checkpointing (`jax.checkpoint`).

    Outputs and gradients are those of `body`; under `jax.grad` the
    activations inside `body` are recomputed on the backward pass instead of
    stored (subject to `policy`). Parameters are read-only inside; assigning
    one raises an error. Only array leaves are traced: Python numbers in the
    inputs are treated as constants.

    Attributes:
      body: The layer to run.
      policy: Optional `jax.checkpoint` policy (e.g.
        `jax.checkpoint_policies.dots_saveable`), static.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.gradient_checkpointing import Checkpointed
      >>> layer = Checkpointed(sk.nn.Elementwise(jnp.sin))
      >>> float(jax.grad(lambda x: layer(x))(0.0))
      1.0
    """

    body: Layer
    policy: Callable[..., Any] | None = dataclasses.field(
        default=None, metadata={"pytree_node": False}
    )

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Calls `body(argument, **side_inputs)` under `jax.checkpoint`."""
        slotted, variables = unbind_variables((self.body, argument, side_inputs))
        values = [var.freeze() for var in variables]
        leaves, treedef = jax.tree_util.tree_flatten((slotted, values))
        traced_positions = [i for i, leaf in enumerate(leaves) if _is_traceable(leaf)]
        # Indices of the state variables the body assigned, found while tracing;
        # only their values leave the checkpointed computation.
        assigned: list[int] = []

        def pure(traced_leaves: list[Any]) -> tuple[Any, list[Any]]:
            all_leaves = list(leaves)
            for position, leaf in zip(traced_positions, traced_leaves):
                all_leaves[position] = leaf
            (body, arg, side), frozen = jax.tree_util.tree_unflatten(treedef, all_leaves)
            copies = [value.unfreeze_as_copy() for value in frozen]
            body, arg, side = bind_variables((body, arg, side), copies)
            before = [jax.tree_util.tree_leaves(copy.value) for copy in copies]
            output = body(arg, **side)
            assigned.clear()
            for index, (copy, old) in enumerate(zip(copies, before)):
                if not _was_assigned(old, copy.value):
                    continue
                if isinstance(copy, Parameter):
                    raise ValueError(
                        f"Checkpointed: the body assigned Parameter {copy.label!r}; parameters"
                        " are read-only inside Checkpointed. Use a StateVariable for values"
                        " the layer updates."
                    )
                assigned.append(index)
            return output, [copies[index].value for index in assigned]

        traced = [leaves[i] for i in traced_positions]
        output, new_values = jax.checkpoint(pure, policy=self.policy)(traced)
        for index, value in zip(assigned, new_values):
            variables[index].value = value
        return output


def _was_assigned(old_leaves: list[Any], new_value: Any) -> bool:
    new_leaves = jax.tree_util.tree_leaves(new_value)
    return len(old_leaves) != len(new_leaves) or any(
        a is not b for a, b in zip(old_leaves, new_leaves)
    )
