"""The GPT-NeoX family (Pythia, GPT-NeoX-20B): LayerNorm blocks with partial rotary embeddings.

A GPT-NeoX block normalizes its input with LayerNorm, attends with biased
multi-head attention whose queries and keys are rotated on the first
`rotary_pct` of each head's dimensions, and runs a biased GELU MLP. With
`use_parallel_residual` (the Pythia default) attention and MLP both read the
block input, `x + attn(ln1(x)) + mlp(ln2(x))`; otherwise they run one after
the other as in GPT-2.

The block builder here is shared with `gpt2`, whose blocks are the
sequential, rotation-free case.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp

from saikei import nn
from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import _common, _penzai_hf


# Module-level functions (not lambdas) so that equal configs build equal layers.
def _gelu_exact(x: jax.Array) -> jax.Array:
    """GELU with the exact normal CDF (HF `"gelu"`)."""
    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU with the tanh approximation of the normal CDF (HF `"gelu_new"`)."""
    return jax.nn.gelu(x, approximate=True)


_ACTIVATIONS = {"gelu": _gelu_exact, "gelu_approx": _gelu_tanh}


@dataclasses.dataclass(frozen=True)
class GPTNeoXTransformerConfig:
    """Configuration of a GPT-NeoX decoder-only transformer.

    Attributes:
      num_heads: Number of attention heads (queries, keys and values alike).
      embedding_dim: Residual stream width.
      projection_dim: Width of each head.
      mlp_hidden_dim: Width of the feed-forward hidden layer.
      num_decoder_blocks: Number of blocks.
      vocab_size: Vocabulary size.
      rotary_pct: Fraction of each head's dimensions that RoPE rotates (the
        first `int(projection_dim * rotary_pct)`, an even number); 0 turns
        RoPE off.
      rope_wavelength: RoPE base (`rope_theta`).
      rope_scale_factor: Linear RoPE scaling (positions divided by it).
      layer_norm_eps: Epsilon of every LayerNorm.
      use_parallel_residual: `x + attn(ln1(x)) + mlp(ln2(x))` if True,
        else attention then MLP, each with its own residual.
      mlp_activation: "gelu" (exact) or "gelu_approx" (tanh approximation).
      attention_bias: Bias on the query, key, value and output projections.
      tie_embedder_and_logits: Decode logits with the embedding table.
      query_scaling_factor: "default" (`projection_dim ** -0.5`) or a float.
      parameter_dtype: Dtype of the parameters.
      activation_dtype: Dtype of the activations.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack`.

    Example:
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=4, embedding_dim=32,
      ...     projection_dim=8, mlp_hidden_dim=64, num_decoder_blocks=2, vocab_size=11,
      ...     rotary_pct=0.25)
      >>> cfg.use_parallel_residual
      True
    """

    num_heads: int
    embedding_dim: int
    projection_dim: int
    mlp_hidden_dim: int
    num_decoder_blocks: int
    vocab_size: int
    rotary_pct: float = 1.0
    rope_wavelength: float = 10_000.0
    rope_scale_factor: float = 1.0
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    mlp_activation: Literal["gelu", "gelu_approx"] = "gelu"
    attention_bias: bool = True
    tie_embedder_and_logits: bool = False
    query_scaling_factor: float | Literal["default"] = "default"
    parameter_dtype: Any = jnp.float32
    activation_dtype: Any = jnp.float32
    use_layer_stack: bool = False


def _rotary_dims(config: GPTNeoXTransformerConfig) -> int:
    """How many leading dimensions of each head RoPE rotates (rounded down, as HF does)."""
    return int(config.projection_dim * config.rotary_pct)


def _check_config(config: GPTNeoXTransformerConfig, where: str) -> None:
    for field in (
        "num_heads",
        "embedding_dim",
        "projection_dim",
        "mlp_hidden_dim",
        "vocab_size",
    ):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: config.{field} must be a positive int, got {value!r}.")
    blocks = config.num_decoder_blocks
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ValueError(
            f"{where}: config.num_decoder_blocks must be a non-negative int, got {blocks!r}."
        )
    if not 0.0 <= config.rotary_pct <= 1.0:
        raise ValueError(
            f"{where}: config.rotary_pct must be between 0 and 1, got {config.rotary_pct!r}."
        )
    dims = _rotary_dims(config)
    if dims % 2:
        raise ValueError(
            f"{where}: config.rotary_pct={config.rotary_pct!r} rotates {dims} of"
            f" projection_dim={config.projection_dim} dimensions, an odd number; RoPE rotates"
            " pairs, so choose rotary_pct so that int(projection_dim * rotary_pct) is even."
        )
    if config.mlp_activation not in _ACTIVATIONS:
        raise ValueError(
            f"{where}: unsupported config.mlp_activation={config.mlp_activation!r}; use one of"
            f" {sorted(_ACTIVATIONS)}."
        )


def _attention(name: str, rng: jax.Array | None, config: GPTNeoXTransformerConfig) -> nn.Attention:
    heads = {"heads": config.num_heads}
    emb = {"embedding": config.embedding_dim}
    head_proj = {**heads, "projection": config.projection_dim}
    dtype = config.parameter_dtype
    bias = config.attention_bias
    dims = _rotary_dims(config)

    def rope() -> list[Any]:
        if dims == 0:
            return []
        if dims == config.projection_dim:
            return [
                nn.ApplyRoPE(
                    embedding_axis="projection",
                    max_wavelength=config.rope_wavelength,
                    scale_factor=config.rope_scale_factor,
                )
            ]
        return [
            nn.ApplyRoPEToSubset(
                embedding_axis="projection",
                max_wavelength=config.rope_wavelength,
                rope_subset_size=dims,
                scale_factor=config.rope_scale_factor,
            )
        ]

    scale = _common.query_scale(config)
    rescale = (
        []
        if scale == 1.0
        else [nn.ConstantRescale(_common.scalar_in(scale, config.activation_dtype))]
    )
    q_names = ("heads", "seq", "projection")
    k_names = ("heads", "kv_seq", "projection")
    logits_names = ("heads", "seq", "kv_seq")
    return nn.Attention(
        input_to_query=nn.Sequential(
            [
                _common.projection(f"{name}/query", rng, emb, head_proj, bias, dtype),
                *rope(),
                *rescale,
            ]
        ),
        input_to_key=nn.Sequential(
            [
                _common.projection(f"{name}/key", rng, emb, head_proj, bias, dtype),
                *rope(),
                nn.RenameAxes(old="seq", new="kv_seq"),
            ]
        ),
        input_to_value=nn.Sequential(
            [
                _common.projection(f"{name}/value", rng, emb, head_proj, bias, dtype),
                nn.RenameAxes(old="seq", new="kv_seq"),
            ]
        ),
        query_key_to_attn=nn.Sequential(
            [
                nn.NamedEinsum((q_names, k_names), logits_names),
                nn.ApplyCausalAttentionMask(_common.MASKED),
                nn.Softmax("kv_seq"),
            ]
        ),
        attn_value_to_output=nn.Sequential(
            [
                nn.NamedEinsum((logits_names, k_names), q_names),
                _common.projection(f"{name}/output", rng, head_proj, emb, bias, dtype),
            ]
        ),
    )


def _feed_forward(
    name: str, rng: jax.Array | None, config: GPTNeoXTransformerConfig
) -> model_parts.TransformerFeedForward:
    emb = {"embedding": config.embedding_dim}
    hidden = {"neurons": config.mlp_hidden_dim}
    dtype = config.parameter_dtype
    return model_parts.TransformerFeedForward(
        [
            nn.Affine.from_config(f"{name}/in", rng, emb, hidden, dtype=dtype),
            nn.Elementwise(_ACTIVATIONS[config.mlp_activation]),
            nn.Affine.from_config(f"{name}/out", rng, hidden, emb, dtype=dtype),
        ]
    )


def _block(
    name: str, init_base_rng: jax.Array | None, config: GPTNeoXTransformerConfig
) -> model_parts.TransformerBlock:
    """One block; labels `{name}/pre_attention_norm`, `attention`, `pre_ffw_norm`, `mlp`."""
    rng = init_base_rng

    def norm(which: str) -> nn.LayerNorm:
        return nn.LayerNorm.from_config(
            f"{name}/{which}",
            rng,
            {"embedding": config.embedding_dim},
            epsilon=config.layer_norm_eps,
            dtype=config.parameter_dtype,
        )

    attn = nn.Sequential([norm("pre_attention_norm"), _attention(f"{name}/attention", rng, config)])
    ffw = nn.Sequential([norm("pre_ffw_norm"), _feed_forward(f"{name}/mlp", rng, config)])
    if config.use_parallel_residual:
        return model_parts.TransformerBlock([nn.Residual(nn.BranchAndAddTogether([attn, ffw]))])
    return model_parts.TransformerBlock([nn.Residual(attn), nn.Residual(ffw)])


def build_gpt_neox_attention(
    name: str, init_base_rng: jax.Array | None, config: GPTNeoXTransformerConfig
) -> nn.Attention:
    """Builds the attention layer of one GPT-NeoX block (biased, partial RoPE).

    Example:
      >>> import jax
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=2, embedding_dim=8,
      ...     projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1, vocab_size=5,
      ...     rotary_pct=0.5)
      >>> attn = gpt_neox.build_gpt_neox_attention("attn", jax.random.key(0), cfg)
      >>> type(attn.input_to_query.sublayers[1]).__name__
      'ApplyRoPEToSubset'
    """
    _check_config(config, "build_gpt_neox_attention")
    return _attention(name, init_base_rng, config)


def build_gpt_neox_feedforward(
    name: str, init_base_rng: jax.Array | None, config: GPTNeoXTransformerConfig
) -> model_parts.TransformerFeedForward:
    """Builds the feed-forward layer of one GPT-NeoX block (`{name}/in`, activation, `{name}/out`).

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=2, embedding_dim=8,
      ...     projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1, vocab_size=5)
      >>> ffw = gpt_neox.build_gpt_neox_feedforward("mlp", jax.random.key(0), cfg)
      >>> [type(layer).__name__ for layer in ffw.sublayers]
      ['Affine', 'Elementwise', 'Affine']
    """
    _check_config(config, "build_gpt_neox_feedforward")
    return _feed_forward(name, init_base_rng, config)


def build_gpt_neox_block(
    name: str, init_base_rng: jax.Array | None, config: GPTNeoXTransformerConfig
) -> model_parts.TransformerBlock:
    """Builds one GPT-NeoX block: parallel (or sequential) residual attention and MLP.

    Example:
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=2, embedding_dim=8,
      ...     projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1, vocab_size=5)
      >>> block = gpt_neox.build_gpt_neox_block("b", None, cfg)
      >>> type(block.sublayers[0].delta).__name__
      'BranchAndAddTogether'
    """
    _check_config(config, "build_gpt_neox_block")
    return _block(name, init_base_rng, config)


def gpt_neox_from_huggingface_model(
    model: Any,
    upcast_activations_to_float32: bool = False,
    use_layer_stack: bool = False,
) -> model_parts.TransformerLM:
    """Converts a `transformers.GPTNeoXForCausalLM` (Pythia, GPT-NeoX) into a `TransformerLM`.

    Args:
      model: The live Hugging Face model (`model_type` "gpt_neox"), float32 or
        bfloat16.
      upcast_activations_to_float32: Keep the parameters in the model's dtype
        but run the activations in float32.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack`.

    Raises:
      ValueError: for another architecture, an unsupported dtype or config value.

    Example:
      >>> import transformers
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(vocab_size=16,
      ...     hidden_size=16, intermediate_size=16, num_hidden_layers=1,
      ...     num_attention_heads=2))
      >>> gpt_neox.gpt_neox_from_huggingface_model(hf).metadata.common_head_axes
      {'heads': 2}
    """
    return _penzai_hf.convert(
        model,
        ("gpt_neox",),
        "gpt_neox_from_huggingface_model",
        upcast_activations_to_float32=upcast_activations_to_float32,
        use_layer_stack=use_layer_stack,
    )


def _blocks(
    name: str, init_base_rng: jax.Array | None, config: GPTNeoXTransformerConfig
) -> list[Any]:
    """The blocks as a list (`{name}/block_{i}`) or one LayerStack (`{name}/blocks`)."""
    if config.use_layer_stack:
        return [
            nn.LayerStack.from_sublayer_builder(
                _block,
                "blocks",
                config.num_decoder_blocks,
                init_base_rng,
                {"name": f"{name}/blocks", "config": config},
            )
        ]
    blocks = []
    for i in range(config.num_decoder_blocks):
        blocks.append(_block(f"{name}/block_{i}", init_base_rng, config))
    return blocks


def _head(
    name: str,
    init_base_rng: jax.Array | None,
    config: Any,
    table: nn.EmbeddingTable,
) -> list[Any]:
    """Final LayerNorm, then logits from the embedding table or an untied `lm_head`."""
    final_norm = nn.LayerNorm.from_config(
        f"{name}/final_norm",
        init_base_rng,
        {"embedding": config.embedding_dim},
        epsilon=config.layer_norm_eps,
        dtype=config.parameter_dtype,
    )
    return [final_norm, _common.unembedding(name, init_base_rng, config, table)]


def build_gpt_neox_transformer(
    config: GPTNeoXTransformerConfig,
    init_base_rng: jax.Array | None = None,
    name: str = "transformer",
) -> model_parts.TransformerLM:
    """Builds a GPT-NeoX `TransformerLM` from `sk.nn` combinators.

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
      >>> from saikei.models.transformer.variants import gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=4, embedding_dim=32,
      ...     projection_dim=8, mlp_hidden_dim=64, num_decoder_blocks=2, vocab_size=11,
      ...     rotary_pct=0.25)
      >>> lm = gpt_neox.build_gpt_neox_transformer(cfg, jax.random.key(0))
      >>> lm(sk.nx.wrap(jax.numpy.arange(5), "seq")).named_shape
      {'seq': 5, 'vocabulary': 11}
    """
    _check_config(config, "build_gpt_neox_transformer")
    table = _common.token_embedder(name, init_base_rng, config)
    layers: list[Any] = [nn.EmbeddingLookup(table), *_common.to_activation_dtype(config)]
    layers.extend(_blocks(name, init_base_rng, config))
    layers.extend(_head(name, init_base_rng, config, table))
    return _common.transformer_lm(layers, config, {"heads": config.num_heads}, {})
