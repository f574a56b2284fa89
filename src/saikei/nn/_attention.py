"""Attention as a dataflow combinator, and its key/value-caching variant.

The mask layers live in `_attention_masks.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes
from saikei.core._struct import pytree_dataclass
from saikei.core._variables import StateVariable
from saikei.nn._embeddings import _require_named, _side_input
from saikei.nn._layer import Layer
from saikei.nn._layer_stack_types import LAYERSTACK_AXES_METADATA_KEY, LayerStackVarBehavior

NamedArray = named_axes.NamedArray


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


@pytree_dataclass
class Attention(Layer):
    """Attention as five sublayers wired together.

    Computes `q = input_to_query(x)`, `k = input_to_key(x)`,
    `v = input_to_value(x)`, `attn = query_key_to_attn((q, k))` and returns
    `attn_value_to_output((attn, v))`. Every sublayer receives all side
    inputs. What the sublayers do (projections, RoPE, scaling, masking,
    softmax) is up to the model; this layer only fixes the dataflow, which is
    what makes attention easy to find and patch with selectors.

    Attributes:
      input_to_query: Maps the input to queries.
      input_to_key: Maps the input to keys.
      input_to_value: Maps the input to values.
      query_key_to_attn: Maps `(queries, keys)` to attention weights.
      attn_value_to_output: Maps `(weights, values)` to the output.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> to_kv = sk.nn.Elementwise(lambda x: x)
      >>> @sk.pytree_dataclass
      ... class Scores(sk.nn.Layer):
      ...   def __call__(self, qk, /, **side_inputs):
      ...     q, k = qk
      ...     return q * k.untag("seq").tag("kv_seq")
      >>> @sk.pytree_dataclass
      ... class Mix(sk.nn.Layer):
      ...   def __call__(self, attn_v, /, **side_inputs):
      ...     attn, v = attn_v
      ...     return (attn * v.untag("seq").tag("kv_seq")).untag("kv_seq").sum()
      >>> scores = sk.nn.Sequential([Scores(), sk.nn.Softmax("kv_seq")])
      >>> layer = sk.nn.Attention(to_kv, to_kv, to_kv, scores, Mix())
      >>> layer(sk.nx.ones({"seq": 3})).named_shape
      {'seq': 3}
    """

    input_to_query: Any
    input_to_key: Any
    input_to_value: Any
    query_key_to_attn: Any
    attn_value_to_output: Any

    def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
        query = self.input_to_query(x, **side_inputs)
        key = self.input_to_key(x, **side_inputs)
        value = self.input_to_value(x, **side_inputs)
        attn = self.query_key_to_attn((query, key), **side_inputs)
        return self.attn_value_to_output((attn, value), **side_inputs)


@functools.partial(jax.jit, static_argnames=("key_perm", "value_perm", "key_axis", "value_axis"))
def _write_kv(
    key_cache: jax.Array,
    value_cache: jax.Array,
    key: jax.Array,
    value: jax.Array,
    end_index: jax.Array,
    *,
    key_perm: tuple[int, ...],
    value_perm: tuple[int, ...],
    key_axis: int,
    value_axis: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    end_index = jnp.asarray(end_index, jnp.int32)

    def write(cache: jax.Array, new: jax.Array, perm: tuple[int, ...], axis: int) -> jax.Array:
        starts = [jnp.zeros((), jnp.int32)] * cache.ndim
        starts[axis] = end_index
        new = jnp.transpose(new, perm).astype(cache.dtype)
        return jax.lax.dynamic_update_slice(cache, new, starts)

    in_range = (end_index >= 0) & (
        end_index + key.shape[key_perm[key_axis]] <= key_cache.shape[key_axis]
    )
    return (
        write(key_cache, key, key_perm, key_axis),
        write(value_cache, value, value_perm, value_axis),
        in_range,
    )


def _poison_unless(ok: jax.Array, tree: Any) -> Any:
    def poison(leaf: Any) -> Any:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            return jnp.where(ok, leaf, jnp.nan)
        return leaf

    return jax.tree_util.tree_map(poison, tree)


@pytree_dataclass
class KVCachingAttention(Layer):
    """Attention that appends new keys and values to a cache and attends over all of it.

    Each call computes queries, keys and values for the tokens in `x`, writes
    the keys and values into the cache starting at index
    `side_inputs[kv_cache_end_index_key]` (a scalar int: the number of cache
    slots already filled) along `sequence_axis`, and then runs
    `query_key_to_attn((queries, key_cache))` and
    `attn_value_to_output((weights, value_cache))` over the whole cache.

    The cache itself does not know the positions of its entries; the mask
    layers learn them from side inputs. With a cache of length `L`, give the
    query tokens' positions as usual (`token_positions`, axis `seq`) and the
    positions of all `L` cache slots, with -1 for slots not written yet, as a
    second side input (e.g. `kv_token_positions`, also on axis `seq`) that the
    masks read through `kv_positions_input_name`. Slots at -1 are masked out,
    so the stale zeros in unwritten slots never contribute, and cached
    decoding gives the same results as running `Attention` on the whole
    sequence at once.

    The write must fit: `0 <= end_index` and `end_index + new tokens <= L`.
    A concrete index that does not fit is a `ValueError`; under `jax.jit` the
    index cannot be checked, so an overflowing call returns NaN outputs
    instead of silently overwriting other cache entries' results.

    Attributes:
      input_to_query: Maps the input to queries.
      input_to_key: Maps the input to keys (written to the cache).
      input_to_value: Maps the input to values (written to the cache).
      query_key_to_attn: Maps `(queries, key cache)` to attention weights.
      attn_value_to_output: Maps `(weights, value cache)` to the output.
      sequence_axis: The axis of keys and values along which the cache grows.
      kv_cache_end_index_key: The side input holding the write index.
      kv_cache: A StateVariable holding `(key_cache, value_cache)`,
        NamedArrays with the keys' axes and `sequence_axis` of size `L`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> @sk.pytree_dataclass
      ... class Last(sk.nn.Layer):
      ...   def __call__(self, pair, /, **side_inputs):
      ...     return pair[1]
      >>> ident = sk.nn.Elementwise(lambda x: x)
      >>> layer = sk.nn.KVCachingAttention.from_uncached(
      ...     sk.nn.Attention(ident, ident, ident, Last(), Last()),
      ...     sequence_axis="seq", cache_len=4, cached_axes={"features": 2},
      ...     cache_end_index_key="cache_end_index")
      >>> keys = layer(sk.nx.ones({"seq": 1, "features": 2}), cache_end_index=jnp.array(2))
      >>> keys.unwrap("seq", "features")[:, 0].tolist()
      [0.0, 0.0, 1.0, 0.0]
    """

    input_to_query: Any
    input_to_key: Any
    input_to_value: Any
    query_key_to_attn: Any
    attn_value_to_output: Any
    sequence_axis: str = _static()
    kv_cache_end_index_key: Hashable = _static()
    kv_cache: StateVariable[tuple[NamedArray, NamedArray]]

    @classmethod
    def from_uncached(
        cls,
        original: Attention,
        sequence_axis: str,
        cache_len: int,
        cached_axes: dict[str, int],
        cache_end_index_key: Hashable,
        cache_dtype: Any = jnp.float32,
        cache_label: Any = None,
        layerstack_axes: dict[str, int] | None = None,
    ) -> KVCachingAttention:
        """Builds a caching version of an `Attention` layer with an empty (zero) cache.

        Args:
          original: The `Attention` layer; its five sublayers are reused as
            they are (masks included: see the class docstring for the kv
            positions side input they need).
          sequence_axis: The keys' and values' sequence axis, e.g. `"seq"`.
          cache_len: The cache length `L` (the longest sequence it can hold).
          cached_axes: The keys' and values' other axes and sizes, e.g.
            `{"batch": 1, "heads": 8, "projection": 64}`.
          cache_end_index_key: Name of the side input with the write index.
          cache_dtype: The cache dtype (usually the activation dtype).
          cache_label: The cache StateVariable's label; None for an automatic
            label.
          layerstack_axes: Stack axes and sizes when the layer lives inside a
            `LayerStack`: each layer gets its own slice of the cache along
            them, recorded in the variable's metadata as
            `{"layerstack_axes": {axis: LayerStackVarBehavior.PER_LAYER}}`.

        Returns:
          A `KVCachingAttention`.

        Example:
          >>> from saikei import sk
          >>> ident = sk.nn.Identity()
          >>> layer = sk.nn.KVCachingAttention.from_uncached(
          ...     sk.nn.Attention(ident, ident, ident, ident, ident), "seq", 8,
          ...     {"heads": 2, "projection": 4}, "cache_end_index", cache_label="cache_0")
          >>> layer.kv_cache.label, layer.kv_cache.value[0].named_shape
          ('cache_0', {'heads': 2, 'seq': 8, 'projection': 4})
        """
        if not isinstance(original, Attention):
            raise TypeError(
                "KVCachingAttention.from_uncached: `original` must be an sk.nn.Attention, got"
                f" {type(original).__name__}."
            )
        if isinstance(cache_len, bool) or not isinstance(cache_len, int | np.integer):
            raise TypeError(
                f"KVCachingAttention.from_uncached: cache_len must be an int, got {cache_len!r}."
            )
        if cache_len <= 0:
            raise ValueError(
                f"KVCachingAttention.from_uncached: cache_len must be positive, got {cache_len}."
            )
        stack_axes = dict(layerstack_axes or {})
        overlap = [n for n in (sequence_axis, *stack_axes) if n in cached_axes]
        overlap += [n for n in stack_axes if n == sequence_axis]
        if overlap:
            raise ValueError(
                f"KVCachingAttention.from_uncached: axes {overlap} are given twice; cached_axes"
                f" {cached_axes} must not contain the sequence axis {sequence_axis!r} or the"
                f" layerstack axes {stack_axes}."
            )
        # The sequence axis goes before the last cached axis (the per-head
        # features in attention): `(..., heads, seq, features)` is the layout
        # both attention products read without moving the cache.
        shape = {**stack_axes, **dict(list(cached_axes.items())[:-1])}
        shape[sequence_axis] = int(cache_len)
        shape.update(list(cached_axes.items())[-1:])
        metadata = {}
        if stack_axes:
            metadata[LAYERSTACK_AXES_METADATA_KEY] = {
                axis: LayerStackVarBehavior.PER_LAYER for axis in stack_axes
            }
        cache = StateVariable(
            (named_axes.zeros(shape, cache_dtype), named_axes.zeros(shape, cache_dtype)),
            label=cache_label,
            metadata=metadata,
        )
        return cls(
            input_to_query=original.input_to_query,
            input_to_key=original.input_to_key,
            input_to_value=original.input_to_value,
            query_key_to_attn=original.query_key_to_attn,
            attn_value_to_output=original.attn_value_to_output,
            sequence_axis=sequence_axis,
            kv_cache_end_index_key=cache_end_index_key,
            kv_cache=cache,
        )

    def _end_index(self, side_inputs: dict[str, Any], where: str) -> Any:
        index = _side_input(side_inputs, self.kv_cache_end_index_key, where)
        if isinstance(index, NamedArray):
            if index.named_shape:
                raise ValueError(
                    f"{where}: the cache end index must be a scalar shared by the whole batch,"
                    f" got a NamedArray with axes {index.named_shape}."
                )
            index = index.data_array
        if (
            isinstance(index, bool)
            or jnp.shape(index) != ()
            or not jnp.issubdtype(jnp.result_type(index), jnp.integer)
        ):
            raise TypeError(
                f"{where}: the side input {self.kv_cache_end_index_key!r} must be a scalar int,"
                f" got {index!r}."
            )
        return index

    def _layouts(self, cache: NamedArray, new: NamedArray, what: str, where: str) -> tuple:
        _require_named(cache, f"the {what} cache", where)
        _require_named(new, f"the new {what}s", where)
        cache_shape, new_shape = cache.named_shape, new.named_shape
        expected = {n: s for n, s in cache_shape.items() if n != self.sequence_axis}
        found = {n: s for n, s in new_shape.items() if n != self.sequence_axis}
        if (
            self.sequence_axis not in new_shape
            or self.sequence_axis not in cache_shape
            or expected != found
        ):
            raise ValueError(
                f"{where}: the new {what}s have axes {new_shape}, but the {what} cache has"
                f" {cache_shape}; they must agree on every axis except {self.sequence_axis!r}"
                " (rebuild the cache with matching `cached_axes`)."
            )
        return (
            tuple(new.axis_names.index(n) for n in cache.axis_names),
            cache.axis_names.index(self.sequence_axis),
        )

    def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
        where = f"KVCachingAttention(cache {self.kv_cache.label!r})"
        end_index = self._end_index(side_inputs, where)
        query = self.input_to_query(x, **side_inputs)
        key = self.input_to_key(x, **side_inputs)
        value = self.input_to_value(x, **side_inputs)
        key_cache, value_cache = self.kv_cache.value
        key_perm, key_axis = self._layouts(key_cache, key, "key", where)
        value_perm, value_axis = self._layouts(value_cache, value, "value", where)
        cache_len = key_cache.named_shape[self.sequence_axis]
        new_len = key.named_shape[self.sequence_axis]
        if (value_cache.named_shape[self.sequence_axis], value.named_shape[self.sequence_axis]) != (
            cache_len,
            new_len,
        ):
            raise ValueError(
                f"{where}: keys and values disagree on {self.sequence_axis!r}: new keys"
                f" {key.named_shape}, new values {value.named_shape}, key cache"
                f" {key_cache.named_shape}, value cache {value_cache.named_shape}."
            )
        traced = isinstance(end_index, jax.core.Tracer)
        if not traced and not 0 <= int(end_index) <= cache_len - new_len:
            raise ValueError(
                f"{where}: cannot write {new_len} new entries at index {int(end_index)} of a"
                f" cache of length {cache_len}. Use a longer cache (`cache_len`) or start a new"
                " sequence."
            )
        new_keys, new_values, in_range = _write_kv(
            key_cache.data_array,
            value_cache.data_array,
            key.data_array,
            value.data_array,
            end_index,
            key_perm=key_perm,
            value_perm=value_perm,
            key_axis=key_axis,
            value_axis=value_axis,
        )
        key_cache = NamedArray(new_keys, key_cache.axis_names)
        value_cache = NamedArray(new_values, value_cache.axis_names)
        self.kv_cache.value = (key_cache, value_cache)
        attn = self.query_key_to_attn((query, key_cache), **side_inputs)
        output = self.attn_value_to_output((attn, value_cache), **side_inputs)
        return _poison_unless(in_range, output) if traced else output
