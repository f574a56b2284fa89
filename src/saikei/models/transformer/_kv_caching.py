"""A KV-caching `TransformerLM`: the model with its Attention layers swapped for cached ones.

`KVCachingTransformerLM.from_uncached(model, cache_len=..., batch_axes=...)`
turns a `TransformerLM` into a stateful model that appends the tokens it is
called on to per-layer key/value caches. It swaps every `sk.nn.Attention` for
an `sk.nn.KVCachingAttention` with a selector, so anything else the user
patched into the model (a steering layer, a probe) stays where it is and runs
at every step.

Besides the caches, the cached model holds two StateVariables: the cache end
index (how many slots are filled) and the position of the token in every cache
slot (-1 for slots not written yet, or written by padding). The mask layers
read the latter as the side input `kv_token_positions`, which is what lets
left-padded sequences in a batch decode exactly as if each were alone.
(`saikei.models.transformer.sampling` re-exports everything public here.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei import nn
from saikei.core import (
    StateVariable,
    bind_variables,
    select,
    unbind_variables,
)
from saikei.core import named_axes as nx
from saikei.core._struct import pytree_dataclass
from saikei.models.transformer.model_parts import TransformerLM, TransformerMetadata

KV_POSITIONS_INPUT_NAME = "kv_token_positions"
"""The side input holding the position of every cache slot (-1 for empty slots)."""

CACHE_END_INDEX_INPUT_NAME = "cache_end_index"
"""The side input holding the number of cache slots already filled."""

_MODEL_AXES = ("seq", "kv_seq", "embedding", "projection", "neurons", "vocabulary")


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


# Looking at a layer without running it ----------------------------------------------


def _eval_shape_with_variables(fn: Callable[..., Any], tree: Any, *args: Any) -> Any:
    """`jax.eval_shape(fn, tree, *args)` for a `tree` that may hold variables.

    The variables go in as frozen values and come alive again as copies, so a
    layer that writes state while it is traced leaks nothing into the caller's
    variables.
    """
    slots, frozen = unbind_variables(tree, freeze=True)

    def run(values: Any, *inner_args: Any) -> Any:
        copies = [value.unfreeze_as_copy() for value in values]
        return fn(bind_variables(slots, copies), *inner_args)

    return jax.eval_shape(run, frozen, *args)


def _cached_axes(
    attention: nn.Attention,
    metadata: TransformerMetadata,
    batch_axes: dict[str, int],
    stack_axes: dict[Any, int],
    where: str,
) -> tuple[str, dict[str, int], Any]:
    """Finds the keys' sequence axis, their other axes and dtype, by tracing the attention.

    Keys are computed (abstractly) for inputs of two lengths; the axis whose
    size follows the length is the sequence axis. This works for any family,
    whatever it calls its head axes or however it renames `seq` for keys.
    """

    def inputs(length: int) -> tuple[nx.NamedArray, nx.NamedArray]:
        # Inside a LayerStack the attention's weights carry the stack axes; an
        # input with them too runs every layer at once.
        x = nx.zeros(
            {**stack_axes, **batch_axes, "seq": length, "embedding": metadata.embedding_dim},
            metadata.activation_dtype,
        )
        return x, nx.arange("seq", length, dtype=jnp.int32)

    def keys_and_values(layer: nn.Attention, short: Any, long: Any) -> Any:
        return (
            layer.input_to_key(short[0], token_positions=short[1]),
            layer.input_to_value(short[0], token_positions=short[1]),
            layer.input_to_key(long[0], token_positions=long[1]),
        )

    keys, values, longer_keys = _eval_shape_with_variables(
        keys_and_values, attention, inputs(2), inputs(3)
    )
    for what, shape in (("keys", keys), ("values", values)):
        if not nx.is_namedarray(shape) or shape.positional_shape:
            raise ValueError(
                f"KVCachingTransformerLM.from_uncached: the {what} of the attention at {where}"
                f" must be a NamedArray with only named axes to be cached, got {shape!r}."
            )
    grown = [
        name for name, size in longer_keys.named_shape.items() if keys.named_shape.get(name) != size
    ]
    if len(grown) != 1:
        raise ValueError(
            f"KVCachingTransformerLM.from_uncached: cannot tell the sequence axis of the keys of"
            f" the attention at {where}: for inputs of length 2 and 3 they have axes"
            f" {keys.named_shape} and {longer_keys.named_shape}. The keys need exactly one axis"
            " that follows the input's 'seq' axis (e.g. 'kv_seq')."
        )
    sequence_axis = grown[0]
    cached = {
        name: size
        for name, size in keys.named_shape.items()
        if name != sequence_axis and name not in stack_axes
    }
    value_axes = {n: s for n, s in values.named_shape.items() if n not in stack_axes}
    if value_axes != {**cached, sequence_axis: 2}:
        raise ValueError(
            f"KVCachingTransformerLM.from_uncached: the attention at {where} has keys with axes"
            f" {keys.named_shape} and values with axes {values.named_shape}; a KV cache needs"
            " keys and values with the same axes and sizes."
        )
    return sequence_axis, cached, keys.dtype


def _has_kv_positions_field(node: Any) -> bool:
    return dataclasses.is_dataclass(node) and any(
        field.name == "kv_positions_input_name" for field in dataclasses.fields(node)
    )


def _point_masks_at_cache_positions(attention: nn.Attention, where: str) -> nn.Attention:
    masks = select(attention).at_subtrees_where(_has_kv_positions_field)
    if masks.count() == 0:
        raise ValueError(
            f"KVCachingTransformerLM.from_uncached: the attention at {where} has no mask layer"
            " that reads key positions (a layer with a `kv_positions_input_name` field, such as"
            " sk.nn.ApplyCausalAttentionMask). Cached decoding needs one: without it, queries"
            " would attend to cache slots that were never written."
        )

    def repoint(mask: Any) -> Any:
        name = mask.kv_positions_input_name
        if name == KV_POSITIONS_INPUT_NAME:
            return mask
        if name != "token_positions":
            raise ValueError(
                f"KVCachingTransformerLM.from_uncached: the {type(mask).__name__} in the"
                f" attention at {where} reads key positions from {name!r}; only masks that"
                f" read 'token_positions' can be pointed at the cache's {KV_POSITIONS_INPUT_NAME!r}."
                " Set its kv_positions_input_name to 'token_positions' before converting."
            )
        return dataclasses.replace(mask, kv_positions_input_name=KV_POSITIONS_INPUT_NAME)

    return masks.apply(repoint)


def _check_batch_axes(batch_axes: Any, reserved: set[Any], where: str) -> dict[str, int]:
    if not isinstance(batch_axes, dict):
        raise TypeError(
            f"{where}: batch_axes must be a dict of axis names to sizes, e.g. {{'batch': 2}},"
            f" got {batch_axes!r}."
        )
    for name, size in batch_axes.items():
        if not _is_int(size) or size < 1:
            raise ValueError(
                f"{where}: batch axis {name!r} must have a positive int size, got {size!r}."
            )
        if name in reserved:
            raise ValueError(
                f"{where}: {name!r} cannot be a batch axis: the model uses that name for its own"
                f" axes ({sorted(map(str, reserved))}). Rename the batch axis, e.g. to 'batch'."
            )
    return {name: int(size) for name, size in batch_axes.items()}


def _reserved_axes(metadata: TransformerMetadata) -> set[Any]:
    return {*_MODEL_AXES, *metadata.common_head_axes, *metadata.query_only_head_axes}


# The cached model -----------------------------------------------------------------------


@pytree_dataclass
class KVCachingTransformerLM(nn.Layer):
    """A `TransformerLM` in decoding mode: each call appends tokens to key/value caches.

    Build one with `from_uncached`. Calling it on tokens (axis `seq`, plus
    exactly its `batch_axes`) writes their keys and values into the caches
    after the tokens already there, returns their logits, and advances the
    cache. Positions continue from the cache: each sequence's next position is
    one more than the largest position in its cache (so a left-padded prompt
    whose pads had position -1 continues from its own length).

    Attributes:
      body: The model body, with every `Attention` replaced by a
        `KVCachingAttention` and its masks reading `kv_token_positions`.
      cache_end_index: StateVariable with the number of cache slots filled
        (an int32 scalar shared by the batch).
      kv_token_positions: StateVariable with the position of the token in
        each cache slot (int32, axes `batch_axes` and `seq` of size
        `cache_len`), -1 for empty or padding slots.
      metadata: The model's metadata.
      cache_len: The number of tokens the caches hold.
      batch_axes: The batch axes (names and sizes) the caches were built for.
      pad_id: If not None, tokens equal to it get position -1 when positions
        are not given (penzai's convention); None treats every token as real.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer import sampling
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> cached = sampling.KVCachingTransformerLM.from_uncached(lm, cache_len=8, batch_axes={})
      >>> cached(sk.nx.wrap(jax.numpy.array([1, 2, 3]), "seq")).named_shape
      {'seq': 3, 'vocabulary': 11}
      >>> int(cached.cache_end_index.value)
      3
    """

    body: Any
    cache_end_index: StateVariable
    kv_token_positions: StateVariable
    metadata: TransformerMetadata = _static()
    cache_len: int = _static()
    batch_axes: dict[str, int] = _static()
    pad_id: int | None = _static(default=None)

    @classmethod
    def from_uncached(
        cls,
        model: TransformerLM,
        cache_len: int,
        batch_axes: dict[str, int],
        pad_id: int | None = None,
        variable_name_prefix: str = "sampler",
    ) -> KVCachingTransformerLM:
        """Converts a `TransformerLM` into decoding mode with empty caches.

        Every `sk.nn.Attention` in the body (found with a selector, inside
        LayerStacks too, where each layer gets its own slice of the cache)
        becomes a `KVCachingAttention`; its mask layers are pointed at the
        `kv_token_positions` side input. The cached axes are found by tracing
        each attention's `input_to_key` with `jax.eval_shape`, so any head
        layout works. Everything else in the body is kept as it is.

        Args:
          model: The uncached model (parameters bound).
          cache_len: The number of tokens the caches hold (prompt and output).
          batch_axes: Names and sizes of the batch axes of the tokens the
            model will be called on, e.g. `{"batch": 4}`; `{}` for a single
            unbatched sequence.
          pad_id: See the class attribute; None (the default) treats every
            token as real.
          variable_name_prefix: Prefix of the new StateVariables' labels.

        Returns:
          The cached model.

        Raises:
          ValueError: for a bad `cache_len`, a batch axis that clashes with a
            model axis, or an attention that cannot be cached (no position
            mask, keys and values of different shapes).

        Example:
          >>> import jax
          >>> from saikei.models.transformer import sampling
          >>> from saikei.models.transformer.variants import llamalike
          >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
          ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
          ...     vocab_size=11)
          >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
          >>> cached = sampling.KVCachingTransformerLM.from_uncached(
          ...     lm, cache_len=16, batch_axes={"batch": 2})
          >>> cached.kv_token_positions.value.named_shape
          {'batch': 2, 'seq': 16}
        """
        where = "KVCachingTransformerLM.from_uncached"
        if isinstance(model, KVCachingTransformerLM):
            raise TypeError(f"{where}: the model is already a KVCachingTransformerLM.")
        if not isinstance(model, TransformerLM):
            raise TypeError(f"{where}: expected a TransformerLM, got {type(model).__name__}.")
        if not _is_int(cache_len) or cache_len < 1:
            raise ValueError(f"{where}: cache_len must be a positive int, got {cache_len!r}.")
        batch_axes = _check_batch_axes(batch_axes, _reserved_axes(model.metadata), where)
        if pad_id is not None and not _is_int(pad_id):
            raise TypeError(f"{where}: pad_id must be an int or None, got {pad_id!r}.")

        attentions = select(model.body).at_instances_of(nn.Attention)
        if attentions.count() == 0:
            raise ValueError(
                f"{where}: the model body has no sk.nn.Attention layer to cache (is it already"
                " converted?)."
            )
        replacements = {}
        for index, (keypath, attention) in enumerate(attentions.selected_by_path.items()):
            path = f"body{jax.tree_util.keystr(keypath)}"
            stack_axes = nn.layerstack_axes_from_keypath(keypath)
            clash = sorted(str(n) for n in batch_axes if n in stack_axes)
            if clash:
                raise ValueError(
                    f"{where}: batch axes {clash} are also LayerStack axes of the model (at"
                    f" {path}); rename the batch axis."
                )
            attention = _point_masks_at_cache_positions(attention, path)
            sequence_axis, cached_axes, dtype = _cached_axes(
                attention, model.metadata, batch_axes, stack_axes, path
            )
            replacements[keypath] = nn.KVCachingAttention.from_uncached(
                attention,
                sequence_axis=sequence_axis,
                cache_len=int(cache_len),
                cached_axes=cached_axes,
                cache_end_index_key=CACHE_END_INDEX_INPUT_NAME,
                cache_dtype=dtype,
                cache_label=f"{variable_name_prefix}/cache_{index}",
                layerstack_axes=stack_axes,
            )
        return cls(
            body=attentions.set_by_path(replacements),
            cache_end_index=StateVariable(
                jnp.zeros((), jnp.int32), label=f"{variable_name_prefix}/cache_end_index"
            ),
            kv_token_positions=StateVariable(
                nx.full({**batch_axes, "seq": int(cache_len)}, -1, jnp.int32),
                label=f"{variable_name_prefix}/kv_token_positions",
            ),
            metadata=model.metadata,
            cache_len=int(cache_len),
            batch_axes=batch_axes,
            pad_id=None if pad_id is None else int(pad_id),
        )

    def _batch_names(self) -> tuple[str, ...]:
        return tuple(self.batch_axes)

    def _slot_positions(self) -> jax.Array:
        """The cache slots' positions as an int32 array of shape `(*batch, cache_len)`."""
        return self.kv_token_positions.value.unwrap(*self._batch_names(), "seq")

    def next_positions(self) -> nx.NamedArray:
        """The position each sequence's next token gets by default (its largest one + 1).

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.models.transformer import sampling
          >>> from saikei.models.transformer.variants import llamalike
          >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
          ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
          ...     vocab_size=11)
          >>> cached = sampling.KVCachingTransformerLM.from_uncached(
          ...     llamalike.build_llamalike_transformer(cfg, jax.random.key(0)), 8, {})
          >>> _ = cached(sk.nx.wrap(jax.numpy.array([5, 6]), "seq"))
          >>> int(cached.next_positions().unwrap())
          2
        """
        return nx.wrap(self._slot_positions().max(axis=-1) + 1, *self._batch_names())

    def _check_tokens(self, tokens: Any, where: str) -> None:
        expected = {**self.batch_axes, "seq": "any"}
        if (
            not nx.is_namedarray(tokens)
            or tokens.positional_shape
            or set(tokens.named_shape) != set(expected)
            or any(tokens.named_shape[n] != s for n, s in self.batch_axes.items())
        ):
            shape = getattr(tokens, "named_shape", getattr(tokens, "shape", None))
            raise ValueError(
                f"{where}: tokens must be a NamedArray with exactly the axes"
                f" {expected} (the cache's batch_axes plus 'seq'), got"
                f" {type(tokens).__name__} with shape {shape}."
            )
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"{where}: tokens must be integer ids, got dtype {tokens.dtype}.")

    def _positions_array(self, tokens: nx.NamedArray, token_positions: Any, where: str) -> Any:
        names = (*self._batch_names(), "seq")
        length = tokens.named_shape["seq"]
        if token_positions is not None:
            if not nx.is_namedarray(token_positions) or not set(token_positions.named_shape) <= set(
                names
            ):
                shape = getattr(token_positions, "named_shape", token_positions)
                raise ValueError(
                    f"{where}: token_positions must be a NamedArray with axes among {names},"
                    f" got {shape}."
                )
            target = {**self.batch_axes, "seq": length}
            positions = token_positions.broadcast_to((), target).unwrap(*names)
            return positions.astype(jnp.int32)
        start = self._slot_positions().max(axis=-1, keepdims=True) + 1
        if self.pad_id is None:
            return start + jnp.arange(length, dtype=jnp.int32)
        real = tokens.unwrap(*names) != self.pad_id
        counted = jnp.cumsum(real, axis=-1, dtype=jnp.int32)
        return jnp.where(real, start + counted - 1, -1)

    def __call__(
        self,
        tokens: nx.NamedArray,
        /,
        *,
        token_positions: nx.NamedArray | None = None,
        last_logits_only: bool = False,
        **side_inputs: Any,
    ) -> nx.NamedArray:
        """Appends `tokens` to the caches and returns their logits.

        Args:
          tokens: Integer token ids with axes `batch_axes` and `seq`.
          token_positions: Their positions (axis `seq`, optionally batch
            axes), -1 for padding. By default they continue from the cache
            (see `pad_id` for tokens that count as padding).
          last_logits_only: Compute logits only at the last position of
            `tokens` (the returned `seq` axis has size 1). The layers after
            the last attention run on that position alone, so a prefill does
            not unembed every prompt token. Left-pad prompts so that the last
            position is a real token.
          **side_inputs: Passed on to every layer.

        Returns:
          Logits with axes `batch_axes`, `seq` and `vocabulary`.

        Raises:
          ValueError: if the tokens have the wrong axes or do not fit in the
            cache (when the cache index is concrete; under `jax.jit` an
            overflowing write gives NaN logits instead).
        """
        where = "KVCachingTransformerLM"
        self._check_tokens(tokens, where)
        names = (*self._batch_names(), "seq")
        length = tokens.named_shape["seq"]
        end = self.cache_end_index.value
        if _is_concrete(end) and int(end) + length > self.cache_len:
            raise ValueError(
                f"{where}: cannot append {length} tokens to a cache holding {int(end)} of"
                f" {self.cache_len}. Build the cached model with a larger cache_len."
            )
        positions = self._positions_array(tokens, token_positions, where)
        slot_positions = jax.lax.dynamic_update_slice_in_dim(
            self._slot_positions(), positions, end, axis=-1
        )
        side_inputs = {
            **side_inputs,
            "token_positions": nx.wrap(positions, *names),
            KV_POSITIONS_INPUT_NAME: nx.wrap(slot_positions, *names),
            CACHE_END_INDEX_INPUT_NAME: end,
        }
        if last_logits_only:
            logits = _run_for_last_logits(self.body, tokens, side_inputs)
        else:
            logits = self.body(tokens, **side_inputs)
        self.kv_token_positions.value = nx.wrap(slot_positions, *names)
        self.cache_end_index.value = end + jnp.int32(length)
        return logits


def _last_position(value: Any) -> Any:
    return nx.nmap(lambda a: a[-1:])(value.untag("seq")).tag("seq")


def _run_for_last_logits(body: Any, tokens: nx.NamedArray, side_inputs: dict[str, Any]) -> Any:
    """Runs `body` but the layers after its last attention only on the last position.

    Those layers (final norm, unembedding, logit soft-cap, a user's steering
    layer) work on each position separately, so running them on the last
    position gives the same logits as running them everywhere and slicing.
    """
    sublayers = body.sublayers if isinstance(body, nn.Sequential | nn.NamedGroup) else None
    split = None
    if sublayers is not None:
        for index, layer in enumerate(sublayers):
            if select(layer).at_instances_of(nn.KVCachingAttention).count():
                split = index + 1
    if sublayers is None or split is None or split == len(sublayers):
        return _last_position(body(tokens, **side_inputs))
    value = tokens
    for layer in sublayers[:split]:
        value = layer(value, **side_inputs)
    if not nx.is_namedarray(value) or "seq" not in value.named_shape:
        raise ValueError(
            "KVCachingTransformerLM(last_logits_only=True): the residual stream after the last"
            f" attention should be a NamedArray with a 'seq' axis, got {value!r}."
        )
    value = _last_position(value)
    side_inputs = {**side_inputs, "token_positions": _last_position(side_inputs["token_positions"])}
    for layer in sublayers[split:]:
        value = layer(value, **side_inputs)
    return value


# Sampling from logits ------------------------------------------------------------------
