"""`weights(lm)`: a transformer's weights by their usual interpretability names.

The arrays are the model's own parameter values, read when an attribute is
accessed (so a later change to a Parameter shows up), renamed to one layout
for every family:

====================  =====================================================
name                  axes
====================  =====================================================
W_E                   vocabulary, embedding (the raw table; Gemma then
                      scales embeddings by sqrt(embedding))
W_pos                 positions, embedding (GPT-2), else None
W_U                   embedding, vocabulary (before any logit soft cap)
W_Q                   layer, heads, embedding, projection
W_K, W_V              layer, kv_heads, embedding, projection
W_O                   layer, heads, projection, embedding
b_Q                   layer, heads, projection (None without a bias)
b_K, b_V              layer, kv_heads, projection (None without a bias)
b_O                   layer, embedding (None without a bias)
W_in, W_gate          layer, embedding, neurons (W_gate: gated MLPs only)
W_out                 layer, neurons, embedding
b_in, b_gate, b_out   layer, neurons / embedding (None without a bias)
final_norm_scale      embedding (the multiplier itself: Gemma's 1 + w)
final_norm_bias       embedding (LayerNorm), else None
====================  =====================================================

`heads` is in Hugging Face order: query head `h` of a grouped-query model
reads key/value head `h // (heads // kv_heads)`. `W_Q` is the projection
alone: the model then applies RoPE (where it has it) and the query scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from saikei import nn
from saikei.core import named_axes as nx
from saikei.core import select
from saikei.core._variables import AbstractVariableSlot
from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import gpt2

_PROJECTIONS = (nn.Linear, nn.Affine)
_NORMS = (nn.LayerNorm, nn.RMSLayerNorm)
# Searches of the body stop at these, so that only model-level layers are found.
_BLOCK_CONTAINERS = (model_parts.TransformerBlock, nn.LayerStack)


def merge_axes(value: nx.NamedArray, axes: Sequence[Any], new: str) -> nx.NamedArray:
    """Merges named `axes` (row-major, first slowest) into one axis `new`; size 1 if none.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.interp import _weights
      >>> x = sk.nx.wrap(jnp.arange(6).reshape(2, 3), "head_groups", "query_heads")
      >>> _weights.merge_axes(x, ("head_groups", "query_heads"), "heads").unwrap("heads").tolist()
      [0, 1, 2, 3, 4, 5]
    """
    axes = tuple(axes)
    if not axes:
        merged = nx.nmap(lambda a: a[None])(value).tag(new)
    else:
        merged = nx.nmap(lambda a: a.reshape(-1))(value.untag(*axes)).tag(new)
    rest = [n for n in value.named_shape if n not in axes]
    # A stack axis stays in front, then the merged axis, then the others.
    front = [n for n in rest if n == "layer"]
    return merged.order_as(*front, new, *[n for n in rest if n != "layer"])


def split_axis(value: nx.NamedArray, axis: str, into: dict[str, int]) -> nx.NamedArray:
    """Inverse of `merge_axes`: splits `axis` into the named axes `into` (row-major).

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.interp import _weights
      >>> x = sk.nx.wrap(jnp.arange(6), "heads")
      >>> _weights.split_axis(x, "heads", {"g": 2, "q": 3}).unwrap("g", "q").tolist()
      [[0, 1, 2], [3, 4, 5]]
    """
    if not into:
        return nx.nmap(lambda a: a[0])(value.untag(axis))
    sizes = tuple(into.values())
    return nx.nmap(lambda a: a.reshape(sizes))(value.untag(axis)).tag(*into)


def query_head_axes(metadata: model_parts.TransformerMetadata) -> tuple[str, ...]:
    """The model's query head axes, in the order `merge_axes` makes HF's `heads` from.

    Example:
      >>> from saikei.models.transformer import model_parts
      >>> from saikei.interp import _weights
      >>> meta = model_parts.TransformerMetadata({"head_groups": 2}, {"query_heads": 3}, 8, 4, 8, 5)
      >>> _weights.query_head_axes(meta)
      ('head_groups', 'query_heads')
    """
    return (*metadata.common_head_axes, *metadata.query_only_head_axes)


def kv_head_axes(metadata: model_parts.TransformerMetadata) -> tuple[str, ...]:
    """The model's key/value head axes (empty for multi-query attention).

    Example:
      >>> from saikei.models.transformer import model_parts
      >>> from saikei.interp import _weights
      >>> meta = model_parts.TransformerMetadata({}, {"query_heads": 4}, 8, 4, 8, 5)
      >>> _weights.kv_head_axes(meta)
      ()
    """
    return tuple(metadata.common_head_axes)


def _value_of(param: Any, what: str) -> nx.NamedArray:
    if isinstance(param, AbstractVariableSlot):
        raise ValueError(
            f"interp.weights: the {what} is the unbound slot {param.label!r}; bind its value"
            " first (load the model with load_pretrained, or sk.bind_variables(lm, params))."
        )
    value = param.value
    if not nx.is_namedarray(value):
        raise TypeError(
            f"interp.weights: the {what} ({getattr(param, 'label', '?')!r}) holds"
            f" {type(value).__name__}, expected a NamedArray."
        )
    return value


def _linear_and_bias(layer: Any, what: str) -> tuple[nx.NamedArray, nx.NamedArray | None]:
    if isinstance(layer, nn.Linear):
        return _value_of(layer.weights, what), None
    linears = select(layer).at_instances_of(nn.Linear).get_sequence()
    biases = select(layer).at_instances_of(nn.AddBias).get_sequence()
    if len(linears) != 1 or len(biases) != 1:
        raise ValueError(f"interp.weights: expected one Linear and one AddBias in the {what}.")
    return _value_of(linears[0].weights, what), _value_of(biases[0].bias, f"{what} bias")


def _first_projection(tree: Any, what: str) -> Any:
    found = select(tree).at_instances_of(_PROJECTIONS).get_sequence()
    if not found:
        raise ValueError(f"interp.weights: found no projection (Linear or Affine) in the {what}.")
    return found[0]


@dataclasses.dataclass(frozen=True)
class _Block:
    """Where block i lives: the block layer and, inside a LayerStack, its slice."""

    layer: Any
    stack_axis: Any = None
    index: int | None = None

    def take(self, value: nx.NamedArray | None) -> nx.NamedArray | None:
        if value is None or self.stack_axis is None:
            return value
        return value[{self.stack_axis: self.index}]


def transformer_blocks(body: Any) -> list[_Block]:
    """The decoder blocks of a model body in execution order (block i at index i).

    A LayerStack of `TransformerBlock`s gives one entry per layer; a stack
    whose step holds `P` blocks (Gemma's local/global pattern) gives block
    `k * P + j` as slice `k` of the step's block `j`.
    """
    found = select(body).at_instances_of((model_parts.TransformerBlock, nn.LayerStack))
    blocks: list[_Block] = []
    for node in found.get_sequence():
        if isinstance(node, model_parts.TransformerBlock):
            blocks.append(_Block(node))
            continue
        inner = select(node.stacked_sublayers).at_instances_of(model_parts.TransformerBlock)
        period = inner.get_sequence()
        if not period:
            raise ValueError(
                "interp.weights: a LayerStack in the model holds no TransformerBlock; cannot"
                " tell its layers apart."
            )
        for k in range(node.stack_axis_size):
            for block in period:
                blocks.append(_Block(block, node.stack_axis, k))
    return blocks


def _attention_of(block: Any, i: int) -> Any:
    found = select(block).at_instances_of((nn.Attention, nn.KVCachingAttention)).get_sequence()
    if len(found) != 1:
        raise ValueError(
            f"interp.weights: block {i} has {len(found)} attention layers, expected 1."
        )
    return found[0]


def _feed_forward_of(block: Any, i: int) -> Any:
    found = select(block).at_instances_of(model_parts.TransformerFeedForward).get_sequence()
    if len(found) != 1:
        raise ValueError(
            f"interp.weights: block {i} has {len(found)} TransformerFeedForward layers, expected 1."
        )
    return found[0]


def _rename(value: nx.NamedArray, old: Any, new: str) -> nx.NamedArray:
    return value.untag(old).tag(new)


class ModelWeights:
    """A transformer's weights under interpretability names (see `interp.weights`).

    Every attribute is read from the model's parameters when accessed. Per
    layer arrays are stacked along a `layer` axis; `layers[i]` gives layer
    `i` alone (the same names without the `layer` axis). The module
    docstring of `saikei.interp._weights` lists every name and its axes.

    Example:
      >>> import jax
      >>> from saikei import interp
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=2, query_head_multiplier=2,
      ...     embedding_dim=16, projection_dim=4, mlp_hidden_dim=32, num_decoder_blocks=3,
      ...     vocab_size=11)
      >>> w = interp.weights(llamalike.build_llamalike_transformer(cfg, jax.random.key(0)))
      >>> w.W_Q.named_shape
      {'layer': 3, 'heads': 4, 'embedding': 16, 'projection': 4}
      >>> w.layers[1].W_K.named_shape
      {'kv_heads': 2, 'embedding': 16, 'projection': 4}
    """

    def __init__(self, lm: Any) -> None:
        metadata = getattr(lm, "metadata", None)
        body = getattr(lm, "body", None)
        if not isinstance(metadata, model_parts.TransformerMetadata) or body is None:
            raise TypeError(
                "interp.weights: expected a TransformerLM (or KVCachingTransformerLM), got"
                f" {type(lm).__name__}."
            )
        self._metadata = metadata
        self._body = body
        self._blocks = transformer_blocks(body)
        self.layers = tuple(LayerWeights(self, i) for i in range(len(self._blocks)))

    def __repr__(self) -> str:
        return f"ModelWeights(layers={len(self._blocks)})"

    # Model-level weights ------------------------------------------------------------

    @property
    def W_E(self) -> nx.NamedArray:
        """The token embedding table, `{vocabulary, embedding}`."""
        lookups = select(self._body).at_instances_of(nn.EmbeddingLookup).get_sequence()
        if not lookups:
            raise ValueError("interp.weights: the model has no EmbeddingLookup (token embedding).")
        table = lookups[0].table
        value = _value_of(table.embeddings, "token embedding")
        if table.vocabulary_axis != "vocabulary":
            value = _rename(value, table.vocabulary_axis, "vocabulary")
        return value

    @property
    def W_pos(self) -> nx.NamedArray | None:
        """Learned position embeddings `{positions, embedding}` (GPT-2), else None."""
        adds = select(self._body).at_instances_of(gpt2.AddPositionEmbeddings).get_sequence()
        if not adds:
            return None
        table = adds[0].table
        value = _value_of(table.embeddings, "position embedding")
        if table.vocabulary_axis != "positions":
            value = _rename(value, table.vocabulary_axis, "positions")
        return value

    def _unembedding(self) -> Any:
        outer = [
            node
            for node in select(self._body)
            .at_instances_of((nn.Linear, nn.EmbeddingDecode, *_BLOCK_CONTAINERS))
            .get_sequence()
            if isinstance(node, nn.Linear | nn.EmbeddingDecode)
        ]
        if not outer:
            raise ValueError("interp.weights: found no unembedding (Linear or EmbeddingDecode).")
        return outer[-1]

    @property
    def W_U(self) -> nx.NamedArray:
        """The unembedding `{embedding, vocabulary}` (the embedding table if tied)."""
        layer = self._unembedding()
        if isinstance(layer, nn.EmbeddingDecode):
            value = _value_of(layer.table.embeddings, "tied unembedding")
            if layer.table.vocabulary_axis != "vocabulary":
                value = _rename(value, layer.table.vocabulary_axis, "vocabulary")
            return value
        return _value_of(layer.weights, "unembedding")

    def _final_norm(self) -> Any:
        top = select(self._body).at_instances_of((*_NORMS, *_BLOCK_CONTAINERS)).get_sequence()
        norms = [node for node in top if isinstance(node, _NORMS)]
        if not norms:
            raise ValueError("interp.weights: found no final norm after the blocks.")
        return norms[-1]

    @property
    def final_norm_scale(self) -> nx.NamedArray:
        """The final norm's learned multiplier, `{embedding}`."""
        norm = self._final_norm()
        return _value_of(norm.sublayers[1].weights, "final norm scale")

    @property
    def final_norm_bias(self) -> nx.NamedArray | None:
        """The final LayerNorm's shift `{embedding}`, or None for an RMS norm."""
        norm = self._final_norm()
        if isinstance(norm, nn.LayerNorm):
            return _value_of(norm.sublayers[2].bias, "final norm bias")
        return None

    # Per-layer weights, stacked -----------------------------------------------------

    def _stacked(self, name: str) -> nx.NamedArray | None:
        if not self._blocks:
            raise ValueError("interp.weights: the model has no decoder blocks.")
        per_layer = [getattr(layer, name) for layer in self.layers]
        if all(v is None for v in per_layer):
            return None
        if any(v is None for v in per_layer):
            missing = [i for i, v in enumerate(per_layer) if v is None]
            raise ValueError(f"interp.weights: layers {missing} have no {name} but others do.")
        return nx.stack(per_layer, "layer")


def _stacked_property(name: str, doc: str) -> property:
    def getter(self: ModelWeights) -> nx.NamedArray | None:
        return self._stacked(name)

    getter.__doc__ = doc
    return property(getter)


class LayerWeights:
    """The weights of one decoder block (see `ModelWeights`; no `layer` axis).

    Example:
      >>> import jax
      >>> from saikei import interp
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=4, embedding_dim=32,
      ...     projection_dim=8, mlp_hidden_dim=64, num_decoder_blocks=2, vocab_size=11)
      >>> w = interp.weights(gpt_neox.build_gpt_neox_transformer(cfg, jax.random.key(0)))
      >>> w.layers[0].b_O.named_shape
      {'embedding': 32}
    """

    def __init__(self, model: ModelWeights, index: int) -> None:
        self._model = model
        self.index = index

    def __repr__(self) -> str:
        return f"LayerWeights(index={self.index})"

    def _block(self) -> _Block:
        return self._model._blocks[self.index]

    def _meta(self) -> model_parts.TransformerMetadata:
        return self._model._metadata

    def _attention(self) -> Any:
        return _attention_of(self._block().layer, self.index)

    def _proj(self, which: str) -> tuple[nx.NamedArray, nx.NamedArray | None]:
        attention = self._attention()
        sub = getattr(attention, which)
        what = f"{which} projection of block {self.index}"
        weight, bias = _linear_and_bias(_first_projection(sub, what), what)
        block = self._block()
        return block.take(weight), block.take(bias)

    def _query_like(self, which: str, bias: bool) -> nx.NamedArray | None:
        weight, b = self._proj(which)
        value = b if bias else weight
        if value is None:
            return None
        return merge_axes(value, query_head_axes(self._meta()), "heads")

    def _kv_like(self, which: str, bias: bool) -> nx.NamedArray | None:
        weight, b = self._proj(which)
        value = b if bias else weight
        if value is None:
            return None
        return merge_axes(value, kv_head_axes(self._meta()), "kv_heads")

    @property
    def W_Q(self) -> nx.NamedArray:
        """Query projection `{heads, embedding, projection}`."""
        return self._query_like("input_to_query", False)

    @property
    def W_K(self) -> nx.NamedArray:
        """Key projection `{kv_heads, embedding, projection}`."""
        return self._kv_like("input_to_key", False)

    @property
    def W_V(self) -> nx.NamedArray:
        """Value projection `{kv_heads, embedding, projection}`."""
        return self._kv_like("input_to_value", False)

    @property
    def b_Q(self) -> nx.NamedArray | None:
        """Query bias `{heads, projection}`, or None."""
        return self._query_like("input_to_query", True)

    @property
    def b_K(self) -> nx.NamedArray | None:
        """Key bias `{kv_heads, projection}`, or None."""
        return self._kv_like("input_to_key", True)

    @property
    def b_V(self) -> nx.NamedArray | None:
        """Value bias `{kv_heads, projection}`, or None."""
        return self._kv_like("input_to_value", True)

    @property
    def W_O(self) -> nx.NamedArray:
        """Output projection `{heads, projection, embedding}`."""
        weight, _ = self._proj("attn_value_to_output")
        return merge_axes(weight, query_head_axes(self._meta()), "heads")

    @property
    def b_O(self) -> nx.NamedArray | None:
        """Output bias `{embedding}`, or None."""
        return self._proj("attn_value_to_output")[1]

    def _mlp(self) -> list[tuple[nx.NamedArray, nx.NamedArray | None]]:
        block = self._block()
        ffw = _feed_forward_of(block.layer, self.index)
        what = f"feed-forward of block {self.index}"
        out = []
        for layer in select(ffw).at_instances_of(_PROJECTIONS).get_sequence():
            weight, bias = _linear_and_bias(layer, what)
            out.append((block.take(weight), block.take(bias)))
        if len(out) not in (2, 3):
            raise ValueError(
                f"interp.weights: the {what} has {len(out)} projections; expected 2 (in, out)"
                " or 3 (gate, in, out)."
            )
        return out

    def _mlp_part(self, role: str, bias: bool) -> nx.NamedArray | None:
        parts = self._mlp()
        roles = ("in", "out") if len(parts) == 2 else ("gate", "in", "out")
        if role not in roles:
            return None
        weight, b = parts[roles.index(role)]
        return b if bias else weight

    @property
    def W_in(self) -> nx.NamedArray:
        """MLP input projection `{embedding, neurons}` (HF `up_proj` / `fc_in`)."""
        return self._mlp_part("in", False)

    @property
    def W_gate(self) -> nx.NamedArray | None:
        """Gate projection `{embedding, neurons}` of a gated MLP (HF `gate_proj`), else None."""
        return self._mlp_part("gate", False)

    @property
    def W_out(self) -> nx.NamedArray:
        """MLP output projection `{neurons, embedding}`."""
        return self._mlp_part("out", False)

    @property
    def b_in(self) -> nx.NamedArray | None:
        """MLP input bias `{neurons}`, or None."""
        return self._mlp_part("in", True)

    @property
    def b_gate(self) -> nx.NamedArray | None:
        """Gate bias `{neurons}`, or None."""
        return self._mlp_part("gate", True)

    @property
    def b_out(self) -> nx.NamedArray | None:
        """MLP output bias `{embedding}`, or None."""
        return self._mlp_part("out", True)


_LAYER_NAMES = (
    "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O",
    "W_in", "W_gate", "W_out", "b_in", "b_gate", "b_out",
)  # fmt: skip

for _name in _LAYER_NAMES:
    setattr(
        ModelWeights,
        _name,
        _stacked_property(_name, f"`LayerWeights.{_name}` of every layer, stacked on `layer`."),
    )


def weights(lm: Any) -> ModelWeights:
    """The weights of a transformer LM under interpretability names, with one `heads` axis.

    Works for every family saikei builds or loads (llama-like incl. Gemma,
    GPT-NeoX, GPT-2), with blocks in a list or in a `LayerStack`. Per-layer
    names (`W_Q`, `b_O`, `W_in`, ...) are stacked along a `layer` axis;
    `weights(lm).layers[i]` holds layer `i` alone. Values are JAX arrays
    read from the model's Parameters at attribute access: they are never
    written back, so changing them changes nothing in the model.

    Args:
      lm: A `TransformerLM` (or `KVCachingTransformerLM`) with bound parameters.

    Returns:
      A `ModelWeights`.

    Raises:
      ValueError: when read, for an unbound parameter slot or a model whose
        structure is not a saikei transformer.

    Example:
      >>> import jax
      >>> from saikei import interp
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=4, embedding_dim=32, mlp_hidden_dim=64,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=16)
      >>> w = interp.weights(gpt2.build_gpt2_transformer(cfg, jax.random.key(0)))
      >>> w.W_pos.named_shape, w.W_U.named_shape
      ({'positions': 16, 'embedding': 32}, {'vocabulary': 11, 'embedding': 32})
    """
    return ModelWeights(lm)
