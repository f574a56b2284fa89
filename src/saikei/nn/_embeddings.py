"""Token embeddings (lookup and decode over one shared table) and rotary position embeddings."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes
from saikei.core._struct import Struct, pytree_dataclass
from saikei.nn._initializers import variance_scaling_initializer
from saikei.nn._layer import Layer
from saikei.nn._linear import _dot
from saikei.nn._parameters import ParameterLike, make_parameter

NamedArray = named_axes.NamedArray


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


# Helpers shared with the attention modules -----------------------------------------


def _require_named(value: Any, what: str, where: str) -> NamedArray:
    """Returns `value` if it is a NamedArray without positional axes, else raises."""
    if not isinstance(value, NamedArray):
        raise TypeError(
            f"{where}: {what} must be a NamedArray (wrap it with `sk.nx.wrap(array, *names)`),"
            f" got {type(value).__name__}: {value!r}."
        )
    if value.positional_shape:
        raise ValueError(
            f"{where}: {what} must have named axes only, but it has positional axes"
            f" {value.positional_shape} (named_shape {value.named_shape}). Name them with"
            " `.tag(...)` first."
        )
    return value


def _side_input(side_inputs: Mapping[str, Any], name: str, where: str) -> Any:
    try:
        return side_inputs[name]
    except KeyError:
        raise KeyError(
            f"{where}: the side input {name!r} is missing; side inputs given:"
            f" {sorted(map(str, side_inputs))}. Pass it as a keyword argument when calling the"
            " model (e.g. `model(tokens, token_positions=sk.nx.arange('seq', n))`)."
        ) from None


def _alignment(arr: NamedArray, target_names: Sequence[Any]) -> tuple[tuple[int, ...], tuple]:
    """How to make `arr`'s data broadcast against an array with dims `target_names`.

    Returns `(perm, shape)` for `_align`: `arr`'s axes are transposed into
    target order and reshaped, with size-1 dimensions for target names that
    `arr` lacks. Every name of `arr` must be in `target_names`.
    """
    names = arr.axis_names
    sizes = arr.named_shape
    perm = tuple(names.index(name) for name in target_names if name in sizes)
    return perm, tuple(sizes.get(name, 1) for name in target_names)


def _align(data: jax.Array, perm: tuple[int, ...], shape: tuple[int, ...]) -> jax.Array:
    """Applies an `_alignment`; meant to run inside a jitted kernel."""
    return jnp.transpose(data, perm).reshape(shape)


def _label_of(parameter: Any) -> str:
    label = getattr(parameter, "label", None)
    return f"parameter {label!r}" if label is not None else "the embedding table"


# Embedding tables ------------------------------------------------------------------


# Normal with variance 1 / fan_out: each embedding vector has an expected squared
# norm of 1, whatever the embedding width.
_FAN_OUT_NORMAL = functools.partial(
    variance_scaling_initializer, scale=1.0, mode="fan_out", distribution="normal"
)


@pytree_dataclass
class EmbeddingTable(Struct):
    """A table of embedding vectors, one per token of a vocabulary.

    The table is not a layer: wrap it in `EmbeddingLookup` (token ids to
    vectors) or `EmbeddingDecode` (vectors to logits). Give the *same* table
    object to both to tie their weights: they then hold one Parameter, which
    `sk.unbind_params` returns once.

    Attributes:
      embeddings: The parameter: a NamedArray with the vocabulary axis and one
        or more embedding axes (usually just `"embedding"`).
      vocabulary_axis: The name of the vocabulary axis of `embeddings`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> key = jax.random.key(0)
      >>> table = sk.nn.EmbeddingTable.from_config("embedder", key, 10, {"embedding": 4})
      >>> table.embeddings.label, table.embeddings.value.named_shape
      ('embedder.embeddings', {'vocabulary': 10, 'embedding': 4})
    """

    embeddings: ParameterLike[NamedArray]
    vocabulary_axis: str = _static()

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        vocab_size: int,
        embedding_axes: dict[str, int],
        vocabulary_axis: str = "vocabulary",
        initializer: Callable[..., NamedArray] = _FAN_OUT_NORMAL,
        dtype: Any = jnp.float32,
    ) -> EmbeddingTable:
        """Builds a table whose parameter is labeled `f"{name}.embeddings"`.

        Args:
          name: The table's name, the prefix of its parameter label.
          init_base_rng: Base key for initialization, or None for a
            `ParameterSlot` to bind loaded weights into.
          vocab_size: Number of tokens.
          embedding_axes: Names and sizes of the embedding axes, e.g.
            `{"embedding": 512}`.
          vocabulary_axis: Name of the vocabulary axis; not in `embedding_axes`.
          initializer: Called as `initializer(key, input_axes={},
            output_axes=embedding_axes, parallel_axes={vocabulary_axis:
            vocab_size}, convolution_spatial_axes={}, dtype=dtype)` (the
            `sk.nn.LinearOperatorWeightInitializer` convention). The default,
            `sk.nn.variance_scaling_initializer` with `scale=1.0,
            mode="fan_out", distribution="normal"`, draws from a normal
            distribution with variance `1 / prod(embedding sizes)`.
          dtype: The parameter dtype.

        Returns:
          An `EmbeddingTable`.

        Example:
          >>> from saikei import sk
          >>> sk.nn.EmbeddingTable.from_config("embedder", None, 10, {"embedding": 4}).embeddings
          ParameterSlot(label='embedder.embeddings')
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer):
            raise TypeError(
                f"EmbeddingTable.from_config: vocab_size must be an int, got {vocab_size!r}."
            )
        if vocab_size <= 0:
            raise ValueError(
                f"EmbeddingTable.from_config: vocab_size must be positive, got {vocab_size}."
            )
        if not embedding_axes:
            raise ValueError(
                "EmbeddingTable.from_config: embedding_axes is empty; give at least one axis,"
                " e.g. {'embedding': 512}."
            )
        if vocabulary_axis in embedding_axes:
            raise ValueError(
                f"EmbeddingTable.from_config: the vocabulary axis {vocabulary_axis!r} also appears"
                f" in embedding_axes {embedding_axes}; the embedding axes must have other names."
            )
        parameter = make_parameter(
            f"{name}.embeddings",
            init_base_rng,
            initializer,
            input_axes={},
            output_axes=dict(embedding_axes),
            parallel_axes={vocabulary_axis: vocab_size},
            convolution_spatial_axes={},
            dtype=dtype,
        )
        return cls(embeddings=parameter, vocabulary_axis=vocabulary_axis)

    def _checked_value(self, where: str) -> NamedArray:
        value = self.embeddings.value
        label = _label_of(self.embeddings)
        _require_named(value, f"the value of {label}", where)
        if self.vocabulary_axis not in value.named_shape:
            raise ValueError(
                f"{where}: {label} has no vocabulary axis {self.vocabulary_axis!r}; its named"
                f" shape is {value.named_shape}. Set `vocabulary_axis` to the right name."
            )
        return value


@functools.partial(jax.jit, static_argnames=("axis",))
def _gather_rows(table: jax.Array, ids: jax.Array, *, axis: int) -> jax.Array:
    size = table.shape[axis]
    # Negative ids would wrap around; send them out of range so they fill too.
    ids = jnp.where(ids < 0, size, ids)
    fill = jnp.nan if jnp.issubdtype(table.dtype, jnp.inexact) else 0
    return jnp.take(table, ids, axis=axis, mode="fill", fill_value=fill)


def _check_token_ids(ids: Any, vocab_size: int, where: str) -> None:
    if isinstance(ids, jax.core.Tracer):
        return
    values = np.asarray(ids)
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    if low < 0 or high >= vocab_size:
        bad = values[(values < 0) | (values >= vocab_size)]
        raise ValueError(
            f"{where}: token ids must be in [0, {vocab_size}) (the vocabulary size), but got"
            f" {np.unique(bad)[:10].tolist()}. Map padding or unknown tokens to a valid id."
        )


@pytree_dataclass
class EmbeddingLookup(Layer):
    """Looks up the embedding vector of each token id.

    The result has the token array's axes followed by the table's embedding
    axes. Token ids must lie in `[0, vocab_size)`: concrete (non-traced) ids
    outside are a `ValueError`; under `jax.jit` they cannot be checked, so
    their embeddings come out as NaN (0 for integer tables) rather than as
    some other token's vector.

    Attributes:
      table: The `EmbeddingTable` (shared with `EmbeddingDecode` to tie weights).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> key = jax.random.key(0)
      >>> table = sk.nn.EmbeddingTable.from_config("embedder", key, 10, {"embedding": 4})
      >>> tokens = sk.nx.wrap(jax.numpy.array([[1, 2, 3]]), "batch", "seq")
      >>> sk.nn.EmbeddingLookup(table)(tokens).named_shape
      {'batch': 1, 'seq': 3, 'embedding': 4}
    """

    table: EmbeddingTable

    def __call__(self, token_index: NamedArray, /, **side_inputs: Any) -> NamedArray:
        where = f"EmbeddingLookup ({_label_of(self.table.embeddings)})"
        _require_named(token_index, "the token ids", where)
        if not jnp.issubdtype(token_index.dtype, jnp.integer):
            raise TypeError(
                f"{where}: token ids must have an integer dtype, got {token_index.dtype}"
                f" (named_shape {token_index.named_shape})."
            )
        table = self.table._checked_value(where)
        clash = [name for name in token_index.named_shape if name in table.named_shape]
        if clash:
            raise ValueError(
                f"{where}: the token ids have axes {clash} that the table"
                f" {table.named_shape} also has; the token axes must have other names."
            )
        full = (None,) * (table.data_array.ndim - len(table.axis_names)) + table.axis_names
        axis = full.index(self.table.vocabulary_axis)
        ids = token_index.data_array
        _check_token_ids(ids, table.data_array.shape[axis], where)
        data = _gather_rows(table.data_array, ids, axis=axis)
        names = full[:axis] + token_index.axis_names + full[axis + 1 :]
        return NamedArray(data, names)


@pytree_dataclass
class EmbeddingDecode(Layer):
    """Maps vectors to logits over the vocabulary with an embedding table.

    The input's embedding axes (every table axis except the vocabulary) are
    contracted with the table; its other axes are kept, followed by the
    vocabulary axis. This is a Linear layer that reads its weights from the
    table, which makes weight tying with `EmbeddingLookup` a matter of sharing
    the table.

    Attributes:
      table: The `EmbeddingTable`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> key = jax.random.key(0)
      >>> table = sk.nn.EmbeddingTable.from_config("embedder", key, 10, {"embedding": 4})
      >>> sk.nn.EmbeddingDecode(table)(sk.nx.ones({"seq": 3, "embedding": 4})).named_shape
      {'seq': 3, 'vocabulary': 10}
    """

    table: EmbeddingTable

    def __call__(self, out_embeddings: NamedArray, /, **side_inputs: Any) -> NamedArray:
        where = f"EmbeddingDecode ({_label_of(self.table.embeddings)})"
        _require_named(out_embeddings, "the input", where)
        table = self.table._checked_value(where)
        vocab = self.table.vocabulary_axis
        embedding_names = [name for name in table.axis_names if name != vocab]
        x_shape = out_embeddings.named_shape
        table_shape = table.named_shape
        wrong = {n: x_shape.get(n) for n in embedding_names if x_shape.get(n) != table_shape[n]}
        if wrong or vocab in x_shape:
            expected = {n: table_shape[n] for n in embedding_names}
            raise ValueError(
                f"{where}: expected an input with embedding axes {expected} (and no"
                f" {vocab!r} axis), but found named_shape {x_shape}."
            )
        # The same contraction as a Linear layer with the table as its weight.
        return _dot(out_embeddings, table, embedding_names, ())


# Rotary position embeddings ---------------------------------------------------------


@functools.partial(
    jax.jit,
    static_argnames=(
        "alignment",
        "axis",
        "rope_size",
        "max_wavelength",
        "scale",
        "llama3_scaling",
    ),
)
def _rotate(
    x: jax.Array,
    positions: jax.Array,
    *,
    alignment: tuple[tuple[int, ...], tuple[int, ...]],
    axis: int,
    rope_size: int,
    max_wavelength: float,
    scale: float,
    llama3_scaling: tuple[float, float, float, float] | None = None,
) -> jax.Array:
    inv_freq = _inverse_frequencies(rope_size, max_wavelength, scale, llama3_scaling)
    compute_dtype = jnp.promote_types(x.dtype, jnp.float32)
    moved = jnp.moveaxis(x, axis, -1).astype(compute_dtype)
    positions = _align(positions, *alignment)
    angles = jnp.moveaxis(positions, axis, -1).astype(jnp.float32) * inv_freq
    cos = jnp.cos(angles).astype(compute_dtype)
    sin = jnp.sin(angles).astype(compute_dtype)
    half = rope_size // 2
    first, second = moved[..., :half], moved[..., half:rope_size]
    parts = [first * cos - second * sin, second * cos + first * sin]
    if rope_size < moved.shape[-1]:
        parts.append(moved[..., rope_size:])
    rotated = jnp.concatenate(parts, axis=-1).astype(x.dtype)
    return jnp.moveaxis(rotated, -1, axis)


def _inverse_frequencies(
    rope_size: int,
    max_wavelength: float,
    scale: float,
    llama3_scaling: tuple[float, float, float, float] | None,
) -> np.ndarray:
    """Rotation frequencies as HF computes them, rounded once to float32."""
    exponents = np.arange(0, rope_size, 2, dtype=np.float64) / rope_size
    inv_freq = 1.0 / (max_wavelength**exponents) / scale
    if llama3_scaling is not None:
        # Llama 3.1 "llama3" scaling: long wavelengths are slowed down by
        # `factor`, short ones kept, and the band between interpolated smoothly.
        factor, low_freq_factor, high_freq_factor, original_context = llama3_scaling
        wavelength = 2 * np.pi / inv_freq
        low_freq_wavelength = original_context / low_freq_factor
        high_freq_wavelength = original_context / high_freq_factor
        scaled = np.where(wavelength > low_freq_wavelength, inv_freq / factor, inv_freq)
        smooth = (original_context / wavelength - low_freq_factor) / (
            high_freq_factor - low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def _apply_rope(
    layer: Any, inputs: NamedArray, side_inputs: Mapping[str, Any], rope_size: int | None
) -> NamedArray:
    where = f"{type(layer).__name__}(embedding_axis={layer.embedding_axis!r})"
    _require_named(inputs, "the input", where)
    positions = _require_named(
        _side_input(side_inputs, layer.positions_input_name, where),
        f"the positions side input {layer.positions_input_name!r}",
        where,
    )
    shape = inputs.named_shape
    size = shape.get(layer.embedding_axis)
    if size is None:
        raise ValueError(
            f"{where}: the input has no axis {layer.embedding_axis!r}; its named shape is"
            f" {shape}. Set `embedding_axis` to the axis holding each query/key vector."
        )
    rope_size = size if rope_size is None else rope_size
    if rope_size % 2 or not 0 < rope_size <= size:
        raise ValueError(
            f"{where}: the rotated size must be even and between 2 and the size of"
            f" {layer.embedding_axis!r} ({size}); got {rope_size}."
        )
    extra = [n for n in positions.named_shape if n not in shape or n == layer.embedding_axis]
    wrong = {n: s for n, s in positions.named_shape.items() if n in shape and shape[n] != s}
    if extra or wrong:
        raise ValueError(
            f"{where}: the positions {positions.named_shape} must use a subset of the input's"
            f" axes {shape}, without {layer.embedding_axis!r} and with the same sizes."
        )
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise TypeError(f"{where}: positions must be integers, got dtype {positions.dtype}.")
    names = inputs.axis_names
    data = _rotate(
        inputs.data_array,
        positions.data_array,
        alignment=_alignment(positions, names),
        axis=names.index(layer.embedding_axis),
        rope_size=rope_size,
        max_wavelength=float(layer.max_wavelength),
        scale=float(layer.scale_factor),
        llama3_scaling=getattr(layer, "llama3_scaling", None),
    )
    return NamedArray(data, names)


def _check_rope_config(layer: Any) -> None:
    if not layer.max_wavelength > 0 or not layer.scale_factor > 0:
        raise ValueError(
            f"{type(layer).__name__}: max_wavelength and scale_factor must be positive, got"
            f" {layer.max_wavelength!r} and {layer.scale_factor!r}."
        )


@pytree_dataclass
class ApplyRoPE(Layer):
    """Rotates query or key vectors by angles proportional to token positions (RoPE).

    Uses the half-split layout of Llama and Hugging Face (`rotate_half`): the
    vector's first half is paired with its second half, and pair `i` of a token
    at position `p` is rotated by `p / (scale_factor * max_wavelength ** (2i / d))`.
    Angles are computed in float32 and the result has the input's dtype.

    Attributes:
      embedding_axis: The axis holding each vector (e.g. `"projection"`).
      max_wavelength: The RoPE base (`rope_theta`), e.g. 10_000.
      positions_input_name: Side input with each token's integer position, a
        NamedArray whose axes are a subset of the input's (e.g. `seq`, or
        `batch` and `seq`).
      scale_factor: Linear position scaling: positions are divided by it.
      llama3_scaling: Llama 3.1-style frequency scaling, as a tuple
        `(factor, low_freq_factor, high_freq_factor,
        original_max_position_embeddings)` (HF `rope_type="llama3"`), or None.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> rope = sk.nn.ApplyRoPE(embedding_axis="projection", max_wavelength=10_000)
      >>> x = sk.nx.ones({"seq": 3, "projection": 4})
      >>> out = rope(x, token_positions=sk.nx.arange("seq", 3))
      >>> out.named_shape, bool(jnp.allclose(out.unwrap("seq", "projection")[0], 1.0))
      ({'seq': 3, 'projection': 4}, True)
    """

    embedding_axis: str = _static()
    max_wavelength: float = _static()
    positions_input_name: str = _static(default="token_positions")
    scale_factor: float = _static(default=1.0)
    llama3_scaling: tuple[float, float, float, float] | None = _static(default=None)

    def __post_init__(self) -> None:
        _check_rope_config(self)
        scaling = self.llama3_scaling
        if scaling is not None and (
            not isinstance(scaling, tuple)
            or len(scaling) != 4
            or not all(v > 0 for v in scaling)
            or not scaling[2] > scaling[1]
        ):
            raise ValueError(
                "ApplyRoPE: llama3_scaling must be a tuple (factor, low_freq_factor,"
                " high_freq_factor, original_max_position_embeddings) of positive numbers with"
                f" high_freq_factor > low_freq_factor; got {scaling!r}."
            )

    def __call__(self, inputs: NamedArray, /, **side_inputs: Any) -> NamedArray:
        return _apply_rope(self, inputs, side_inputs, None)


@pytree_dataclass
class ApplyRoPEToSubset(Layer):
    """Applies RoPE to the first `rope_subset_size` entries of each vector (GPT-NeoX).

    The leading `rope_subset_size` entries are rotated exactly as `ApplyRoPE`
    would rotate a vector of that size (half-split within the subset); the
    remaining entries pass through unchanged.

    Attributes:
      embedding_axis: The axis holding each vector (e.g. `"projection"`).
      max_wavelength: The RoPE base, e.g. 10_000.
      rope_subset_size: How many leading entries to rotate (even).
      positions_input_name: Side input with each token's integer position.
      scale_factor: Linear position scaling: positions are divided by it.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> rope = sk.nn.ApplyRoPEToSubset("projection", 10_000, rope_subset_size=2)
      >>> x = sk.nx.ones({"seq": 3, "projection": 4})
      >>> out = rope(x, token_positions=sk.nx.arange("seq", 3))
      >>> out.unwrap("seq", "projection")[2, 2:].tolist()
      [1.0, 1.0]
    """

    embedding_axis: str = _static()
    max_wavelength: float = _static()
    rope_subset_size: int = _static()
    positions_input_name: str = _static(default="token_positions")
    scale_factor: float = _static(default=1.0)

    def __post_init__(self) -> None:
        _check_rope_config(self)
        size = self.rope_subset_size
        if (
            isinstance(size, bool)
            or not isinstance(size, int | np.integer)
            or size <= 0
            or size % 2
        ):
            raise ValueError(
                f"ApplyRoPEToSubset: rope_subset_size must be a positive even int, got {size!r}."
            )

    def __call__(self, inputs: NamedArray, /, **side_inputs: Any) -> NamedArray:
        return _apply_rope(self, inputs, side_inputs, self.rope_subset_size)
