"""Attention masks: explicit, causal and causal sliding-window, built from token positions.

Every mask layer takes attention logits (e.g. axes `batch, seq, heads,
kv_seq`) and replaces the logits of masked-out query/key pairs by
`masked_out_value`. That value is clipped to the finite range of the logits'
dtype (so `-inf`, or `-2.38e38` with float16 logits, becomes the most
negative finite number): a query that sees no key at all, such as a padding
token, then gets uniform attention weights after the softmax instead of NaN.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.nn._embeddings import _align, _alignment, _require_named, _side_input
from saikei.nn._layer import Layer

NamedArray = named_axes.NamedArray


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


def _check_masked_out_value(layer: Any) -> None:
    value = layer.masked_out_value
    if isinstance(value, jax.core.Tracer | jax.ShapeDtypeStruct):
        return
    values = np.asarray(value)
    if values.shape != () or values.dtype.kind not in "iuf" or np.isnan(values):
        raise ValueError(
            f"{type(layer).__name__}: masked_out_value must be a scalar number such as -1e30 or"
            f" jnp.finfo(dtype).min, got {value!r}."
        )


def _fill_value(masked_out_value: Any, dtype: Any) -> jax.Array:
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(masked_out_value).astype(dtype)
    info = jnp.finfo(dtype)
    wide = jnp.asarray(masked_out_value, dtype=jnp.promote_types(dtype, jnp.float32))
    return jnp.clip(wide, info.min, info.max).astype(dtype)


@functools.partial(jax.jit, static_argnames=("alignment",))
def _mask_explicit(x: jax.Array, value: Any, mask: jax.Array, *, alignment: Any) -> jax.Array:
    return jnp.where(_align(mask, *alignment), x, _fill_value(value, x.dtype))


@functools.partial(jax.jit, static_argnames=("q_alignment", "kv_alignment", "window"))
def _mask_causal(
    x: jax.Array,
    value: Any,
    q_positions: jax.Array,
    kv_positions: jax.Array,
    *,
    q_alignment: Any,
    kv_alignment: Any,
    window: int | None,
) -> jax.Array:
    q = _align(q_positions, *q_alignment)
    kv = _align(kv_positions, *kv_alignment)
    visible = (kv >= 0) & (kv <= q)
    if window is not None:
        visible &= kv > q - window
    return jnp.where(visible, x, _fill_value(value, x.dtype))


def _check_subset(x: NamedArray, arr: NamedArray, what: str, where: str) -> None:
    shape = x.named_shape
    bad = {n: s for n, s in arr.named_shape.items() if shape.get(n) != s}
    if bad:
        raise ValueError(
            f"{where}: {what} has axes {arr.named_shape}, which must all appear with the same"
            f" sizes in the attention logits {shape}; mismatched: {bad}."
        )


def _positions(layer: Any, side_inputs: Mapping[str, Any], name: str, where: str) -> NamedArray:
    positions = _require_named(
        _side_input(side_inputs, name, where), f"the positions side input {name!r}", where
    )
    if layer.seq_axis not in positions.named_shape:
        raise ValueError(
            f"{where}: the positions side input {name!r} has no {layer.seq_axis!r} axis; its"
            f" named shape is {positions.named_shape}."
        )
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise TypeError(f"{where}: positions must be integers, got dtype {positions.dtype}.")
    return positions


def _apply_causal(
    layer: Any, x: NamedArray, side_inputs: Mapping[str, Any], window: int | None
) -> NamedArray:
    where = type(layer).__name__
    _require_named(x, "the attention logits", where)
    q_positions = _positions(layer, side_inputs, layer.query_positions_input_name, where)
    kv_positions = _positions(layer, side_inputs, layer.kv_positions_input_name, where)
    if layer.kv_seq_axis in kv_positions.named_shape:
        raise ValueError(
            f"{where}: the kv positions {kv_positions.named_shape} already have a"
            f" {layer.kv_seq_axis!r} axis; give them a {layer.seq_axis!r} axis, which is renamed"
            f" to {layer.kv_seq_axis!r}."
        )
    kv_names = tuple(
        layer.kv_seq_axis if name == layer.seq_axis else name for name in kv_positions.axis_names
    )
    kv_positions = NamedArray(kv_positions.data_array, kv_names)
    _check_subset(x, q_positions, f"{layer.query_positions_input_name!r} (query positions)", where)
    _check_subset(x, kv_positions, f"{layer.kv_positions_input_name!r} (kv positions)", where)
    names = x.axis_names
    data = _mask_causal(
        x.data_array,
        layer.masked_out_value,
        q_positions.data_array,
        kv_positions.data_array,
        q_alignment=_alignment(q_positions, names),
        kv_alignment=_alignment(kv_positions, names),
        window=window,
    )
    return NamedArray(data, names)


@pytree_dataclass
class ApplyExplicitAttentionMask(Layer):
    """Masks attention logits with a boolean mask given as a side input.

    Where the mask is False the logit becomes `masked_out_value` (clipped to
    the logits' dtype). The mask's axes must be a subset of the logits' axes;
    it is broadcast over the others.

    Attributes:
      mask_input_name: The side input holding the mask, a boolean NamedArray
        (e.g. with axes `seq` and `kv_seq`).
      masked_out_value: The logit of masked-out pairs, e.g. -2.38e38.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> layer = sk.nn.ApplyExplicitAttentionMask("mask", masked_out_value=-1e9)
      >>> mask = sk.nx.wrap(jnp.array([[True, False], [True, True]]), "seq", "kv_seq")
      >>> layer(sk.nx.zeros({"seq": 2, "kv_seq": 2}), mask=mask).unwrap("seq", "kv_seq").tolist()
      [[0.0, -1000000000.0], [0.0, 0.0]]
    """

    mask_input_name: str = _static()
    masked_out_value: Any

    def __post_init__(self) -> None:
        _check_masked_out_value(self)

    def __call__(self, x: NamedArray, /, **side_inputs: Any) -> NamedArray:
        where = f"ApplyExplicitAttentionMask({self.mask_input_name!r})"
        _require_named(x, "the attention logits", where)
        mask = _require_named(
            _side_input(side_inputs, self.mask_input_name, where), "the mask", where
        )
        if mask.dtype != jnp.bool_:
            raise TypeError(
                f"{where}: the mask must be boolean (True = attend), got dtype {mask.dtype}."
            )
        _check_subset(x, mask, "the mask", where)
        names = x.axis_names
        data = _mask_explicit(
            x.data_array,
            self.masked_out_value,
            mask.data_array,
            alignment=_alignment(mask, names),
        )
        return NamedArray(data, names)


@pytree_dataclass
class ApplyCausalAttentionMask(Layer):
    """Masks attention logits so that each token sees only itself and earlier tokens.

    A query at position `i` attends to a key at position `j` when
    `0 <= j <= i`. Positions come from side inputs (integer NamedArrays with
    the `seq_axis` axis, e.g. `token_positions`); the kv positions' `seq_axis`
    is renamed to `kv_seq_axis` to line up with the logits. Position -1 marks
    padding: a padding key is never attended to, and a padding query attends
    to nothing (its row is entirely `masked_out_value`, so the softmax gives it
    finite, uniform weights that the model's outputs should ignore).

    With a KV cache, the kv positions are those of every cache slot (-1 for
    slots not yet written): point `kv_positions_input_name` at a side input
    holding them.

    Attributes:
      masked_out_value: The logit of masked-out pairs, e.g. -2.38e38.
      query_positions_input_name: Side input with the queries' positions.
      kv_positions_input_name: Side input with the keys' positions.
      seq_axis: The sequence axis of both position side inputs.
      kv_seq_axis: The key axis of the logits.

    Example:
      >>> from saikei import sk
      >>> mask = sk.nn.ApplyCausalAttentionMask(masked_out_value=-1e9)
      >>> logits = sk.nx.zeros({"seq": 3, "kv_seq": 3})
      >>> out = mask(logits, token_positions=sk.nx.arange("seq", 3))
      >>> (out.unwrap("seq", "kv_seq") == 0).astype(int).tolist()
      [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """

    masked_out_value: Any
    query_positions_input_name: str = _static(default="token_positions")
    kv_positions_input_name: str = _static(default="token_positions")
    seq_axis: str = _static(default="seq")
    kv_seq_axis: str = _static(default="kv_seq")

    def __post_init__(self) -> None:
        _check_masked_out_value(self)

    def __call__(self, x: NamedArray, /, **side_inputs: Any) -> NamedArray:
        return _apply_causal(self, x, side_inputs, None)


@pytree_dataclass
class ApplyCausalSlidingWindowAttentionMask(Layer):
    """A causal mask that also hides keys `sliding_window_size` or more positions back.

    A query at position `i` attends to a key at position `j` when
    `i - sliding_window_size < j <= i` and `j >= 0`: it sees itself and the
    `sliding_window_size - 1` tokens before it, as Hugging Face's Mistral and
    Gemma 2 sliding-window attention do. Padding (position -1) is handled as in
    `ApplyCausalAttentionMask`.

    Attributes:
      masked_out_value: The logit of masked-out pairs, e.g. -2.38e38.
      sliding_window_size: The window size (a positive int).
      query_positions_input_name: Side input with the queries' positions.
      kv_positions_input_name: Side input with the keys' positions.
      seq_axis: The sequence axis of both position side inputs.
      kv_seq_axis: The key axis of the logits.

    Example:
      >>> from saikei import sk
      >>> mask = sk.nn.ApplyCausalSlidingWindowAttentionMask(-1e9, sliding_window_size=2)
      >>> out = mask(sk.nx.zeros({"seq": 3, "kv_seq": 3}), token_positions=sk.nx.arange("seq", 3))
      >>> (out.unwrap("seq", "kv_seq") == 0).astype(int).tolist()
      [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    """

    masked_out_value: Any
    sliding_window_size: int = _static()
    query_positions_input_name: str = _static(default="token_positions")
    kv_positions_input_name: str = _static(default="token_positions")
    seq_axis: str = _static(default="seq")
    kv_seq_axis: str = _static(default="kv_seq")

    def __post_init__(self) -> None:
        _check_masked_out_value(self)
        size = self.sliding_window_size
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size <= 0:
            raise ValueError(
                "ApplyCausalSlidingWindowAttentionMask: sliding_window_size must be a positive"
                f" int, got {size!r}."
            )

    def __call__(self, x: NamedArray, /, **side_inputs: Any) -> NamedArray:
        return _apply_causal(self, x, side_inputs, int(self.sliding_window_size))
