"""Dropout: `StochasticDropout`, its disabled twin `DisabledDropout`, and `maybe_dropout`.

Dropout layers are always stochastic when present; to evaluate a model
without dropout, disable them with a selector:
`sk.select(model).at_instances_of(sk.nn.StochasticDropout).apply(lambda d: d.disable())`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.nn._grouping import Identity
from saikei.nn._layer import Layer

NamedArray = named_axes.NamedArray


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


def _sort_key(name: Any) -> tuple[str, str]:
    return (type(name).__name__, repr(name))


def _keep_mask(key: jax.Array, keep_rate: Any, value: Any, shared: tuple[Any, ...]) -> Any:
    """Samples a boolean keep-mask that broadcasts against `value`'s data.

    The mask is drawn with the named axes in sorted order and then moved into
    the data's layout, so the same key drops the same elements whatever the
    order of the axes in memory.
    """
    if not isinstance(value, NamedArray):
        return jax.random.bernoulli(key, keep_rate, jnp.shape(value))
    data = value.data_array
    lead = data.ndim - len(value.axis_names)
    full = (None,) * lead + value.axis_names
    positional = [d for d, name in enumerate(full) if name is None]
    named = sorted(
        (d for d, name in enumerate(full) if name is not None), key=lambda d: _sort_key(full[d])
    )
    order = positional + named
    sample_shape = tuple(1 if full[d] in shared else data.shape[d] for d in order)
    mask = jax.random.bernoulli(key, keep_rate, sample_shape)
    inverse = [order.index(d) for d in range(len(order))]
    return jnp.transpose(mask, inverse)


@pytree_dataclass
class StochasticDropout(Layer):
    """Zeroes each element with probability `drop_rate` and scales the rest by `1 / (1 - drop_rate)`.

    Keys come from a `sk.RandomStream` passed as a side input (by default
    `random_stream=`); every call draws a new key from it.

    Attributes:
      drop_rate: Probability of dropping an element (a pytree child).
      share_across_axes: Axis names along which one mask is shared, so whole
        slices are dropped together. Every other axis (positional ones
        included) gets independent draws.
      random_stream_input_name: The side input holding the RandomStream.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> dropout = sk.nn.StochasticDropout(drop_rate=0.5)
      >>> stream = sk.RandomStream.from_base_key(jax.random.key(0))
      >>> out = dropout(sk.nx.ones({"features": 1000}), random_stream=stream)
      >>> sorted(set(out.unwrap("features").tolist()))
      [0.0, 2.0]
    """

    drop_rate: float | jax.Array
    share_across_axes: tuple[Any, ...] = _static(default=())
    random_stream_input_name: str = _static(default="random_stream")

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        where = f"StochasticDropout(drop_rate={self.drop_rate!r})"
        name = self.random_stream_input_name
        if name not in side_inputs:
            raise ValueError(
                f"{where}: no side input {name!r} was given (side inputs: {sorted(side_inputs)})."
                f" Pass a RandomStream, e.g. `model(x, {name}=sk.RandomStream.from_base_key("
                "jax.random.key(0)))`, or disable dropout with `.disable()`."
            )
        shared = (
            (self.share_across_axes,)
            if isinstance(self.share_across_axes, str)
            else tuple(self.share_across_axes)
        )
        if shared:
            present = value.named_shape if isinstance(value, NamedArray) else {}
            missing = [axis for axis in shared if axis not in present]
            if missing:
                raise ValueError(
                    f"{where}: share_across_axes {missing} are not axes of the input (named_shape"
                    f" {present}). Check the names, or remove them from share_across_axes."
                )
        key = side_inputs[name].next_key()
        keep_rate = 1.0 - self.drop_rate
        mask = _keep_mask(key, keep_rate, value, shared)
        data = value.data_array if isinstance(value, NamedArray) else jnp.asarray(value)
        scale = jnp.asarray(1.0 / keep_rate).astype(data.dtype)
        result = jnp.where(mask, data * scale, jnp.zeros((), data.dtype))
        if isinstance(value, NamedArray):
            return NamedArray(result, value.axis_names)
        return result

    def disable(self) -> DisabledDropout:
        """Returns a `DisabledDropout` with the same settings.

        Example:
          >>> from saikei import sk
          >>> sk.nn.StochasticDropout(0.1).disable()
          DisabledDropout(drop_rate=0.1, share_across_axes=(), random_stream_input_name='random_stream')
        """
        return DisabledDropout(
            drop_rate=self.drop_rate,
            share_across_axes=self.share_across_axes,
            random_stream_input_name=self.random_stream_input_name,
        )


@pytree_dataclass
class DisabledDropout(Identity):
    """A dropout layer that is switched off: returns its input unchanged.

    It marks where dropout would apply and keeps the settings to rebuild the
    `StochasticDropout` with `.enable()`.

    Attributes:
      drop_rate: Drop rate of the enabled layer.
      share_across_axes: Shared axes of the enabled layer.
      random_stream_input_name: Side input name of the enabled layer.

    Example:
      >>> from saikei import sk
      >>> off = sk.nn.DisabledDropout(drop_rate=0.1, share_across_axes=())
      >>> off(3.0), type(off.enable()).__name__
      (3.0, 'StochasticDropout')
    """

    drop_rate: float | jax.Array
    share_across_axes: tuple[Any, ...] = _static(default=())
    random_stream_input_name: str = _static(default="random_stream")

    def enable(self) -> StochasticDropout:
        """Returns the `StochasticDropout` with these settings.

        Example:
          >>> from saikei import sk
          >>> sk.nn.StochasticDropout(0.3).disable().enable()
          StochasticDropout(drop_rate=0.3, share_across_axes=(), random_stream_input_name='random_stream')
        """
        return StochasticDropout(
            drop_rate=self.drop_rate,
            share_across_axes=self.share_across_axes,
            random_stream_input_name=self.random_stream_input_name,
        )


def maybe_dropout(
    drop_rate: float | None,
    share_across_axes: tuple[Any, ...] = (),
    random_stream_input_name: str = "random_stream",
) -> StochasticDropout | DisabledDropout:
    """A `StochasticDropout`, or a `DisabledDropout` with rate 0 when `drop_rate` is None.

    Args:
      drop_rate: Probability of dropping an element, or None for no dropout.
      share_across_axes: Axes along which the mask is shared.
      random_stream_input_name: The side input holding the RandomStream.

    Returns:
      The dropout layer.

    Example:
      >>> from saikei import sk
      >>> type(sk.nn.maybe_dropout(None)).__name__, type(sk.nn.maybe_dropout(0.1)).__name__
      ('DisabledDropout', 'StochasticDropout')
    """
    if drop_rate is None:
        return DisabledDropout(
            drop_rate=0.0,
            share_across_axes=share_across_axes,
            random_stream_input_name=random_stream_input_name,
        )
    return StochasticDropout(
        drop_rate=drop_rate,
        share_across_axes=share_across_axes,
        random_stream_input_name=random_stream_input_name,
    )
