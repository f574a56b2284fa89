"""The `Layer` base class: the calling convention every saikei layer follows."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

from saikei.core._struct import Struct
from saikei.core._variables import (
    AbstractVariable,
    AbstractVariableValue,
    bind_variables,
    freeze_variables,
    unbind_variables,
)

# One colour per layer type, computed on first use.
_LAYER_COLORS: dict[type, str] = {}


class Layer(Struct, abc.ABC):
    """Base class for neural-network layers.

    A layer is a `Struct` whose `__call__` takes exactly one positional
    argument and any number of keyword side inputs:
    `layer(argument, /, **side_inputs)`. Layers ignore side inputs they do not
    use, and combinators pass every side input on to every child, so a side
    input such as `token_positions` reaches the layers that need it however
    deeply they are nested.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> @sk.pytree_dataclass
      ... class AddOne(sk.nn.Layer):
      ...   def __call__(self, x, /, **side_inputs):
      ...     return x + 1
      >>> AddOne()(jnp.zeros(2), unused_side_input=3)
      Array([1., 1.], dtype=float32)
    """

    @abc.abstractmethod
    def __call__(self, argument: Any, /, **side_inputs: Any) -> Any:
        """Runs the layer on `argument`; side inputs it does not use are ignored."""

    def treescope_color(self) -> str | tuple[str, str] | None:
        """A stable background colour for this layer type in treescope.

        Derived from the qualified type name, so every layer type keeps its
        own colour across sessions.

        Example:
          >>> from saikei import sk
          >>> sk.nn.Identity().treescope_color() == sk.nn.Identity().treescope_color()
          True
        """
        cls = type(self)
        color = _LAYER_COLORS.get(cls)
        if color is None:
            from treescope import formatting_util

            color = formatting_util.color_from_string(f"{cls.__module__}.{cls.__qualname__}")
            _LAYER_COLORS[cls] = color
        return color

    def bind_variables(
        self,
        variables: Iterable[AbstractVariable | AbstractVariableValue],
        allow_unused: bool = False,
    ) -> Any:
        """Returns a copy of this layer with `variables` put into its slots.

        Same as `sk.bind_variables(layer, variables, allow_unused=...)`.

        Example:
          >>> from saikei import sk
          >>> @sk.pytree_dataclass
          ... class Scale(sk.nn.Layer):
          ...   factor: sk.nn.ParameterLike
          ...   def __call__(self, x, /, **side_inputs):
          ...     return x * self.factor.value
          >>> unbound = Scale(sk.ParameterSlot("factor"))
          >>> bound = unbound.bind_variables([sk.Parameter(label="factor", value=3.0)])
          >>> float(bound(2.0))
          6.0
        """
        return bind_variables(self, variables, allow_unused=allow_unused)

    def stateless_call(
        self,
        variable_values: Iterable[AbstractVariableValue],
        argument: Any,
        /,
        **side_inputs: Any,
    ) -> tuple[Any, tuple[AbstractVariableValue, ...]]:
        """Calls the layer as a pure function of frozen variable values.

        The layer's own variables are frozen first (so nothing the caller holds
        is mutated); each value in `variable_values` becomes a temporary
        variable bound into the layer, its argument and its side inputs; the
        layer runs; and the temporaries come back frozen. Together with
        `sk.unbind_variables(..., freeze=True)` this is the functional way to
        run a stateful layer under `jax.jit` or `jax.grad`.

        Args:
          variable_values: Frozen values for the slots of the layer (and of the
            argument and side inputs).
          argument: The layer's argument.
          **side_inputs: Side inputs for the layer.

        Returns:
          `(result, new_values)`: the layer's output and the frozen values of
          the temporary variables after the call, in the order given.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> @sk.pytree_dataclass
          ... class Count(sk.nn.Layer):
          ...   calls: sk.StateVariable
          ...   def __call__(self, x, /, **side_inputs):
          ...     self.calls.value = self.calls.value + 1
          ...     return x
          >>> layer, values = sk.unbind_state_vars(Count(sk.StateVariable(0, label="n")), freeze=True)
          >>> _, new_values = layer.stateless_call(values, jnp.zeros(()))
          >>> int(new_values[0].value)
          1
        """
        frozen_self = freeze_variables(self)
        temporaries = [value.unfreeze_as_copy() for value in variable_values]
        bound_self, bound_argument, bound_side_inputs = bind_variables(
            (frozen_self, argument, side_inputs), temporaries, allow_unused=True
        )
        result = bound_self(bound_argument, **bound_side_inputs)
        _check_no_escaped_variables(result, temporaries)
        return result, tuple(var.freeze() for var in temporaries)


def _check_no_escaped_variables(result: Any, temporaries: list[AbstractVariable]) -> None:
    temporary_ids = {id(var) for var in temporaries}
    _, escaped = unbind_variables(result, predicate=lambda var: id(var) in temporary_ids)
    if escaped:
        labels = [var.label for var in escaped]
        raise ValueError(
            f"stateless_call: the layer returned the temporary variable(s) {labels} in its"
            " result. Return their values (`var.value`) instead of the variables."
        )
