"""A simple multi-layer perceptron over one named feature axis.

Example:
  >>> import jax
  >>> from saikei import sk
  >>> from saikei.models import simple_mlp
  >>> mlp = simple_mlp.MLP.from_config(name="mlp", init_base_rng=jax.random.key(0),
  ...     feature_sizes=[8, 32, 8])
  >>> mlp(sk.nx.ones({"batch": 4, "features": 8})).named_shape
  {'batch': 4, 'features': 8}
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from saikei.core import pytree_dataclass
from saikei.nn import Affine, Elementwise, Sequential, StochasticDropout


def _check_sizes(cls_name: str, feature_sizes: Sequence[int]) -> list[int]:
    sizes = list(feature_sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(
            f"{cls_name}.from_config: feature_sizes must list at least an input and an output"
            f" size, all positive ints; got {feature_sizes!r}."
        )
    return sizes


def _affine(name: str, index: int, init_base_rng: Any, axis: str, n_in: int, n_out: int) -> Affine:
    return Affine.from_config(
        f"{name}/Affine_{index}",
        init_base_rng,
        input_axes={axis: n_in},
        output_axes={axis: n_out},
    )


@pytree_dataclass(has_implicitly_inherited_fields=True)
class MLP(Sequential):
    """Affine layers with an activation between each pair: `Affine, act, ..., Affine`.

    Example:
      >>> import jax
      >>> from saikei.models import simple_mlp
      >>> mlp = simple_mlp.MLP.from_config(name="mlp", init_base_rng=jax.random.key(0),
      ...     feature_sizes=[2, 3, 4])
      >>> [type(layer).__name__ for layer in mlp.sublayers]
      ['Affine', 'Elementwise', 'Affine']
    """

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        feature_sizes: Sequence[int],
        activation_fn: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        feature_axis: str = "features",
    ) -> MLP:
        """Builds an MLP whose layer `i` maps `feature_sizes[i]` to `feature_sizes[i + 1]`.

        Args:
          name: Prefix of the parameter labels (`f"{name}/Affine_{i}/Linear.weights"`
            and `f"{name}/Affine_{i}/AddBias.bias"`).
          init_base_rng: Base key, or None for parameter slots.
          feature_sizes: Sizes of the feature axis: input, hidden..., output.
          activation_fn: Elementwise activation after every Affine but the last.
          feature_axis: Name of the feature axis in inputs and outputs.

        Returns:
          A new MLP.

        Example:
          >>> from saikei.models import simple_mlp
          >>> mlp = simple_mlp.MLP.from_config(name="m", init_base_rng=None, feature_sizes=[2, 3])
          >>> mlp.sublayers[0].sublayers[0].weights
          ParameterSlot(label='m/Affine_0/Linear.weights')
        """
        sizes = _check_sizes(cls.__name__, feature_sizes)
        sublayers: list[Any] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            if i:
                sublayers.append(Elementwise(activation_fn))
            sublayers.append(_affine(name, i, init_base_rng, feature_axis, n_in, n_out))
        return cls(sublayers=sublayers)


@pytree_dataclass(has_implicitly_inherited_fields=True)
class DropoutMLP(Sequential):
    """An MLP with dropout before each activation: `Affine, Dropout, act, ..., Affine`.

    The dropout layers need a `random_stream` side input.

    Example:
      >>> import jax
      >>> from saikei.models import simple_mlp
      >>> mlp = simple_mlp.DropoutMLP.from_config(name="m", init_base_rng=jax.random.key(0),
      ...     feature_sizes=[2, 3, 4], drop_rate=0.1)
      >>> [type(layer).__name__ for layer in mlp.sublayers]
      ['Affine', 'StochasticDropout', 'Elementwise', 'Affine']
    """

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        feature_sizes: Sequence[int],
        drop_rate: float,
        activation_fn: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        feature_axis: str = "features",
    ) -> DropoutMLP:
        """Builds a DropoutMLP; see `MLP.from_config` for the shared arguments.

        Args:
          name: Prefix of the parameter labels.
          init_base_rng: Base key, or None for parameter slots.
          feature_sizes: Sizes of the feature axis: input, hidden..., output.
          drop_rate: Drop rate of every dropout layer.
          activation_fn: Elementwise activation after every dropout layer.
          feature_axis: Name of the feature axis.

        Returns:
          A new DropoutMLP.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.models import simple_mlp
          >>> mlp = simple_mlp.DropoutMLP.from_config(name="m", init_base_rng=jax.random.key(0),
          ...     feature_sizes=[2, 3, 2], drop_rate=0.5)
          >>> stream = sk.RandomStream.from_base_key(jax.random.key(1))
          >>> mlp(sk.nx.ones({"features": 2}), random_stream=stream).named_shape
          {'features': 2}
        """
        sizes = _check_sizes(cls.__name__, feature_sizes)
        sublayers: list[Any] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            if i:
                sublayers.append(StochasticDropout(drop_rate))
                sublayers.append(Elementwise(activation_fn))
            sublayers.append(_affine(name, i, init_base_rng, feature_axis, n_in, n_out))
        return cls(sublayers=sublayers)
