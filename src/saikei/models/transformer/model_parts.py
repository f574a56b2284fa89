"""Shared parts of transformer language models: the model wrapper, blocks and metadata."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from saikei.core import named_axes as nx
from saikei.core._struct import pytree_dataclass
from saikei.nn._grouping import Sequential
from saikei.nn._layer import Layer


@dataclasses.dataclass(frozen=True)
class TransformerMetadata:
    """Sizes and axis names that describe a transformer, kept beside its layers.

    Attributes:
      common_head_axes: Head axes shared by queries, keys and values
        (e.g. `{"heads": 8}` or `{"head_groups": 2}`).
      query_only_head_axes: Head axes that only queries have
        (e.g. `{"query_heads": 4}` for grouped-query attention).
      embedding_dim: Size of the residual stream axis `embedding`.
      projection_dim: Size of each head's `projection` axis.
      mlp_hidden_dim: Size of the feed-forward `neurons` axis.
      vocab_size: Size of the `vocabulary` axis.
      activation_dtype: The dtype of activations.
      config: The builder config the model was made from (a frozen
        dataclass such as `LlamalikeTransformerConfig`), or None. Exporting
        (`save_pretrained`) and KV caching read it.
      hf_model_type: The Hugging Face `model_type` the model was loaded from
        (e.g. `"llama"`), or None.

    Example:
      >>> from saikei.models.transformer import model_parts
      >>> meta = model_parts.TransformerMetadata({"heads": 2}, {}, 8, 4, 16, 10)
      >>> meta.vocab_size
      10
    """

    common_head_axes: dict[str, int]
    query_only_head_axes: dict[str, int]
    embedding_dim: int
    projection_dim: int
    mlp_hidden_dim: int
    vocab_size: int
    activation_dtype: Any = jnp.float32
    config: Any = None
    hf_model_type: str | None = None


@pytree_dataclass(has_implicitly_inherited_fields=True)
class TransformerBlock(Sequential):
    """One decoder block (attention and feed-forward residuals), a named `Sequential`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei.models.transformer import model_parts
      >>> from saikei import sk
      >>> block = model_parts.TransformerBlock([sk.nn.Elementwise(lambda x: x + 1)])
      >>> block(jnp.zeros(2))
      Array([1., 1.], dtype=float32)
    """


@pytree_dataclass(has_implicitly_inherited_fields=True)
class TransformerFeedForward(Sequential):
    """The feed-forward (MLP) part of a block, a named `Sequential`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei.models.transformer import model_parts
      >>> from saikei import sk
      >>> ffw = model_parts.TransformerFeedForward([sk.nn.Elementwise(lambda x: 2 * x)])
      >>> ffw(jnp.ones(2))
      Array([2., 2.], dtype=float32)
    """


@pytree_dataclass
class TransformerLM(Layer):
    """A transformer language model: token ids (axis `seq`) in, logits out.

    Attributes:
      body: The layer that maps token ids to logits; it receives the side
        input `token_positions` (named `seq`, -1 marks padding).
      metadata: The model's sizes and axis names.

    Example:
      >>> from saikei import sk
      >>> from saikei.models.transformer import model_parts
      >>> @sk.pytree_dataclass
      ... class Echo(sk.nn.Layer):
      ...   def __call__(self, tokens, /, **side_inputs):
      ...     return side_inputs["token_positions"]
      >>> meta = model_parts.TransformerMetadata({"heads": 1}, {}, 2, 2, 2, 5)
      >>> lm = model_parts.TransformerLM(Echo(), meta)
      >>> lm(sk.nx.zeros({"seq": 3}, dtype=int)).unwrap("seq").tolist()
      [0, 1, 2]
    """

    body: Any
    metadata: TransformerMetadata = dataclasses.field(metadata={"pytree_node": False})

    def __call__(
        self, tokens: nx.NamedArray, /, *, token_positions: Any = None, **side_inputs: Any
    ) -> nx.NamedArray:
        """Returns logits with a `vocabulary` axis for `tokens` (a NamedArray with `seq`).

        Args:
          tokens: Integer token ids with a `seq` axis (and any batch axes).
          token_positions: Position of each token (named `seq`, optionally with
            batch axes), -1 for padding. Defaults to `arange("seq")`.
          **side_inputs: Passed on to every layer.

        Returns:
          The logits.
        """
        if not nx.is_namedarray(tokens) or "seq" not in tokens.named_shape:
            shape = getattr(tokens, "named_shape", getattr(tokens, "shape", None))
            raise ValueError(
                f"TransformerLM: tokens must be a NamedArray with a 'seq' axis, got"
                f" {type(tokens).__name__} with shape {shape}. Wrap them, e.g."
                " sk.nx.wrap(ids, 'batch', 'seq')."
            )
        if token_positions is None:
            token_positions = nx.arange("seq", tokens.named_shape["seq"])
        return self.body(tokens, token_positions=token_positions, **side_inputs)
