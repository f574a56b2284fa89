"""Linear and affine layers over named axes: Linear, AddBias, Affine, and helpers.

A `Linear` layer's weight is a NamedArray whose axis names say what each axis
does: names listed in `in_axis_names` are contracted against the input, names
in `out_axis_names` appear in the output, and every other name is a parallel
axis (present in input, weight and output, with one independent operator per
position, like attention heads). Every other axis of the input is a batch
axis and passes through untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.nn._grouping import Sequential
from saikei.nn._initializers import (
    LinearOperatorWeightInitializer,
    check_unique_axis_names_for_initializer,
    xavier_uniform_initializer,
    zero_initializer,
)
from saikei.nn._layer import Layer
from saikei.nn._parameters import ParameterLike, make_parameter

NamedArray = named_axes.NamedArray


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


def _as_names(names: Any) -> tuple[Any, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def _describe_param(param: Any, kind: str = "weights") -> str:
    label = getattr(param, "label", None)
    return f"{kind} {label!r}" if label is not None else f"unlabeled {kind}"


def _require_named_input(value: Any, where: str) -> NamedArray:
    if not isinstance(value, NamedArray):
        raise TypeError(
            f"{where}: expected a NamedArray input, got {type(value).__name__}"
            f"{f' of shape {value.shape}' if hasattr(value, 'shape') else ''}. Wrap it first,"
            " e.g. `sk.nx.wrap(x).tag(...names...)`."
        )
    if value.positional_shape:
        raise ValueError(
            f"{where}: the input has positional axes (positional_shape"
            f" {value.positional_shape}, named_shape {value.named_shape}); this layer works"
            " on named axes only. Name them with `.tag(...)` first."
        )
    return value


def _require_named_weight(weight: Any, where: str) -> NamedArray:
    if not isinstance(weight, NamedArray) or weight.positional_shape:
        shown = (
            f"positional_shape {weight.positional_shape}, named_shape {weight.named_shape}"
            if isinstance(weight, NamedArray)
            else type(weight).__name__
        )
        raise TypeError(
            f"{where}: the parameter value must be a NamedArray with named axes only; got {shown}."
        )
    return weight


def _dims(names: Sequence[Any], order: tuple[Any, ...]) -> tuple[int, ...]:
    return tuple(order.index(name) for name in names)


def _grouped(names: tuple[Any, ...], groups: Sequence[Sequence[Any]]) -> list[int] | None:
    """The order of `groups` along `names`, if each group's axes are adjacent in that order.

    Returns the group indices in the order they appear in `names` (empty
    groups left out), or None when some group is split or out of order.
    """
    label = {name: index for index, group in enumerate(groups) for name in group}
    runs: list[int] = []
    for name in names:
        if not runs or runs[-1] != label[name]:
            runs.append(label[name])
    if len(runs) != len(set(runs)):
        return None
    for group in groups:
        inside = [name for name in names if name in group]
        if inside != list(group):
            return None
    return runs


# Up to this many rows, a product with a weight stored (out, in) puts the weight first.
_FEW_ROWS = 64


def _dot(
    left: NamedArray,
    right: NamedArray,
    contracted: Sequence[Any],
    batch: Sequence[Any],
) -> NamedArray:
    """Contracts `contracted` and vectorizes over `batch` with one `dot_general`.

    Both arrays must have named axes only. The result's axes are `batch` (in
    `right`'s order), then the remaining axes of `left`, then those of
    `right`, which is the order `dot_general` produces, so no data moves
    (except a few rows times an `(out, in)` weight on CPU, computed weight
    first and then transposed; see below).

    When each operand's batch, contracted and kept axes sit together (in
    either order, as in a weight stored `(out..., in...)`), the axes of each
    group are merged first, so XLA sees a matrix product of at most three
    dimensions in the operands' own layout. Without that, XLA brings a
    multi-axis weight to its canonical `(batch, in, out)` order with a copy,
    which at one token per step costs more than the product itself.
    """
    left_names, right_names = left.axis_names, right.axis_names
    skip = set(contracted) | set(batch)
    left_free = tuple(n for n in left_names if n not in skip)
    right_free = tuple(n for n in right_names if n not in skip)
    # Contracted and batch axes follow the weight's (right's) order on both sides.
    contracted = tuple(n for n in right_names if n in set(contracted))
    batch = tuple(n for n in right_names if n in set(batch))
    out_names = (*batch, *left_free, *right_free)
    left_groups = (batch, contracted, left_free)
    right_groups = (batch, contracted, right_free)
    left_data, right_data = left.data_array, right.data_array
    left_runs = _grouped(left_names, left_groups)
    right_runs = _grouped(right_names, right_groups)
    # The weight (right) keeps its layout; a small activation can move.
    if right_runs is not None and left_runs is None:
        moved = (*batch, *left_free, *contracted)
        left_data = jnp.transpose(left_data, _dims(moved, left_names))
        left_runs = [g for g in (0, 2, 1) if left_groups[g]]
    elif left_runs is not None and right_runs is None:
        moved = (*batch, *contracted, *right_free)
        right_data = jnp.transpose(right_data, _dims(moved, right_names))
        right_runs = [g for g in (0, 1, 2) if right_groups[g]]
    if left_runs is None or right_runs is None:
        data = jax.lax.dot_general(
            left_data,
            right_data,
            (
                (_dims(contracted, left_names), _dims(contracted, right_names)),
                (_dims(batch, left_names), _dims(batch, right_names)),
            ),
        )
        return NamedArray(data, out_names)
    sizes = {**left.named_shape, **right.named_shape}

    def merged(array: jax.Array, runs: list[int], groups: tuple[Any, ...]) -> jax.Array:
        shape = [int(np.prod([sizes[n] for n in groups[g]], dtype=int)) for g in runs]
        return array.reshape(shape)

    lhs = merged(left_data, left_runs, left_groups)
    rhs = merged(right_data, right_runs, right_groups)

    def dim(runs: list[int], group: int) -> tuple[int, ...]:
        return (runs.index(group),) if group in runs else ()

    rows = lhs.shape[left_runs.index(2)] if lhs.ndim == 2 and 2 in left_runs else 0
    if right_runs == [2, 1] and rows == 1:
        # One row times a weight stored (out, in), as in decoding one token:
        # written as `x @ w.T`, XLA's CPU backend turns it into a fused loop
        # that streams the weight once, reading it in place even from a
        # LayerStack slice, where the plain contraction becomes a library call
        # that first copies the slice. With more rows the library call wins.
        data = jax.lax.dot_general(lhs, rhs.T, ((dim(left_runs, 1), (0,)), ((), ())))
    elif right_runs == [2, 1] and 1 < rows <= _FEW_ROWS and jax.default_backend() == "cpu":
        # A few rows (batched decoding) times a weight stored (out, in): the
        # product `w @ x.T` reads the weight in its own layout, where `x @ w.T`
        # makes XLA's CPU library repack the weight on every call (measured
        # 1.7x faster at 8 rows, a little at 64, slower from 128 on:
        # benchmarks/RESULTS-transformer.md, docs/performance.md). The barrier
        # keeps XLA from folding the transpose back into the product. Measured
        # on CPU only; other backends keep the plain product.
        data = jax.lax.dot_general(rhs, lhs, (((1,), dim(left_runs, 1)), ((), ())))
        data = jax.lax.optimization_barrier(data).T
    else:
        data = jax.lax.dot_general(
            lhs,
            rhs,
            (
                (dim(left_runs, 1), dim(right_runs, 1)),
                (dim(left_runs, 0), dim(right_runs, 0)),
            ),
        )
    data = data.reshape([sizes[n] for n in out_names])
    return NamedArray(data, out_names)


def contract(names: Any, left: NamedArray, right: NamedArray) -> NamedArray:
    """Named tensordot: sums `left * right` over the axes `names`.

    Axes that both arrays have but that are not contracted are vectorized over
    (each position gets its own contraction); the others are kept.

    Args:
      names: An axis name or a sequence of names to contract; each must be in
        both arrays, with the same size.
      left: A NamedArray with named axes only.
      right: A NamedArray with named axes only.

    Returns:
      A NamedArray with every axis of either input except `names`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> a = sk.nx.wrap(jnp.ones((2, 3)), "batch", "features")
      >>> b = sk.nx.wrap(jnp.ones((3, 4)), "features", "out")
      >>> sk.nn.contract("features", a, b).named_shape
      {'batch': 2, 'out': 4}
    """
    contracted = _as_names(names)
    _require_named_input(left, "contract (left)")
    _require_named_input(right, "contract (right)")
    left_shape, right_shape = left.named_shape, right.named_shape
    problems = [
        f"{name!r} is missing from the {side} array"
        for name in contracted
        for side, shape in (("left", left_shape), ("right", right_shape))
        if name not in shape
    ]
    problems += [
        f"{name!r} has size {left_shape[name]} on the left and {right_shape[name]} on the right"
        for name in set(left_shape) & set(right_shape)
        if left_shape[name] != right_shape[name]
    ]
    if problems:
        raise ValueError(
            f"contract({contracted!r}): {'; '.join(problems)}. Left named_shape {left_shape},"
            f" right named_shape {right_shape}."
        )
    batch = [n for n in left.axis_names if n in right_shape and n not in contracted]
    return _dot(left, right, contracted, batch)


@pytree_dataclass
class Linear(Layer):
    """A linear operator on named axes: contracts the input with a weight.

    Attributes:
      weights: The weight parameter; its value is a NamedArray with named
        axes only.
      in_axis_names: Weight axes contracted against the input (the input must
        have them, with the same sizes) and removed.
      out_axis_names: Weight axes added to the output (the input must not have
        them). Any other weight axis is parallel: the input must have it too,
        and it stays in the output.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> layer = sk.nn.Linear.from_config(
      ...     name="proj", init_base_rng=jax.random.key(0),
      ...     input_axes={"embedding": 4}, output_axes={"neurons": 8})
      >>> layer(sk.nx.ones({"batch": 2, "embedding": 4})).named_shape
      {'batch': 2, 'neurons': 8}
      >>> layer.weights.label
      'proj.weights'
    """

    weights: ParameterLike[NamedArray]
    in_axis_names: tuple[Any, ...] = _static()
    out_axis_names: tuple[Any, ...] = _static()

    def _weight_value(self) -> NamedArray:
        return _require_named_weight(
            self.weights.value, f"Linear ({_describe_param(self.weights)})"
        )

    @property
    def input_axes(self) -> dict[Any, int]:
        """Names and sizes of the axes contracted away (input only).

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> sk.nn.Linear.from_config(name="l", init_base_rng=jax.random.key(0),
          ...     input_axes={"a": 2}, output_axes={"b": 3}).input_axes
          {'a': 2}
        """
        shape = self._weight_value().named_shape
        return {name: shape[name] for name in _as_names(self.in_axis_names)}

    @property
    def output_axes(self) -> dict[Any, int]:
        """Names and sizes of the axes the operator adds (output only).

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> sk.nn.Linear.from_config(name="l", init_base_rng=jax.random.key(0),
          ...     input_axes={"a": 2}, output_axes={"b": 3}).output_axes
          {'b': 3}
        """
        shape = self._weight_value().named_shape
        return {name: shape[name] for name in _as_names(self.out_axis_names)}

    @property
    def parallel_axes(self) -> dict[Any, int]:
        """Names and sizes of the weight axes kept from input to output.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> sk.nn.Linear.from_config(name="l", init_base_rng=jax.random.key(0),
          ...     input_axes={"a": 2}, output_axes={"b": 3},
          ...     parallel_axes={"heads": 4}).parallel_axes
          {'heads': 4}
        """
        special = set(_as_names(self.in_axis_names)) | set(_as_names(self.out_axis_names))
        shape = self._weight_value().named_shape
        return {name: size for name, size in shape.items() if name not in special}

    def __call__(self, value: NamedArray, /, **side_inputs: Any) -> NamedArray:
        weights = self._weight_value()
        in_names = _as_names(self.in_axis_names)
        out_names = _as_names(self.out_axis_names)
        _check_linear_input(self, value, weights, in_names, out_names)
        special = set(in_names) | set(out_names)
        parallel = [name for name in weights.axis_names if name not in special]
        if not in_names and not out_names:
            # A pure per-position rescaling: multiplying by name keeps the
            # input's layout, where dot_general would move parallel axes first.
            return value * weights
        return _dot(value, weights, in_names, parallel)

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        input_axes: Mapping[Any, int],
        output_axes: Mapping[Any, int],
        parallel_axes: Mapping[Any, int] | None = None,
        parallel_broadcast_axes: Mapping[Any, int] | None = None,
        initializer: LinearOperatorWeightInitializer = xavier_uniform_initializer,
        dtype: Any = jnp.float32,
        rename_outputs_if_necessary: bool = True,
    ) -> Linear | LinearInPlace:
        """Builds a Linear layer with a new weight parameter `f"{name}.weights"`.

        Args:
          name: The layer's name; the weight is labeled `f"{name}.weights"`.
          init_base_rng: Base key for initialization, or None to leave a
            `ParameterSlot` for weights loaded later.
          input_axes: Names and sizes of the axes to contract over.
          output_axes: Names and sizes of the axes to produce. A name may
            also be an input name ("features" -> "features") only if
            `rename_outputs_if_necessary` is True.
          parallel_axes: Axes in input, weight and output with an independent
            operator per position (like a block-diagonal matrix).
          parallel_broadcast_axes: Like `parallel_axes` for initialization,
            but absent from the input: they become extra output axes.
          initializer: Called with the four axis groups to build the weight.
          dtype: The weight's dtype.
          rename_outputs_if_necessary: If an output name is also an input
            name, name the weight's axis `f"{n}_out"` (or another unused
            name) and return `LinearInPlace([Linear, RenameAxes])`, which
            renames it back after the contraction.

        Returns:
          A `Linear`, or a `LinearInPlace` when outputs had to be renamed.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> layer = sk.nn.Linear.from_config(name="mix", init_base_rng=jax.random.key(0),
          ...     input_axes={"features": 4}, output_axes={"features": 6})
          >>> type(layer).__name__, layer.sublayers[0].out_axis_names
          ('LinearInPlace', ('features_out',))
          >>> layer(sk.nx.ones({"features": 4})).named_shape
          {'features': 6}
        """
        input_axes = dict(input_axes)
        output_axes = dict(output_axes)
        parallel_axes = dict(parallel_axes or {})
        parallel_broadcast_axes = dict(parallel_broadcast_axes or {})
        _check_linear_config(
            name,
            input_axes,
            output_axes,
            parallel_axes,
            parallel_broadcast_axes,
            rename_outputs_if_necessary,
        )
        taken = set(input_axes) | set(output_axes) | set(parallel_axes)
        taken |= set(parallel_broadcast_axes)
        renamed: dict[Any, Any] = {}
        weight_outputs: dict[Any, int] = {}
        for axis, size in output_axes.items():
            if axis in input_axes:
                renamed[axis] = _fresh_name(f"{axis}_out", taken)
                taken.add(renamed[axis])
            weight_outputs[renamed.get(axis, axis)] = size
        check_unique_axis_names_for_initializer(
            input_axes, weight_outputs, {**parallel_axes, **parallel_broadcast_axes}, {}
        )
        weights = make_parameter(
            f"{name}.weights",
            init_base_rng,
            initializer,
            input_axes=input_axes,
            output_axes=weight_outputs,
            parallel_axes={**parallel_axes, **parallel_broadcast_axes},
            convolution_spatial_axes={},
            dtype=dtype,
        )
        linear = cls(
            weights=weights,
            in_axis_names=tuple(input_axes),
            out_axis_names=(*weight_outputs, *parallel_broadcast_axes),
        )
        if not renamed:
            return linear
        return LinearInPlace(
            sublayers=[
                linear,
                RenameAxes(old=tuple(renamed.values()), new=tuple(renamed.keys())),
            ]
        )


def _fresh_name(candidate: str, taken: set[Any]) -> str:
    name, index = candidate, 1
    while name in taken:
        name = f"{candidate}_{index}"
        index += 1
    return name


def _check_linear_config(
    name: str,
    input_axes: dict[Any, int],
    output_axes: dict[Any, int],
    parallel_axes: dict[Any, int],
    parallel_broadcast_axes: dict[Any, int],
    rename_outputs_if_necessary: bool,
) -> None:
    overlap = [axis for axis in output_axes if axis in input_axes]
    if overlap and not rename_outputs_if_necessary:
        raise ValueError(
            f"Linear.from_config({name!r}): output axes {overlap} are also input axes"
            f" (input_axes={input_axes}, output_axes={output_axes}). Pass"
            " rename_outputs_if_necessary=True to get a LinearInPlace that renames them,"
            " or use different output names."
        )
    groups = {
        "input_axes": input_axes,
        "output_axes": output_axes,
        "parallel_axes": parallel_axes,
        "parallel_broadcast_axes": parallel_broadcast_axes,
    }
    for group in ("parallel_axes", "parallel_broadcast_axes"):
        others = {n for g, sizes in groups.items() if g != group for n in sizes}
        clash = [axis for axis in groups[group] if axis in others]
        if clash:
            raise ValueError(
                f"Linear.from_config({name!r}): {group} {clash} also appear in another"
                f" axis group ({', '.join(f'{g}={s}' for g, s in groups.items())}). Parallel"
                " axes must be distinct from the input, output and each other."
            )


def _check_linear_input(
    layer: Linear,
    value: Any,
    weights: NamedArray,
    in_names: tuple[Any, ...],
    out_names: tuple[Any, ...],
) -> None:
    where = f"Linear ({_describe_param(layer.weights)})"
    value = _require_named_input(value, where)
    found = value.named_shape
    expected = weights.named_shape
    missing_weight_axes = [n for n in (*in_names, *out_names) if n not in expected]
    if missing_weight_axes:
        raise ValueError(
            f"{where}: in_axis_names {in_names} / out_axis_names {out_names} name axes"
            f" {missing_weight_axes} that the weight does not have (weight named_shape"
            f" {expected})."
        )
    problems = []
    for axis, size in expected.items():
        if axis in out_names:
            if axis in found:
                problems.append(f"output axis {axis!r} is already in the input")
        elif axis not in found:
            problems.append(f"axis {axis!r} (size {size}) is missing")
        elif found[axis] != size:
            problems.append(f"axis {axis!r} has size {found[axis]} but the weights expect {size}")
    if problems:
        wanted = {axis: size for axis, size in expected.items() if axis not in out_names}
        raise ValueError(
            f"{where}: the input does not fit: {'; '.join(problems)}. Expected named axes"
            f" {wanted} plus any batch axes, and none of the output axes {out_names}; found"
            f" named_shape {found}."
        )


@pytree_dataclass
class AddBias(Layer):
    """Adds a learned bias, broadcast by name over the input's other axes.

    Attributes:
      bias: The bias parameter; its value is a NamedArray.
      new_axis_names: Bias axes that the input does not have and the output
        gains. Every other bias axis must be in the input, with the same size.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> layer = sk.nn.AddBias.from_config(name="b", init_base_rng=jax.random.key(0),
      ...     biased_axes={"features": 3})
      >>> layer(sk.nx.ones({"batch": 2, "features": 3})).named_shape
      {'batch': 2, 'features': 3}
    """

    bias: ParameterLike[NamedArray]
    new_axis_names: tuple[Any, ...] = _static(default=())

    def __call__(self, value: NamedArray, /, **side_inputs: Any) -> NamedArray:
        where = f"AddBias ({_describe_param(self.bias, 'bias')})"
        bias = self.bias.value
        if not isinstance(bias, NamedArray):
            raise TypeError(f"{where}: the bias value must be a NamedArray, got {type(bias)}.")
        if not isinstance(value, NamedArray):
            raise TypeError(
                f"{where}: expected a NamedArray input, got {type(value).__name__}. Wrap it"
                " first, e.g. `sk.nx.wrap(x).tag(...names...)`."
            )
        new_names = _as_names(self.new_axis_names)
        found = value.named_shape
        problems = []
        for axis, size in bias.named_shape.items():
            if axis in new_names:
                if axis in found:
                    problems.append(f"new axis {axis!r} is already in the input")
            elif axis not in found:
                problems.append(f"axis {axis!r} (size {size}) is missing")
            elif found[axis] != size:
                problems.append(f"axis {axis!r} has size {found[axis]} but the bias has {size}")
        if problems:
            raise ValueError(
                f"{where}: the input does not fit: {'; '.join(problems)}. Bias named_shape"
                f" {bias.named_shape} (new axes {new_names}); input named_shape {found}."
            )
        return value + bias

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        biased_axes: Mapping[Any, int],
        new_output_axes: Mapping[Any, int] | None = None,
        initializer: LinearOperatorWeightInitializer = zero_initializer,
        dtype: Any = jnp.float32,
    ) -> AddBias:
        """Builds an AddBias layer with a new parameter `f"{name}.bias"`.

        Args:
          name: The layer's name; the bias is labeled `f"{name}.bias"`.
          init_base_rng: Base key, or None for a `ParameterSlot`.
          biased_axes: Names and sizes of input axes the bias varies along.
          new_output_axes: Names and sizes of axes the bias adds.
          initializer: Called with all bias axes as `output_axes`.
          dtype: The bias dtype.

        Returns:
          A new AddBias layer.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> layer = sk.nn.AddBias.from_config(name="b", init_base_rng=None,
          ...     biased_axes={"features": 3})
          >>> layer.bias
          ParameterSlot(label='b.bias')
        """
        biased_axes = dict(biased_axes)
        new_output_axes = dict(new_output_axes or {})
        clash = [axis for axis in new_output_axes if axis in biased_axes]
        if clash:
            raise ValueError(
                f"AddBias.from_config({name!r}): axes {clash} are in both biased_axes"
                f" {biased_axes} and new_output_axes {new_output_axes}."
            )
        bias = make_parameter(
            f"{name}.bias",
            init_base_rng,
            initializer,
            input_axes={},
            output_axes={**biased_axes, **new_output_axes},
            parallel_axes={},
            convolution_spatial_axes={},
            dtype=dtype,
        )
        return cls(bias=bias, new_axis_names=tuple(new_output_axes))


@pytree_dataclass
class RenameAxes(Layer):
    """Renames named axes of its input (no data moves).

    Attributes:
      old: An axis name or a tuple of names to rename.
      new: The new name(s), one per old name.

    Example:
      >>> from saikei import sk
      >>> sk.nn.RenameAxes(old="features_out", new="features")(
      ...     sk.nx.ones({"batch": 2, "features_out": 3})).named_shape
      {'batch': 2, 'features': 3}
    """

    old: Any = _static()
    new: Any = _static()

    def __call__(self, value: NamedArray, /, **side_inputs: Any) -> NamedArray:
        old, new = _as_names(self.old), _as_names(self.new)
        where = f"RenameAxes({self.old!r} -> {self.new!r})"
        if len(old) != len(new):
            raise ValueError(f"{where}: got {len(old)} old names but {len(new)} new names.")
        if not isinstance(value, NamedArray):
            raise TypeError(f"{where}: expected a NamedArray input, got {type(value).__name__}.")
        names = value.axis_names
        missing = [name for name in old if name not in names]
        if missing:
            raise ValueError(
                f"{where}: the input has no axis {missing}; its named_shape is {value.named_shape}."
            )
        mapping = dict(zip(old, new))
        renamed = tuple(mapping.get(name, name) for name in names)
        kept = [name for name in renamed if name is not None]
        if len(set(kept)) != len(kept):
            raise ValueError(
                f"{where}: renaming would repeat an axis name: the input's axes"
                f" {value.named_shape} would become {kept}."
            )
        return NamedArray(value.data_array, renamed)


@pytree_dataclass
class ConstantRescale(Layer):
    """Multiplies its input by a constant.

    Attributes:
      by: The factor (a Python number or a scalar array; it is a pytree
        child, so it can be traced).

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> sk.nn.ConstantRescale(by=0.5)(jnp.array([2.0, 4.0]))
      Array([1., 2.], dtype=float32)
    """

    by: Any

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        return value * self.by


@pytree_dataclass(has_implicitly_inherited_fields=True)
class LinearInPlace(Sequential):
    """A Linear layer followed by renames that give outputs the input's names.

    `Linear.from_config` builds one when an output axis has an input axis's
    name (e.g. "features" -> "features"): the weight uses a temporary name
    such as "features_out", and a `RenameAxes` renames it back.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> layer = sk.nn.Linear.from_config(name="l", init_base_rng=jax.random.key(0),
      ...     input_axes={"features": 2}, output_axes={"features": 2})
      >>> [type(s).__name__ for s in layer.sublayers]
      ['Linear', 'RenameAxes']
    """


@pytree_dataclass(has_implicitly_inherited_fields=True)
class Affine(Sequential):
    """An affine layer: a `Linear` (plus any renames) followed by `AddBias`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> layer = sk.nn.Affine.from_config(name="mlp/Affine_0",
      ...     init_base_rng=jax.random.key(0),
      ...     input_axes={"features": 8}, output_axes={"features": 32})
      >>> [p.label for p in sk.unbind_params(layer)[1]]
      ['mlp/Affine_0/Linear.weights', 'mlp/Affine_0/AddBias.bias']
    """

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        input_axes: Mapping[Any, int],
        output_axes: Mapping[Any, int],
        parallel_axes: Mapping[Any, int] | None = None,
        parallel_broadcast_axes: Mapping[Any, int] | None = None,
        linear_initializer: LinearOperatorWeightInitializer = xavier_uniform_initializer,
        bias_initializer: LinearOperatorWeightInitializer = zero_initializer,
        dtype: Any = jnp.float32,
        rename_outputs_if_necessary: bool = True,
    ) -> Affine:
        """Builds `Affine([Linear, (RenameAxes,) AddBias])`.

        The weight is labeled `f"{name}/Linear.weights"` and the bias
        `f"{name}/AddBias.bias"`; the bias covers the output, parallel and
        parallel-broadcast axes.

        Args:
          name: The layer's name.
          init_base_rng: Base key, or None for parameter slots.
          input_axes: See `Linear.from_config`.
          output_axes: See `Linear.from_config`.
          parallel_axes: See `Linear.from_config`.
          parallel_broadcast_axes: See `Linear.from_config`.
          linear_initializer: Initializer of the weight.
          bias_initializer: Initializer of the bias.
          dtype: Dtype of both parameters.
          rename_outputs_if_necessary: See `Linear.from_config`.

        Returns:
          A new Affine layer.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> layer = sk.nn.Affine.from_config(name="a", init_base_rng=jax.random.key(0),
          ...     input_axes={"x": 2}, output_axes={"y": 3})
          >>> layer(sk.nx.ones({"x": 2})).named_shape
          {'y': 3}
        """
        linear = Linear.from_config(
            f"{name}/Linear",
            init_base_rng,
            input_axes=input_axes,
            output_axes=output_axes,
            parallel_axes=parallel_axes,
            parallel_broadcast_axes=parallel_broadcast_axes,
            initializer=linear_initializer,
            dtype=dtype,
            rename_outputs_if_necessary=rename_outputs_if_necessary,
        )
        linear_layers = list(linear.sublayers) if isinstance(linear, LinearInPlace) else [linear]
        bias = AddBias.from_config(
            f"{name}/AddBias",
            init_base_rng,
            biased_axes={
                **dict(output_axes),
                **dict(parallel_axes or {}),
                **dict(parallel_broadcast_axes or {}),
            },
            initializer=bias_initializer,
            dtype=dtype,
        )
        return cls(sublayers=[*linear_layers, bias])
