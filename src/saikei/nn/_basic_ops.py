"""Simple layers: elementwise functions, softmax, dtype casts and soft caps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.nn._layer import Layer


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


@pytree_dataclass
class Elementwise(Layer):
    """Applies a function to every element (vectorized over named axes).

    Attributes:
      fn: The function, e.g. `jax.nn.relu`. It must be elementwise: it is
        applied to plain arrays directly and to NamedArrays through `nmap`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> sk.nn.Elementwise(jax.nn.relu)(sk.nx.wrap(jax.numpy.array([-1.0, 2.0]), "a")).unwrap("a")
      Array([0., 2.], dtype=float32)
    """

    fn: Callable[[Any], Any] = _static()

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        if named_axes.is_namedarray(value):
            return named_axes.nmap(self.fn)(value)
        return self.fn(value)


@pytree_dataclass
class Softmax(Layer):
    """Softmax over one or more named axes.

    Attributes:
      axes: The name of the axis (or a tuple of names) to normalize over.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> x = sk.nx.wrap(jnp.zeros((2, 4)), "seq", "kv_seq")
      >>> sk.nn.Softmax("kv_seq")(x).unwrap("seq", "kv_seq")[0]
      Array([0.25, 0.25, 0.25, 0.25], dtype=float32)
    """

    axes: str | tuple[str, ...] = _static()

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        names = (self.axes,) if isinstance(self.axes, str) else tuple(self.axes)
        missing = [name for name in names if name not in value.named_shape]
        if missing:
            raise ValueError(
                f"Softmax over {names}: the input has no axis {missing}; its named shape is"
                f" {value.named_shape}. Check the axis names given to sk.nn.Softmax."
            )
        # Softmax straight over the data dimensions that carry the names keeps the
        # array's memory layout (an untag/nmap/tag round trip can add transposes).
        data = value.data_array
        offset = data.ndim - len(value.axis_names)
        dims = tuple(offset + value.axis_names.index(name) for name in names)
        return named_axes.NamedArray(jax.nn.softmax(data, axis=dims), value.axis_names)


@pytree_dataclass
class CastToDType(Layer):
    """Casts every floating or integer array in its argument to a dtype.

    Attributes:
      dtype: The target dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> sk.nn.CastToDType(jnp.bfloat16)(sk.nx.ones({"a": 2})).dtype
      dtype(bfloat16)
    """

    dtype: Any = _static()

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        def cast(leaf: Any) -> Any:
            if isinstance(leaf, jax.Array | np.ndarray | np.generic):
                return jnp.asarray(leaf).astype(self.dtype)
            return leaf

        return jax.tree_util.tree_map(cast, value)


@pytree_dataclass
class TanhSoftCap(Layer):
    """Smoothly bounds values to (-soft_cap, soft_cap): `tanh(x / c) * c`.

    Attributes:
      soft_cap: The bound `c`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> float(sk.nn.TanhSoftCap(soft_cap=2.0)(jnp.array(100.0)))
      2.0
    """

    soft_cap: float = _static()

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        cap = self.soft_cap
        if named_axes.is_namedarray(value):
            return named_axes.nmap(lambda x: jnp.tanh(x / cap) * cap)(value)
        return jnp.tanh(value / cap) * cap
