"""GPT-2: learned absolute position embeddings and pre-LayerNorm blocks.

A GPT-2 block is the sequential, rotation-free case of a GPT-NeoX block
(LayerNorm, biased multi-head attention, biased GELU MLP), so the blocks come
from the `gpt_neox` builder; what is GPT-2's own is the table of learned
position embeddings added to the token embeddings, and the logits decoded
with the token embedding table.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from saikei import nn
from saikei.core import named_axes as nx
from saikei.core._struct import pytree_dataclass
from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import _common, gpt_neox


@pytree_dataclass
class AddPositionEmbeddings(nn.Layer):
    """Adds a learned embedding of each token's position, read from a side input.

    Padding positions (-1) are looked up as position 0; a model's outputs at
    padding positions are meaningless anyway, and attention never reads them.
    Concrete positions at or past the table's size raise; under `jax.jit`
    they cannot be checked and give NaN embeddings.

    Attributes:
      table: The position embedding table; its vocabulary axis indexes
        positions.
      positions_input_name: The side input holding each token's position
        (integers named like the input's token axes, e.g. `seq`).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import gpt2
      >>> table = sk.nn.EmbeddingTable.from_config("wpe", jax.random.key(0), 8,
      ...     {"embedding": 4}, vocabulary_axis="positions")
      >>> layer = gpt2.AddPositionEmbeddings(table)
      >>> x = sk.nx.zeros({"batch": 2, "seq": 3, "embedding": 4})
      >>> positions = sk.nx.wrap(jax.numpy.array([[-1, 0, 1], [0, 1, 2]]), "batch", "seq")
      >>> out = layer(x, token_positions=positions).unwrap("batch", "seq", "embedding")
      >>> bool((out[0, 0] == out[1, 0]).all()), bool((out[0, 1] == out[1, 0]).all())
      (True, True)
    """

    table: nn.EmbeddingTable
    positions_input_name: str = dataclasses.field(
        default="token_positions", metadata={"pytree_node": False}
    )

    def __call__(self, value: nx.NamedArray, /, **side_inputs: Any) -> nx.NamedArray:
        where = f"AddPositionEmbeddings({self.positions_input_name!r})"
        positions = side_inputs.get(self.positions_input_name)
        if not isinstance(positions, nx.NamedArray) or not jnp.issubdtype(
            positions.dtype, jnp.integer
        ):
            raise ValueError(
                f"{where}: expected the side input {self.positions_input_name!r} to be an integer"
                f" NamedArray of token positions, got {positions!r}. Pass it when calling the"
                " layer, e.g. token_positions=sk.nx.arange('seq', n)."
            )
        size = self.table.embeddings.value.named_shape[self.table.vocabulary_axis]
        if not isinstance(positions.data_array, jax.core.Tracer):
            too_far = np.asarray(positions.data_array) >= size
            if too_far.any():
                raise ValueError(
                    f"{where}: positions up to {int(np.asarray(positions.data_array).max())}"
                    f" exceed the {size} learned position embeddings (GPT-2's n_positions);"
                    f" keep sequences (prompt plus generated tokens) within {size} tokens."
                )
        clamped = nx.nmap(jnp.maximum)(positions, 0)
        return value + nn.EmbeddingLookup(self.table)(clamped)


@dataclasses.dataclass(frozen=True)
class GPT2TransformerConfig:
    """Configuration of a GPT-2 decoder-only transformer.

    Attributes:
      num_heads: Number of attention heads.
      embedding_dim: Residual stream width (a multiple of `num_heads`).
      mlp_hidden_dim: Width of the feed-forward hidden layer (HF `n_inner`,
        usually `4 * embedding_dim`).
      num_decoder_blocks: Number of blocks.
      vocab_size: Vocabulary size.
      max_positions: Number of learned position embeddings (HF
        `n_positions`): the longest sequence the model can read.
      layer_norm_eps: Epsilon of every LayerNorm.
      mlp_activation: "gelu_approx" (tanh approximation, HF "gelu_new") or
        "gelu" (exact).
      scale_attention_weights: Scale attention logits by
        `projection_dim ** -0.5` (HF `scale_attn_weights`).
      tie_embedder_and_logits: Decode logits with the token embedding table.
      parameter_dtype: Dtype of the parameters.
      activation_dtype: Dtype of the activations.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack`.

    Example:
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=4, embedding_dim=32, mlp_hidden_dim=128,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=16)
      >>> cfg.projection_dim
      8
    """

    num_heads: int
    embedding_dim: int
    mlp_hidden_dim: int
    num_decoder_blocks: int
    vocab_size: int
    max_positions: int
    layer_norm_eps: float = 1e-5
    mlp_activation: Literal["gelu", "gelu_approx"] = "gelu_approx"
    scale_attention_weights: bool = True
    tie_embedder_and_logits: bool = True
    parameter_dtype: Any = jnp.float32
    activation_dtype: Any = jnp.float32
    use_layer_stack: bool = False

    @property
    def projection_dim(self) -> int:
        """Width of each head: `embedding_dim // num_heads`."""
        return self.embedding_dim // self.num_heads


def _as_gpt_neox(config: GPT2TransformerConfig) -> gpt_neox.GPTNeoXTransformerConfig:
    """The GPT-NeoX config whose blocks are exactly GPT-2's."""
    return gpt_neox.GPTNeoXTransformerConfig(
        num_heads=config.num_heads,
        embedding_dim=config.embedding_dim,
        projection_dim=config.projection_dim,
        mlp_hidden_dim=config.mlp_hidden_dim,
        num_decoder_blocks=config.num_decoder_blocks,
        vocab_size=config.vocab_size,
        rotary_pct=0.0,
        layer_norm_eps=config.layer_norm_eps,
        use_parallel_residual=False,
        mlp_activation=config.mlp_activation,
        attention_bias=True,
        tie_embedder_and_logits=config.tie_embedder_and_logits,
        query_scaling_factor="default" if config.scale_attention_weights else 1.0,
        parameter_dtype=config.parameter_dtype,
        activation_dtype=config.activation_dtype,
        use_layer_stack=config.use_layer_stack,
    )


def build_gpt2_transformer(
    config: GPT2TransformerConfig,
    init_base_rng: jax.Array | None = None,
    name: str = "transformer",
) -> model_parts.TransformerLM:
    """Builds a GPT-2 `TransformerLM` from `sk.nn` combinators.

    Args:
      config: The architecture.
      init_base_rng: Base key for random parameters, or None for parameter
        slots (to bind loaded weights into).
      name: Prefix of every parameter label.

    Returns:
      The model; call it on token ids with a `seq` axis.

    Raises:
      ValueError: naming the config field of an invalid value.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=4, embedding_dim=32, mlp_hidden_dim=128,
      ...     num_decoder_blocks=2, vocab_size=11, max_positions=16)
      >>> lm = gpt2.build_gpt2_transformer(cfg, jax.random.key(0))
      >>> lm(sk.nx.wrap(jax.numpy.arange(5), "seq")).named_shape
      {'seq': 5, 'vocabulary': 11}
    """
    where = "build_gpt2_transformer"
    for field in ("num_heads", "embedding_dim", "max_positions"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: config.{field} must be a positive int, got {value!r}.")
    if config.embedding_dim % config.num_heads:
        raise ValueError(
            f"{where}: config.num_heads={config.num_heads} must divide"
            f" config.embedding_dim={config.embedding_dim}."
        )
    blocks_config = _as_gpt_neox(config)
    gpt_neox._check_config(blocks_config, where)
    table = _common.token_embedder(name, init_base_rng, config)
    positions = nn.EmbeddingTable.from_config(
        f"{name}/position_embedder",
        init_base_rng,
        config.max_positions,
        {"embedding": config.embedding_dim},
        vocabulary_axis="positions",
        dtype=config.parameter_dtype,
    )
    # Cast before adding positions as well as after: the sum is then formed in
    # the activation dtype (f32 activations over bf16 weights stay exact) and
    # the result never drifts to a promoted dtype.
    layers: list[Any] = [
        nn.EmbeddingLookup(table),
        *_common.to_activation_dtype(config),
        AddPositionEmbeddings(positions),
        *_common.to_activation_dtype(config),
    ]
    layers.extend(gpt_neox._blocks(name, init_base_rng, blocks_config))
    layers.extend(gpt_neox._head(name, init_base_rng, blocks_config, table))
    return _common.transformer_lm(layers, config, {"heads": config.num_heads}, {})
