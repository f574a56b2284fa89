"""The llama-like family: Llama, Mistral, Qwen2/3 and Gemma 1/2/3, configurations of one builder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

from saikei import nn
from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import _common, _penzai_hf


@dataclasses.dataclass(frozen=True)
class RoPESettings:
    """The rotary position embedding of some attention blocks (see `sk.nn.ApplyRoPE`).

    Attributes:
      wavelength: The RoPE base (`rope_theta`).
      scale_factor: Linear RoPE scaling (positions divided by it).
      llama3_scaling: Llama 3.1 frequency scaling `(factor, low_freq_factor,
        high_freq_factor, original_max_position_embeddings)`, or None.

    Example:
      >>> from saikei.models.transformer.variants import llamalike
      >>> llamalike.RoPESettings(10_000.0).scale_factor
      1.0
    """

    wavelength: float
    scale_factor: float = 1.0
    llama3_scaling: tuple[float, float, float, float] | None = None


@dataclasses.dataclass(frozen=True)
class AttentionTypeGlobalCausal:
    """Full causal attention.

    Attributes:
      rope: The RoPE of blocks of this type, or None for the config's
        (`rope_wavelength`, `rope_scale_factor`, `rope_llama3_scaling`).

    Example:
      >>> from saikei.models.transformer.variants import llamalike
      >>> llamalike.AttentionTypeGlobalCausal()
      AttentionTypeGlobalCausal(rope=None)
    """

    rope: RoPESettings | None = None


@dataclasses.dataclass(frozen=True)
class AttentionTypeSlidingWindowCausal:
    """Causal attention that sees only the last `window_size` tokens (itself included).

    Attributes:
      window_size: How many tokens each query sees, itself included.
      rope: The RoPE of blocks of this type, or None for the config's (Gemma 3
        gives its local layers their own RoPE base).

    Example:
      >>> from saikei.models.transformer.variants import llamalike
      >>> llamalike.AttentionTypeSlidingWindowCausal(4).window_size
      4
    """

    window_size: int
    rope: RoPESettings | None = None


AttentionType = AttentionTypeGlobalCausal | AttentionTypeSlidingWindowCausal


@dataclasses.dataclass(frozen=True)
class LlamalikeTransformerConfig:
    """Configuration of a llama-like decoder-only transformer.

    Attributes:
      num_kv_heads: Number of key/value heads.
      query_head_multiplier: Query heads per key/value head (1 is MHA).
      embedding_dim: Residual stream width.
      projection_dim: Width of each head.
      mlp_hidden_dim: Width of the feed-forward hidden layer.
      num_decoder_blocks: Number of blocks.
      vocab_size: Vocabulary size.
      mlp_variant: "swiglu" (SiLU gate) or "geglu_approx" (tanh-GELU gate).
      tie_embedder_and_logits: Decode logits with the embedding table.
      rope_wavelength: RoPE base (`rope_theta`).
      rms_norm_eps: Epsilon of every RMS norm.
      attention_type: One attention type for all blocks, or a sequence of
        types: one per block, or a shorter pattern that repeats.
      use_post_attn_norm: Normalize the attention output before the residual add.
      use_post_ffw_norm: Normalize the feed-forward output before the residual add.
      final_logit_softcap: Tanh soft cap on the logits, or None.
      attn_logits_soft_cap: Tanh soft cap on attention logits, or None.
      query_scaling_factor: "default" (`projection_dim ** -0.5`) or a float.
      parameter_dtype: Dtype of the parameters.
      activation_dtype: Dtype of the activations.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack` (see
        `build_llamalike_transformer` for the layout when the blocks' attention
        types alternate).
      attention_bias: Bias on the query, key and value projections.
      attention_output_bias: Bias on the attention output projection.
      mlp_bias: Bias on the feed-forward projections.
      use_qk_norm: RMS-normalize each query and key head before RoPE.
      rope_scale_factor: Linear RoPE scaling (positions divided by it).
      rope_llama3_scaling: Llama 3.1 RoPE frequency scaling `(factor,
        low_freq_factor, high_freq_factor, original_max_position_embeddings)`,
        or None (see `sk.nn.ApplyRoPE`).
      scale_embeddings: Multiply the token embeddings by `sqrt(embedding_dim)`
        (in the activation dtype), as Gemma does.

    Example:
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=2, query_head_multiplier=2,
      ...     embedding_dim=16, projection_dim=4, mlp_hidden_dim=32, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> cfg.mlp_variant
      'swiglu'
    """

    num_kv_heads: int
    query_head_multiplier: int
    embedding_dim: int
    projection_dim: int
    mlp_hidden_dim: int
    num_decoder_blocks: int
    vocab_size: int
    mlp_variant: Literal["swiglu", "geglu_approx"] = "swiglu"
    tie_embedder_and_logits: bool = False
    rope_wavelength: float = 10_000.0
    rms_norm_eps: float = 1e-6
    attention_type: AttentionType | Sequence[AttentionType] = AttentionTypeGlobalCausal()
    use_post_attn_norm: bool = False
    use_post_ffw_norm: bool = False
    final_logit_softcap: float | None = None
    attn_logits_soft_cap: float | None = None
    query_scaling_factor: float | Literal["default"] = "default"
    parameter_dtype: Any = jnp.float32
    activation_dtype: Any = jnp.float32
    use_layer_stack: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_output_bias: bool = False
    use_qk_norm: bool = False
    rope_scale_factor: float = 1.0
    rope_llama3_scaling: tuple[float, float, float, float] | None = None
    scale_embeddings: bool = False


def _head_axes(config: LlamalikeTransformerConfig) -> tuple[dict[str, int], dict[str, int]]:
    if config.query_head_multiplier == 1:
        return {"heads": config.num_kv_heads}, {}
    if config.num_kv_heads == 1:
        return {}, {"query_heads": config.query_head_multiplier}
    return {"head_groups": config.num_kv_heads}, {"query_heads": config.query_head_multiplier}


def rope_settings_of(
    config: LlamalikeTransformerConfig, attention_type: AttentionType
) -> RoPESettings:
    """The RoPE that blocks of `attention_type` use: the type's own, else the config's.

    Example:
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=1,
      ...     vocab_size=5, rope_wavelength=500.0)
      >>> llamalike.rope_settings_of(cfg, llamalike.AttentionTypeGlobalCausal()).wavelength
      500.0
    """
    if attention_type.rope is not None:
        return attention_type.rope
    return RoPESettings(
        wavelength=config.rope_wavelength,
        scale_factor=config.rope_scale_factor,
        llama3_scaling=config.rope_llama3_scaling,
    )


def _attention(
    name: str,
    rng: jax.Array | None,
    config: LlamalikeTransformerConfig,
    attention_type: AttentionType,
) -> nn.Attention:
    common, query_only = _head_axes(config)
    emb = {"embedding": config.embedding_dim}
    proj = {"projection": config.projection_dim}
    dtype = config.parameter_dtype
    bias = config.attention_bias

    rope_settings = rope_settings_of(config, attention_type)

    def rope() -> nn.ApplyRoPE:
        return nn.ApplyRoPE(
            embedding_axis="projection",
            max_wavelength=rope_settings.wavelength,
            scale_factor=rope_settings.scale_factor,
            llama3_scaling=rope_settings.llama3_scaling,
        )

    def qk_norm(which: str) -> list[Any]:
        if not config.use_qk_norm:
            return []
        return [
            nn.RMSLayerNorm.from_config(
                f"{name}/{which}_norm", rng, proj, epsilon=config.rms_norm_eps, dtype=dtype
            )
        ]

    scale = _common.query_scale(config)
    q_axes = {**common, **query_only}
    q_names = (*q_axes, "seq", "projection")
    k_names = (*common, "kv_seq", "projection")
    logits_names = (*q_axes, "seq", "kv_seq")
    if isinstance(attention_type, AttentionTypeSlidingWindowCausal):
        mask: Any = nn.ApplyCausalSlidingWindowAttentionMask(
            _common.MASKED, sliding_window_size=attention_type.window_size
        )
    elif isinstance(attention_type, AttentionTypeGlobalCausal):
        mask = nn.ApplyCausalAttentionMask(_common.MASKED)
    else:
        raise ValueError(
            f"build_llamalike_transformer: unsupported attention_type {attention_type!r};"
            " use AttentionTypeGlobalCausal() or AttentionTypeSlidingWindowCausal(n)."
        )
    softcap = (
        [nn.TanhSoftCap(config.attn_logits_soft_cap)]
        if config.attn_logits_soft_cap is not None
        else []
    )
    return nn.Attention(
        input_to_query=nn.Sequential(
            [
                _common.projection(f"{name}/query", rng, emb, {**q_axes, **proj}, bias, dtype),
                *qk_norm("query"),
                rope(),
                nn.ConstantRescale(_common.scalar_in(scale, config.activation_dtype)),
            ]
        ),
        input_to_key=nn.Sequential(
            [
                _common.projection(f"{name}/key", rng, emb, {**common, **proj}, bias, dtype),
                *qk_norm("key"),
                rope(),
                nn.RenameAxes(old="seq", new="kv_seq"),
            ]
        ),
        input_to_value=nn.Sequential(
            [
                _common.projection(f"{name}/value", rng, emb, {**common, **proj}, bias, dtype),
                nn.RenameAxes(old="seq", new="kv_seq"),
            ]
        ),
        query_key_to_attn=nn.Sequential(
            [
                nn.NamedEinsum((q_names, k_names), logits_names),
                *softcap,
                mask,
                nn.Softmax("kv_seq"),
            ]
        ),
        attn_value_to_output=nn.Sequential(
            [
                nn.NamedEinsum((logits_names, k_names), (*q_axes, "seq", "projection")),
                _common.projection(
                    f"{name}/output",
                    rng,
                    {**q_axes, **proj},
                    emb,
                    config.attention_output_bias,
                    dtype,
                ),
            ]
        ),
    )


# Module level (not a closure) so that equal configs build equal layers, and a
# rendered model names it in roundtrip mode.
def _gelu_approx(x: jax.Array) -> jax.Array:
    """GELU with the tanh approximation (the "geglu_approx" gate)."""
    return jax.nn.gelu(x, approximate=True)


def _feed_forward(
    name: str, rng: jax.Array | None, config: LlamalikeTransformerConfig
) -> model_parts.TransformerFeedForward:
    emb = {"embedding": config.embedding_dim}
    hidden = {"neurons": config.mlp_hidden_dim}
    dtype = config.parameter_dtype
    if config.mlp_variant == "swiglu":
        act: Any = jax.nn.silu
    elif config.mlp_variant == "geglu_approx":
        act = _gelu_approx
    else:
        raise ValueError(
            f"build_llamalike_transformer: unsupported mlp_variant {config.mlp_variant!r};"
            " use 'swiglu' or 'geglu_approx'."
        )
    bias = config.mlp_bias
    return model_parts.TransformerFeedForward(
        [
            nn.BranchAndMultiplyTogether(
                [
                    nn.NamedGroup(
                        "gate",
                        [
                            _common.projection(
                                f"{name}/gating_linear", rng, emb, hidden, bias, dtype
                            ),
                            nn.Elementwise(act),
                        ],
                    ),
                    _common.projection(f"{name}/value_linear", rng, emb, hidden, bias, dtype),
                ]
            ),
            _common.projection(f"{name}/out_linear", rng, hidden, emb, bias, dtype),
        ]
    )


def _block(
    name: str,
    init_base_rng: jax.Array | None,
    config: LlamalikeTransformerConfig,
    attention_type: AttentionType,
) -> model_parts.TransformerBlock:
    emb = {"embedding": config.embedding_dim}
    eps = config.rms_norm_eps
    dtype = config.parameter_dtype
    rng = init_base_rng

    def norm(which: str) -> nn.RMSLayerNorm:
        return nn.RMSLayerNorm.from_config(f"{name}/{which}", rng, emb, epsilon=eps, dtype=dtype)

    attn = [
        norm("pre_attention_norm"),
        _attention(f"{name}/attention", rng, config, attention_type),
    ]
    if config.use_post_attn_norm:
        attn.append(norm("post_attention_norm"))
    ffw = [norm("pre_ffw_norm"), _feed_forward(f"{name}/mlp", rng, config)]
    if config.use_post_ffw_norm:
        ffw.append(norm("post_ffw_norm"))
    return model_parts.TransformerBlock(
        [nn.Residual(nn.Sequential(attn)), nn.Residual(nn.Sequential(ffw))]
    )


def _attention_types(config: LlamalikeTransformerConfig) -> list[AttentionType]:
    types = config.attention_type
    if isinstance(types, AttentionTypeGlobalCausal | AttentionTypeSlidingWindowCausal):
        return [types] * config.num_decoder_blocks
    types = list(types)
    if not types:
        raise ValueError("build_llamalike_transformer: attention_type is an empty sequence.")
    # A shorter sequence repeats as a pattern, as Gemma-style configs describe layers.
    return [types[i % len(types)] for i in range(config.num_decoder_blocks)]


def _attention_type_at(
    config: LlamalikeTransformerConfig, block_index: int | None, function: str
) -> AttentionType:
    if isinstance(
        config.attention_type, AttentionTypeGlobalCausal | AttentionTypeSlidingWindowCausal
    ):
        return config.attention_type
    if block_index is None:
        raise ValueError(
            f"{function}: config.attention_type is a sequence of per-block types, so pass"
            " block_index to say which block this is."
        )
    types = _attention_types(config)
    if not 0 <= block_index < len(types):
        raise ValueError(
            f"{function}: block_index={block_index} is out of range for"
            f" num_decoder_blocks={config.num_decoder_blocks}."
        )
    return types[block_index]


def build_llamalike_attention(
    name: str,
    init_base_rng: jax.Array | None,
    config: LlamalikeTransformerConfig,
    block_index: int | None = None,
) -> nn.Attention:
    """Builds the attention layer of one llama-like block.

    Args:
      name: Prefix of the parameter labels (`{name}/query.weights`, ...).
      init_base_rng: Base key, or None for parameter slots.
      config: The architecture.
      block_index: Which block this is; needed when `config.attention_type`
        is a sequence of per-block types.

    Returns:
      An `sk.nn.Attention` (queries, keys, values, masked softmax, output).

    Example:
      >>> import jax
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=2, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> attn = llamalike.build_llamalike_attention("attn", jax.random.key(0), cfg)
      >>> attn.input_to_query.sublayers[0].weights.label
      'attn/query.weights'
    """
    attention_type = _attention_type_at(config, block_index, "build_llamalike_attention")
    return _attention(name, init_base_rng, config, attention_type)


def build_llamalike_feedforward(
    name: str, init_base_rng: jax.Array | None, config: LlamalikeTransformerConfig
) -> model_parts.TransformerFeedForward:
    """Builds the gated feed-forward layer of one llama-like block.

    Labels: `{name}/gating_linear`, `{name}/value_linear`, `{name}/out_linear`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> ffw = llamalike.build_llamalike_feedforward("mlp", jax.random.key(0), cfg)
      >>> sorted(p.label for p in sk.unbind_params(ffw)[1])
      ['mlp/gating_linear.weights', 'mlp/out_linear.weights', 'mlp/value_linear.weights']
    """
    return _feed_forward(name, init_base_rng, config)


def build_llamalike_block(
    name: str,
    init_base_rng: jax.Array | None,
    config: LlamalikeTransformerConfig,
    block_index: int | None = None,
) -> model_parts.TransformerBlock:
    """Builds one llama-like block: pre-norm attention and pre-norm feed-forward, each residual.

    Args:
      name: Prefix of the parameter labels (`{name}/attention/...`,
        `{name}/mlp/...`, `{name}/pre_attention_norm/...`, ...).
      init_base_rng: Base key, or None for parameter slots.
      config: The architecture.
      block_index: Which block this is; needed when `config.attention_type`
        is a sequence of per-block types.

    Example:
      >>> import jax
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> type(llamalike.build_llamalike_block("b", None, cfg)).__name__
      'TransformerBlock'
    """
    attention_type = _attention_type_at(config, block_index, "build_llamalike_block")
    return _block(name, init_base_rng, config, attention_type)


def llamalike_from_huggingface_model(
    model: Any,
    upcast_activations_to_float32: bool = False,
    use_layer_stack: bool = False,
) -> model_parts.TransformerLM:
    """Converts a live `transformers` model of any llama-like architecture.

    Accepts Llama, Mistral, Qwen2, Qwen3 and Gemma 1/2/3 (text) models;
    parameters keep the model's dtype (float32 or bfloat16).

    Args:
      model: The live Hugging Face causal LM.
      upcast_activations_to_float32: Run the activations in float32.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack`.

    Raises:
      ValueError: for an architecture outside the family.

    Example:
      >>> import transformers
      >>> from saikei.models.transformer.variants import llamalike
      >>> hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(vocab_size=16,
      ...     hidden_size=8, intermediate_size=16, num_hidden_layers=1,
      ...     num_attention_heads=2, num_key_value_heads=2))
      >>> llamalike.llamalike_from_huggingface_model(hf).metadata.vocab_size
      16
    """
    return _penzai_hf.convert(
        model,
        ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"),
        "llamalike_from_huggingface_model",
        upcast_activations_to_float32=upcast_activations_to_float32,
        use_layer_stack=use_layer_stack,
    )


def layer_stack_period(config: LlamalikeTransformerConfig) -> int:
    """How many consecutive blocks one step of the model's LayerStack holds.

    The smallest `P` such that block `i` has the attention type of block
    `i % P` for every `i`: 1 when all blocks are alike, 2 for Gemma 2's
    alternating local/global layers, 6 for Gemma 3's usual five local layers
    and one global one. See `build_llamalike_transformer` for the layout.

    Example:
      >>> from saikei.models.transformer.variants import llamalike
      >>> local, full = (llamalike.AttentionTypeSlidingWindowCausal(8),
      ...     llamalike.AttentionTypeGlobalCausal())
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=5,
      ...     vocab_size=5, attention_type=(local, full))
      >>> llamalike.layer_stack_period(cfg)
      2
    """
    types = _attention_types(config)
    for period in range(1, len(types)):
        if all(t == types[i % period] for i, t in enumerate(types)):
            return period
    return max(len(types), 1)


def _period_blocks(
    name: str,
    init_base_rng: jax.Array | None,
    config: LlamalikeTransformerConfig,
    attention_types: tuple[AttentionType, ...],
) -> nn.Sequential:
    blocks = []
    for j, attention_type in enumerate(attention_types):
        blocks.append(_block(f"{name}/block_{j}", init_base_rng, config, attention_type))
    return nn.Sequential(blocks)


def _blocks(
    name: str, init_base_rng: jax.Array | None, config: LlamalikeTransformerConfig
) -> list[Any]:
    types = _attention_types(config)

    def listed(indices: range) -> list[Any]:
        return [_block(f"{name}/block_{i}", init_base_rng, config, types[i]) for i in indices]

    if not config.use_layer_stack or not types:
        return listed(range(len(types)))
    period = layer_stack_period(config)
    steps = len(types) // period
    if period == 1:
        builder: Any = _block
        kwargs: dict[str, Any] = {"attention_type": types[0]}
    else:
        builder = _period_blocks
        kwargs = {"attention_types": tuple(types[:period])}
    stack = nn.LayerStack.from_sublayer_builder(
        builder,
        "blocks",
        steps,
        init_base_rng,
        {"name": f"{name}/blocks", "config": config, **kwargs},
    )
    return [stack, *listed(range(steps * period, len(types)))]


def build_llamalike_transformer(
    config: LlamalikeTransformerConfig,
    init_base_rng: jax.Array | None = None,
    name: str = "transformer",
) -> model_parts.TransformerLM:
    """Builds a llama-like `TransformerLM` from `sk.nn` combinators.

    Parameter labels start with `name`. Block `i` is labelled `block_{i}/...`
    (e.g. `transformer/block_3/attention/query.weights`), except under
    `config.use_layer_stack`:

    * when every block has the same attention type, all blocks form one
      `sk.nn.LayerStack` labelled `blocks/...`, whose values have a leading
      `blocks` axis (block `i` is slice `i`);
    * when the attention types repeat with a period `P > 1` (see
      `layer_stack_period`), each step of the stack is a `Sequential` of `P`
      blocks labelled `blocks/block_{j}/...` for `j < P`: block `i` is slice
      `i // P` of `blocks/block_{i % P}/...`. The `num_decoder_blocks % P`
      blocks left over follow the stack as `block_{i}/...`, labelled by their
      index `i` in the model.

    Args:
      config: The architecture.
      init_base_rng: Base key for random parameters, or None for parameter
        slots (to bind loaded weights into).
      name: Prefix of every parameter label.

    Returns:
      The model; call it on token ids with a `seq` axis.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=2, query_head_multiplier=2,
      ...     embedding_dim=16, projection_dim=4, mlp_hidden_dim=32, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> lm(sk.nx.wrap(jax.numpy.arange(5), "seq")).named_shape
      {'seq': 5, 'vocabulary': 11}
    """
    for field in ("num_kv_heads", "query_head_multiplier", "embedding_dim", "projection_dim"):
        value = getattr(config, field)
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"build_llamalike_transformer: config.{field} must be a positive int, got"
                f" {value!r}."
            )
    table = _common.token_embedder(name, init_base_rng, config)
    layers: list[Any] = [nn.EmbeddingLookup(table), *_common.to_activation_dtype(config)]
    if config.scale_embeddings:
        # Rounded to float32 first, then to the activation dtype, as transformers does.
        sqrt_dim = _common.scalar_in(
            float(jnp.asarray(config.embedding_dim**0.5, jnp.float32)), config.activation_dtype
        )
        layers.append(nn.ConstantRescale(sqrt_dim))
    layers.extend(_blocks(name, init_base_rng, config))
    layers.append(
        nn.RMSLayerNorm.from_config(
            f"{name}/final_norm",
            init_base_rng,
            {"embedding": config.embedding_dim},
            epsilon=config.rms_norm_eps,
            dtype=config.parameter_dtype,
        )
    )
    layers.append(_common.unembedding(name, init_base_rng, config, table))
    if config.final_logit_softcap is not None:
        layers.append(nn.TanhSoftCap(config.final_logit_softcap))
    return _common.transformer_lm(layers, config, *_head_axes(config))
