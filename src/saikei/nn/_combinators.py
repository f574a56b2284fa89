"""Combinators that run several branches on one input: Residual and branches."""

from __future__ import annotations

import functools
import operator
from typing import Any

from saikei.core._struct import pytree_dataclass
from saikei.nn._layer import Layer


@pytree_dataclass
class Residual(Layer):
    """Adds the input back to the output of `delta`: `delta(x) + x`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> sk.nn.Residual(sk.nn.Elementwise(lambda x: 2 * x))(jnp.ones(2))
      Array([3., 3.], dtype=float32)
    """

    delta: Any

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return self.delta(value, **side_inputs) + value


def _run_branches(layer: Any, value: Any, side_inputs: dict[str, Any], combine: Any) -> Any:
    if not layer.branches:
        raise ValueError(
            f"{type(layer).__name__} has no branches; give it at least one layer in `branches`."
        )
    return functools.reduce(combine, [branch(value, **side_inputs) for branch in layer.branches])


@pytree_dataclass
class BranchAndAddTogether(Layer):
    """Runs every branch on the same input and sums their outputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> layer = sk.nn.BranchAndAddTogether([sk.nn.Identity(), sk.nn.Elementwise(jnp.square)])
      >>> layer(jnp.array([2.0]))
      Array([6.], dtype=float32)
    """

    branches: list[Any]

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return _run_branches(self, value, side_inputs, operator.add)


@pytree_dataclass
class BranchAndMultiplyTogether(Layer):
    """Runs every branch on the same input and multiplies their outputs.

    This is the shape of a gated unit: `gate(x) * up(x)`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> layer = sk.nn.BranchAndMultiplyTogether([sk.nn.Identity(), sk.nn.Elementwise(jnp.square)])
      >>> layer(jnp.array([2.0]))
      Array([8.], dtype=float32)
    """

    branches: list[Any]

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return _run_branches(self, value, side_inputs, operator.mul)
