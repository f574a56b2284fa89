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
from saikei.nn._layer_stack_types import (
    LAYERSTACK_AXES_METADATA_KEY,
    LAYERSTACK_INDEX_INPUT_NAME,
    LayerStackVarBehavior,
)

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


@functools.partial(
    jax.jit, static_argnames=("key_perm", "value_perm", "key_axis", "value_axis", "stack_dims")
)
def _write_kv(
    key_cache: jax.Array,
    value_cache: jax.Array,
    key: jax.Array,
    value: jax.Array,
    end_index: jax.Array,
    stack_index: tuple[jax.Array, ...],
    *,
    key_perm: tuple[int, ...],
    value_perm: tuple[int, ...],
    key_axis: int,
    value_axis: int,
    stack_dims: tuple[int, ...],
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Writes `key` and `value` into the caches at `end_index` along the sequence axis.

    `stack_dims` are the positions of the caches' LayerStack axes, which the
    new entries lack; they are written at `stack_index`, in place.
    """
    end_index = jnp.asarray(end_index, jnp.int32)

    def write(cache: jax.Array, new: jax.Array, perm: tuple[int, ...], axis: int) -> jax.Array:
        starts = [jnp.zeros((), jnp.int32)] * cache.ndim
        starts[axis] = end_index
        for dim, index in zip(stack_dims, stack_index):
            starts[dim] = jnp.asarray(index, jnp.int32)
        new = jnp.expand_dims(jnp.transpose(new, perm).astype(cache.dtype), stack_dims)
        # The write runs without the cache's other size-1 axes (a batch of
        # one, say): in a decode loop that carries the cache without them
        # (`generate` does), XLA's CPU compiler then copies the cache once
        # per step instead of four times (see sampling._carry_form).
        unit = [
            d for d, n in enumerate(cache.shape) if n == 1 and d != axis and d not in stack_dims
        ]
        kept = [d for d in range(cache.ndim) if d not in unit]
        written = jax.lax.dynamic_update_slice(
            jnp.squeeze(cache, unit), jnp.squeeze(new, unit), [starts[d] for d in kept]
        )
        return written.reshape(cache.shape)

    in_range = (end_index >= 0) & (
        end_index + key.shape[key_perm[key_axis - sum(d < key_axis for d in stack_dims)]]
        <= key_cache.shape[key_axis]
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
        NamedArrays with the keys' axes and `sequence_axis` of size `L`
        (and the `layerstack_axes`, if any).
      layerstack_axes: For a layer inside a LayerStack: the stack axes along
        which `kv_cache` holds the caches of all the stack's layers. The
        variable is SHARED in the stack, and each layer writes and reads its
        own slice, found from the stack's `layerstack_index` side input, in
        place. Empty for a layer that holds its own cache.

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
    layerstack_axes: tuple[Hashable, ...] = _static(default=())

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
            `LayerStack`: the cache holds every layer's along them, and each
            layer writes and reads its own slice in place (the variable's
            metadata says `{"layerstack_axes": {axis:
            LayerStackVarBehavior.SHARED}}`, and the layer reads its index
            from the stack's `layerstack_index` side input).

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
            # One cache for all layers, carried through the stack's loop: a
            # PER_LAYER cache would be sliced out and written back whole at
            # every layer, which costs more than the attention reading it.
            metadata[LAYERSTACK_AXES_METADATA_KEY] = {
                axis: LayerStackVarBehavior.SHARED for axis in stack_axes
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
            layerstack_axes=tuple(stack_axes),
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

    def _stack_index(self, side_inputs: dict[str, Any], where: str) -> tuple[Any, ...]:
        """The running layer's index along each of `layerstack_axes`."""
        if not self.layerstack_axes:
            return ()
        indices = side_inputs.get(LAYERSTACK_INDEX_INPUT_NAME)
        missing = [
            axis
            for axis in self.layerstack_axes
            if not isinstance(indices, dict) or axis not in indices
        ]
        if missing:
            raise ValueError(
                f"{where}: this layer holds the caches of all layers of a LayerStack along"
                f" {list(self.layerstack_axes)} and must run inside that LayerStack, which"
                f" tells it its layer with the side input {LAYERSTACK_INDEX_INPUT_NAME!r};"
                f" found no index for {missing}. Run it through the LayerStack (or, to run"
                f" one layer alone, pass {LAYERSTACK_INDEX_INPUT_NAME}={{axis: index}})."
            )
        index = tuple(indices[axis] for axis in self.layerstack_axes)
        sizes = self.kv_cache.value[0].named_shape
        for axis, i in zip(self.layerstack_axes, index):
            if not isinstance(i, jax.core.Tracer) and not 0 <= int(i) < sizes[axis]:
                raise ValueError(
                    f"{where}: {LAYERSTACK_INDEX_INPUT_NAME}[{axis!r}] is {int(i)}, outside the"
                    f" {sizes[axis]} layers the cache holds along {axis!r}."
                )
        return index

    def _layer_shape(self, cache: NamedArray) -> NamedArray:
        """The shape of one layer's slice of `cache` (a NamedArray of a ShapeDtypeStruct)."""
        kept = [
            (name, size)
            for name, size in zip(cache.axis_names, jnp.shape(cache.data_array))
            if name not in self.layerstack_axes
        ]
        data = jax.ShapeDtypeStruct(tuple(s for _, s in kept), jnp.result_type(cache.data_array))
        return NamedArray(data, tuple(n for n, _ in kept))

    def _layer_slice(self, cache: NamedArray, index: tuple[Any, ...]) -> NamedArray:
        """The running layer's slice of a cache stacked along `layerstack_axes`."""
        data, names = cache.data_array, list(cache.axis_names)
        for axis, i in zip(self.layerstack_axes, index):
            dim = names.index(axis)
            data = jax.lax.dynamic_index_in_dim(data, i, dim, keepdims=False)
            del names[dim]
        return NamedArray(data, tuple(names))

    def __call__(self, x: Any, /, **side_inputs: Any) -> Any:
        where = f"KVCachingAttention(cache {self.kv_cache.label!r})"
        end_index = self._end_index(side_inputs, where)
        stack_index = self._stack_index(side_inputs, where)
        query = self.input_to_query(x, **side_inputs)
        key = self.input_to_key(x, **side_inputs)
        value = self.input_to_value(x, **side_inputs)
        key_cache, value_cache = self.kv_cache.value
        stack_dims = tuple(key_cache.axis_names.index(axis) for axis in self.layerstack_axes)
        if tuple(value_cache.axis_names.index(a) for a in self.layerstack_axes) != stack_dims:
            raise ValueError(
                f"{where}: the key and value caches must have the LayerStack axes"
                f" {list(self.layerstack_axes)} at the same positions; found"
                f" {key_cache.axis_names} and {value_cache.axis_names}."
            )
        key_layer = self._layer_shape(key_cache)
        value_layer = self._layer_shape(value_cache)
        key_perm, _ = self._layouts(key_layer, key, "key", where)
        value_perm, _ = self._layouts(value_layer, value, "value", where)
        cache_len = key_layer.named_shape[self.sequence_axis]
        new_len = key.named_shape[self.sequence_axis]
        if (
            value_layer.named_shape[self.sequence_axis],
            value.named_shape[self.sequence_axis],
        ) != (cache_len, new_len):
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
            stack_index,
            key_perm=key_perm,
            value_perm=value_perm,
            key_axis=key_cache.axis_names.index(self.sequence_axis),
            value_axis=value_cache.axis_names.index(self.sequence_axis),
            stack_dims=stack_dims,
        )
        for axis, i in zip(self.layerstack_axes, stack_index):
            # A traced index out of range would be clamped onto another layer's slice.
            in_range = in_range & (i >= 0) & (i < key_cache.named_shape[axis])
        traced = traced or any(isinstance(i, jax.core.Tracer) for i in stack_index)
        key_cache = NamedArray(new_keys, key_cache.axis_names)
        value_cache = NamedArray(new_values, value_cache.axis_names)
        self.kv_cache.value = (key_cache, value_cache)
        # The layer's own slice of the updated caches (all of them without a stack).
        key_cache = self._layer_slice(key_cache, stack_index)
        value_cache = self._layer_slice(value_cache, stack_index)
        attn = self.query_key_to_attn((query, key_cache), **side_inputs)
        output = self.attn_value_to_output((attn, value_cache), **side_inputs)
        return _poison_unless(in_range, output) if traced else output
