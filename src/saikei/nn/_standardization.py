"""Normalization layers: Standardize, RMSStandardize, LayerNorm and RMSLayerNorm.

The statistics are computed in at least float32, so bfloat16 and float16
activations are normalized as accurately as float32 ones (Hugging Face models
do the same); the result is cast back to the input's dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.nn._grouping import Sequential
from saikei.nn._initializers import constant_initializer
from saikei.nn._layer import Layer
from saikei.nn._linear import AddBias, Linear

NamedArray = named_axes.NamedArray


def _reduction_dims(value: Any, across: Any, where: str) -> tuple[int, ...]:
    names = (across,) if isinstance(across, str) else tuple(across)
    if not isinstance(value, NamedArray):
        raise TypeError(
            f"{where}: expected a NamedArray input, got {type(value).__name__}. Wrap it"
            " first, e.g. `sk.nx.wrap(x).tag(...names...)`."
        )
    axis_names = value.axis_names
    missing = [name for name in names if name not in axis_names]
    if missing or not names:
        raise ValueError(
            f"{where}: the input has no axis {missing or '(none given)'}; its named_shape is"
            f" {value.named_shape}. Check the `across` axis names."
        )
    lead = value.data_array.ndim - len(axis_names)
    return tuple(lead + axis_names.index(name) for name in names)


def _upcast(data: Any) -> tuple[Any, Any]:
    """Returns the data in a dtype of at least float32 precision, and the output dtype."""
    dtype = data.dtype
    compute = jnp.promote_types(dtype, jnp.float32)
    out = dtype if jnp.issubdtype(dtype, jnp.floating) else compute
    return data.astype(compute), out


@pytree_dataclass
class Standardize(Layer):
    """Rescales to zero mean and unit variance over some axes: `(x - mean) / sqrt(var + eps)`.

    Attributes:
      across: The axis name, or tuple of names, to compute statistics over.
      epsilon: Added to the variance (a pytree child, so it may be an array).

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> x = sk.nx.wrap(jnp.array([[1.0, 3.0], [2.0, 6.0]]), "batch", "features")
      >>> sk.nn.Standardize("features")(x).unwrap("batch", "features").round(3)
      Array([[-1., 1.],
             [-1., 1.]], dtype=float32)
    """

    across: str | tuple[str, ...] = dataclasses.field(metadata={"pytree_node": False})
    epsilon: float | jax.Array = 1e-6

    def __call__(self, value: NamedArray, /, **side_inputs: Any) -> NamedArray:
        dims = _reduction_dims(value, self.across, f"Standardize(across={self.across!r})")
        x, out_dtype = _upcast(value.data_array)
        # Two passes (center, then average the squares): the one-pass
        # E[x^2] - E[x]^2 loses precision when |mean| >> std, as in the large
        # residual streams of real GPT-2 checkpoints.
        centered = x - jnp.mean(x, axis=dims, keepdims=True)
        variance = jnp.mean(jnp.square(centered), axis=dims, keepdims=True)
        result = centered * jax.lax.rsqrt(variance + jnp.asarray(self.epsilon, x.dtype))
        return NamedArray(result.astype(out_dtype), value.axis_names)


@pytree_dataclass
class RMSStandardize(Layer):
    """Divides by the root mean square over some axes: `x / sqrt(mean(x**2) + eps)`.

    This is the normalization of RMSNorm (Zhang & Sennrich, 2019), without
    the learned scale.

    Attributes:
      across: The axis name, or tuple of names, to compute the RMS over.
      epsilon: Added to the mean square (a pytree child).

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> x = sk.nx.wrap(jnp.array([3.0, 4.0]), "features")
      >>> sk.nn.RMSStandardize("features", epsilon=0.0)(x).unwrap("features") * 12.5 ** 0.5
      Array([3., 4.], dtype=float32)
    """

    across: str | tuple[str, ...] = dataclasses.field(metadata={"pytree_node": False})
    epsilon: float | jax.Array = 1e-6

    def __call__(self, value: NamedArray, /, **side_inputs: Any) -> NamedArray:
        dims = _reduction_dims(value, self.across, f"RMSStandardize(across={self.across!r})")
        x, out_dtype = _upcast(value.data_array)
        mean_square = jnp.mean(jnp.square(x), axis=dims, keepdims=True)
        result = x * jax.lax.rsqrt(mean_square + jnp.asarray(self.epsilon, x.dtype))
        return NamedArray(result.astype(out_dtype), value.axis_names)


def _unit_scale(
    name: str, init_base_rng: jax.Array | None, across_axes: dict[Any, int], dtype: Any
) -> Any:
    """The learned per-feature scale of a norm layer, `{name}/scale.weights`, starting at 1."""
    return Linear.from_config(
        f"{name}/scale",
        init_base_rng,
        input_axes={},
        output_axes={},
        parallel_axes=across_axes,
        initializer=constant_initializer(1.0),
        dtype=dtype,
    )


@pytree_dataclass(has_implicitly_inherited_fields=True)
class LayerNorm(Sequential):
    """Layer normalization: `Standardize`, then a learned scale and a learned shift.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> norm = sk.nn.LayerNorm.from_config(name="ln", init_base_rng=jax.random.key(0),
      ...     across_axes={"embedding": 4})
      >>> [type(layer).__name__ for layer in norm.sublayers]
      ['Standardize', 'Linear', 'AddBias']
    """

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        across_axes: Mapping[Any, int],
        epsilon: float | jax.Array = 1e-6,
        dtype: Any = jnp.float32,
    ) -> LayerNorm:
        """Builds a LayerNorm with parameters `{name}/scale.weights` (ones) and `{name}/shift.bias` (zeros).

        Args:
          name: The layer's name.
          init_base_rng: Base key, or None for parameter slots.
          across_axes: Names and sizes of the axes to normalize over; the scale
            and shift vary along them.
          epsilon: Added to the variance.
          dtype: Dtype of the scale and shift.

        Returns:
          A new LayerNorm.

        Example:
          >>> from saikei import sk
          >>> norm = sk.nn.LayerNorm.from_config(name="ln", init_base_rng=None,
          ...     across_axes={"embedding": 4})
          >>> norm.sublayers[1].weights, norm.sublayers[2].bias
          (ParameterSlot(label='ln/scale.weights'), ParameterSlot(label='ln/shift.bias'))
        """
        across_axes = dict(across_axes)
        return cls(
            sublayers=[
                Standardize(across=tuple(across_axes), epsilon=epsilon),
                _unit_scale(name, init_base_rng, across_axes, dtype),
                AddBias.from_config(f"{name}/shift", init_base_rng, across_axes, dtype=dtype),
            ]
        )


@pytree_dataclass(has_implicitly_inherited_fields=True)
class RMSLayerNorm(Sequential):
    """RMS normalization: `RMSStandardize`, then a learned scale.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> norm = sk.nn.RMSLayerNorm.from_config(name="norm", init_base_rng=jax.random.key(0),
      ...     across_axes={"embedding": 4})
      >>> norm(sk.nx.ones({"seq": 3, "embedding": 4})).named_shape
      {'seq': 3, 'embedding': 4}
    """

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        across_axes: Mapping[Any, int],
        epsilon: float | jax.Array = 1e-6,
        dtype: Any = jnp.float32,
    ) -> RMSLayerNorm:
        """Builds an RMSLayerNorm with a parameter `{name}/scale.weights` (ones).

        Args:
          name: The layer's name.
          init_base_rng: Base key, or None for parameter slots.
          across_axes: Names and sizes of the axes to normalize over.
          epsilon: Added to the mean square.
          dtype: Dtype of the scale.

        Returns:
          A new RMSLayerNorm.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> norm = sk.nn.RMSLayerNorm.from_config(name="n", init_base_rng=jax.random.key(0),
          ...     across_axes={"embedding": 2})
          >>> norm.sublayers[1].weights.label
          'n/scale.weights'
        """
        across_axes = dict(across_axes)
        return cls(
            sublayers=[
                RMSStandardize(across=tuple(across_axes), epsilon=epsilon),
                _unit_scale(name, init_base_rng, across_axes, dtype),
            ]
        )
