"""Initializers for the weights of general (named-axis) linear operators.

A weight of a named linear operator has four kinds of axes: input axes it
contracts against, output axes it produces, parallel axes (one independent
operator per position, like attention heads) and convolution spatial axes
(kernel width and height). An initializer gets all four explicitly, so it can
compute fan-in and fan-out without guessing which axis is which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import jax
import jax.numpy as jnp

from saikei.core import named_axes

AxisSizes = Mapping[Any, int]


class LinearOperatorWeightInitializer(Protocol):
    """The signature of an initializer for a named linear operator's weight.

    The four axis groups must not share names. The result has one named axis
    per entry of every group (and no positional axes).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> init: sk.nn.LinearOperatorWeightInitializer = sk.nn.xavier_normal_initializer
      >>> init(jax.random.key(0), input_axes={"a": 2}, output_axes={"b": 3},
      ...      parallel_axes={}, convolution_spatial_axes={}, dtype="float32").named_shape
      {'a': 2, 'b': 3}
    """

    def __call__(
        self,
        key: jax.Array,
        *,
        input_axes: AxisSizes,
        output_axes: AxisSizes,
        parallel_axes: AxisSizes,
        convolution_spatial_axes: AxisSizes,
        dtype: Any,
    ) -> named_axes.NamedArray:
        """Returns a new weight.

        Args:
          key: PRNG key.
          input_axes: Names and sizes of the axes the operator contracts over.
          output_axes: Names and sizes of the axes the operator produces.
          parallel_axes: Names and sizes of axes with one independent operator
            per position (they count toward neither fan).
          convolution_spatial_axes: Names and sizes of kernel spatial axes
            (they count toward both fans).
          dtype: The weight's dtype.
        """
        ...


def check_unique_axis_names_for_initializer(
    input_axes: AxisSizes,
    output_axes: AxisSizes,
    parallel_axes: AxisSizes,
    convolution_spatial_axes: AxisSizes,
) -> None:
    """Raises if an axis name appears in more than one axis group.

    Args:
      input_axes: Input (contracted) axes.
      output_axes: Output axes.
      parallel_axes: Parallel axes.
      convolution_spatial_axes: Convolution spatial axes.

    Raises:
      ValueError: naming the repeated axes and every group.

    Example:
      >>> from saikei import sk
      >>> sk.nn.check_unique_axis_names_for_initializer({"a": 2}, {"b": 3}, {}, {})
      >>> sk.nn.check_unique_axis_names_for_initializer({"a": 2}, {"a": 3}, {}, {})
      Traceback (most recent call last):
      ...
      ValueError: Axis names ['a'] appear in more than one group ...
    """
    groups = {
        "input_axes": input_axes,
        "output_axes": output_axes,
        "parallel_axes": parallel_axes,
        "convolution_spatial_axes": convolution_spatial_axes,
    }
    seen: set[Any] = set()
    repeated: list[Any] = []
    for sizes in groups.values():
        for name in sizes:
            if name in seen and name not in repeated:
                repeated.append(name)
            seen.add(name)
    if repeated:
        described = ", ".join(f"{group}={dict(sizes)}" for group, sizes in groups.items())
        raise ValueError(
            f"Axis names {repeated} appear in more than one group of a weight initializer"
            f" ({described}). Each axis of a weight is exactly one of input, output,"
            " parallel or convolution-spatial; rename one of them."
        )


def _weight_layout(
    input_axes: AxisSizes,
    output_axes: AxisSizes,
    parallel_axes: AxisSizes,
    convolution_spatial_axes: AxisSizes,
) -> tuple[tuple[Any, ...], tuple[int, ...]]:
    check_unique_axis_names_for_initializer(
        input_axes, output_axes, parallel_axes, convolution_spatial_axes
    )
    # Parallel axes lead (they are batch dimensions of the matrix), then the
    # kernel's spatial axes, then the matrix itself: input by output.
    names: list[Any] = []
    sizes: list[int] = []
    for group in (parallel_axes, convolution_spatial_axes, input_axes, output_axes):
        for name, size in group.items():
            names.append(name)
            sizes.append(int(size))
    return tuple(names), tuple(sizes)


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("uniform", "normal", "truncated_normal")


def variance_scaling_initializer(
    key: jax.Array,
    *,
    scale: float,
    mode: Literal["fan_in", "fan_out", "fan_avg"],
    distribution: Literal["uniform", "normal", "truncated_normal"],
    input_axes: AxisSizes,
    output_axes: AxisSizes,
    parallel_axes: AxisSizes,
    convolution_spatial_axes: AxisSizes,
    dtype: Any,
) -> named_axes.NamedArray:
    """Samples a weight whose variance is `scale / fan`, as `jax.nn.initializers.variance_scaling`.

    `fan_in` is the product of the input and spatial axis sizes, `fan_out`
    the product of the output and spatial sizes, `fan_avg` their mean.
    Parallel axes count toward neither: each position gets its own operator.

    Args:
      key: PRNG key.
      scale: Target variance times the fan.
      mode: `"fan_in"`, `"fan_out"` or `"fan_avg"`.
      distribution: `"uniform"`, `"normal"` or `"truncated_normal"` (cut at
        two standard deviations and rescaled to keep the variance).
      input_axes: Input (contracted) axes.
      output_axes: Output axes.
      parallel_axes: Parallel axes.
      convolution_spatial_axes: Convolution spatial axes.
      dtype: The weight's dtype.

    Returns:
      A NamedArray with one named axis per axis given.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> w = sk.nn.variance_scaling_initializer(
      ...     jax.random.key(0), scale=2.0, mode="fan_in", distribution="normal",
      ...     input_axes={"features": 512}, output_axes={"neurons": 256},
      ...     parallel_axes={}, convolution_spatial_axes={}, dtype="float32")
      >>> w.named_shape, round(float(w.data_array.var() * 512 / 2.0), 1)
      ({'features': 512, 'neurons': 256}, 1.0)
    """
    if mode not in _MODES:
        raise ValueError(f"variance_scaling_initializer: mode {mode!r} is not one of {_MODES}.")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(
            f"variance_scaling_initializer: distribution {distribution!r} is not one of"
            f" {_DISTRIBUTIONS}."
        )
    names, shape = _weight_layout(input_axes, output_axes, parallel_axes, convolution_spatial_axes)
    n_parallel, n_spatial, n_in = len(parallel_axes), len(convolution_spatial_axes), len(input_axes)
    first_in = n_parallel + n_spatial
    first_out = first_in + n_in
    init = jax.nn.initializers.variance_scaling(
        scale,
        mode,
        distribution,
        in_axis=tuple(range(first_in, first_out)),
        out_axis=tuple(range(first_out, len(shape))),
        batch_axis=tuple(range(n_parallel)),
        dtype=dtype,
    )
    return named_axes.wrap(init(key, shape), *names)


def xavier_uniform_initializer(
    key: jax.Array,
    *,
    input_axes: AxisSizes,
    output_axes: AxisSizes,
    parallel_axes: AxisSizes,
    convolution_spatial_axes: AxisSizes,
    dtype: Any,
) -> named_axes.NamedArray:
    """Glorot/Xavier uniform: variance scaling with scale 1, `fan_avg`, uniform.

    This is the default initializer of `Linear.from_config`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> w = sk.nn.xavier_uniform_initializer(
      ...     jax.random.key(0), input_axes={"a": 3}, output_axes={"b": 5},
      ...     parallel_axes={}, convolution_spatial_axes={}, dtype="float32")
      >>> bool(abs(w.data_array).max() <= (6 / (3 + 5)) ** 0.5)
      True
    """
    return variance_scaling_initializer(
        key,
        scale=1.0,
        mode="fan_avg",
        distribution="uniform",
        input_axes=input_axes,
        output_axes=output_axes,
        parallel_axes=parallel_axes,
        convolution_spatial_axes=convolution_spatial_axes,
        dtype=dtype,
    )


def xavier_normal_initializer(
    key: jax.Array,
    *,
    input_axes: AxisSizes,
    output_axes: AxisSizes,
    parallel_axes: AxisSizes,
    convolution_spatial_axes: AxisSizes,
    dtype: Any,
) -> named_axes.NamedArray:
    """Glorot/Xavier normal: variance scaling with scale 1, `fan_avg`, normal.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> w = sk.nn.xavier_normal_initializer(
      ...     jax.random.key(0), input_axes={"a": 3}, output_axes={"b": 5},
      ...     parallel_axes={"heads": 2}, convolution_spatial_axes={}, dtype="float32")
      >>> w.named_shape
      {'heads': 2, 'a': 3, 'b': 5}
    """
    return variance_scaling_initializer(
        key,
        scale=1.0,
        mode="fan_avg",
        distribution="normal",
        input_axes=input_axes,
        output_axes=output_axes,
        parallel_axes=parallel_axes,
        convolution_spatial_axes=convolution_spatial_axes,
        dtype=dtype,
    )


def constant_initializer(value: Any) -> LinearOperatorWeightInitializer:
    """Returns an initializer that fills the weight with `value`.

    Args:
      value: A scalar.

    Returns:
      A `LinearOperatorWeightInitializer` (the key is ignored).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> ones = sk.nn.constant_initializer(1.0)
      >>> ones(jax.random.key(0), input_axes={}, output_axes={"a": 2}, parallel_axes={},
      ...      convolution_spatial_axes={}, dtype="float32").unwrap("a").tolist()
      [1.0, 1.0]
    """
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"constant_initializer: value must be a scalar, got shape {jnp.shape(value)}."
        )

    def initializer(
        key: jax.Array,
        *,
        input_axes: AxisSizes,
        output_axes: AxisSizes,
        parallel_axes: AxisSizes,
        convolution_spatial_axes: AxisSizes,
        dtype: Any,
    ) -> named_axes.NamedArray:
        del key
        names, shape = _weight_layout(
            input_axes, output_axes, parallel_axes, convolution_spatial_axes
        )
        return named_axes.wrap(jnp.full(shape, value, dtype), *names)

    initializer.__name__ = f"constant_initializer({value!r})"
    initializer.__qualname__ = initializer.__name__
    return initializer


def zero_initializer(
    key: jax.Array,
    *,
    input_axes: AxisSizes,
    output_axes: AxisSizes,
    parallel_axes: AxisSizes,
    convolution_spatial_axes: AxisSizes,
    dtype: Any,
) -> named_axes.NamedArray:
    """Fills the weight with zeros (the default for biases).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> sk.nn.zero_initializer(jax.random.key(0), input_axes={}, output_axes={"a": 2},
      ...     parallel_axes={}, convolution_spatial_axes={}, dtype="float32").unwrap("a").tolist()
      [0.0, 0.0]
    """
    del key
    names, shape = _weight_layout(input_axes, output_axes, parallel_axes, convolution_spatial_axes)
    return named_axes.wrap(jnp.zeros(shape, dtype), *names)
