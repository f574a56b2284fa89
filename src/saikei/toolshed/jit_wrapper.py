"""`Jitted`: a wrapper layer whose calls are compiled, with the model kept inspectable.

Wrapping a model in `Jitted` compiles each call with `sk.variable_jit`, so
StateVariables inside it are updated as in an uncompiled call. The body stays
an ordinary attribute: it can be shown, selected and edited; an edited body
(a new tree structure) simply compiles again on its next call.
"""

from __future__ import annotations

from typing import Any

from saikei.core._struct import pytree_dataclass
from saikei.core._variables_jit import variable_jit
from saikei.nn._layer import Layer

__all__ = ["Jitted"]


def _call_layer(layer: Any, argument: Any, side_inputs: dict[str, Any]) -> Any:
    return layer(argument, **side_inputs)


# One compiled function for every Jitted layer: jax caches it by the tree
# structure of (layer, argument, side inputs), so equal models share a compile.
_jitted_call_layer = variable_jit(_call_layer)


@pytree_dataclass
class Jitted(Layer):
    """Runs `body` under `jax.jit` (via `sk.variable_jit`) each time it is called.

    The argument and side inputs are traced: Python numbers among them
    become traced values, so the body must not branch on them in Python.
    Variables in the body, argument and side inputs are read and written back
    as with `sk.variable_jit`.

    Attributes:
      body: The layer to compile.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.jit_wrapper import Jitted
      >>> body = sk.nn.Elementwise(jnp.tanh)
      >>> jitted = Jitted(body)
      >>> jitted.body == body
      True
      >>> jitted(jnp.zeros(2))
      Array([0., 0.], dtype=float32)
    """

    body: Layer

    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Calls `body(argument, **side_inputs)` as a compiled computation."""
        return _jitted_call_layer(self.body, argument, side_inputs)
