"""Gemma 1, 2 and 3 (text) from the official Flax checkpoints.

Google DeepMind's `gemma` package stores a Gemma model as a tree of arrays
(restored with orbax): `transformer/embedder/input_embedding`,
`transformer/layer_{i}/attn/{qkv_einsum | q_einsum, kv_einsum}/w`,
`.../attn/attn_vec_einsum/w`, `.../attn/{_query_norm,_key_norm}/scale`
(Gemma 3), `.../mlp/{gating_einsum,linear}`, `.../{pre,post}_{attention,ffw}_norm/scale`
and `transformer/final_norm/scale`. `gemma_from_pretrained_checkpoint` turns
that tree into the llama-like `TransformerLM` that `variants.llamalike` builds
(RMS norm scales stored as `1 + scale`, heads split onto named axes).

What a tree cannot tell (soft caps, local/global attention pattern, window,
query scaling, RoPE bases) comes from a preset: one of Google's released
sizes, found from the number of layers and whether the attention has
query/key norms, or a `GemmaPreset` you give for other sizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import jax.numpy as jnp

from saikei.core import Parameter, bind_variables
from saikei.core import named_axes as nx
from saikei.models.transformer import _families, model_parts
from saikei.models.transformer.variants import _llamalike_hf, llamalike

__all__ = ["GEMMA_PRESETS", "GemmaPreset", "gemma_from_pretrained_checkpoint"]


@dataclasses.dataclass(frozen=True)
class GemmaPreset:
    """What a Gemma checkpoint's arrays do not say about its architecture.

    Attributes:
      num_layers: Number of blocks (used to recognize the preset).
      has_qk_norm: Whether the attention normalizes queries and keys (Gemma 3).
      attention_pattern: The blocks' attention, "global" or "local" per block,
        repeating.
      sliding_window_size: How many tokens a "local" block sees (itself included).
      final_logit_softcap: Tanh soft cap on the logits, or None.
      attn_logits_soft_cap: Tanh soft cap on attention logits, or None.
      query_scaling: "head_dim" (`head_dim ** -0.5`) or "embed_dim_div_num_heads"
        (`(embed_dim // num_heads) ** -0.5`, Gemma 2 27B and Gemma 3 27B).
      local_rope_wavelength: RoPE base of "local" blocks.
      global_rope_wavelength: RoPE base of "global" blocks.
      global_rope_scale_factor: Linear RoPE scaling of "global" blocks.
      transpose_gating_einsum: Whether `mlp/gating_einsum` is stored as
        `(2, hidden, embed)`; only consulted when the two sizes are equal
        (otherwise the shape says it).

    Example:
      >>> from saikei.models.transformer.variants import gemma
      >>> gemma.GEMMA_PRESETS["gemma2_9b"].attention_pattern
      ('local', 'global')
    """

    num_layers: int
    has_qk_norm: bool = False
    attention_pattern: tuple[Literal["global", "local"], ...] = ("global",)
    sliding_window_size: int | None = None
    final_logit_softcap: float | None = None
    attn_logits_soft_cap: float | None = None
    query_scaling: Literal["head_dim", "embed_dim_div_num_heads"] = "head_dim"
    local_rope_wavelength: float = 10_000.0
    global_rope_wavelength: float = 10_000.0
    global_rope_scale_factor: float = 1.0
    transpose_gating_einsum: bool = False


def _gemma2(layers: int, **kwargs: Any) -> GemmaPreset:
    return GemmaPreset(
        num_layers=layers,
        attention_pattern=("local", "global"),
        sliding_window_size=4096,
        final_logit_softcap=30.0,
        attn_logits_soft_cap=50.0,
        **kwargs,
    )


def _gemma3(layers: int, window: int, **kwargs: Any) -> GemmaPreset:
    return GemmaPreset(
        num_layers=layers,
        has_qk_norm=True,
        attention_pattern=("local",) * 5 + ("global",),
        sliding_window_size=window,
        global_rope_wavelength=1_000_000.0,
        transpose_gating_einsum=True,
        **kwargs,
    )


GEMMA_PRESETS: dict[str, GemmaPreset] = {
    "gemma_2b": GemmaPreset(num_layers=18),
    "gemma_7b": GemmaPreset(num_layers=28),
    "gemma2_2b": _gemma2(26),
    "gemma2_9b": _gemma2(42, transpose_gating_einsum=True),
    "gemma2_27b": _gemma2(
        46, query_scaling="embed_dim_div_num_heads", transpose_gating_einsum=True
    ),
    "gemma3_1b": _gemma3(26, 512),
    "gemma3_4b": _gemma3(34, 1024, global_rope_scale_factor=8.0),
    "gemma3_12b": _gemma3(48, 1024, global_rope_scale_factor=8.0),
    "gemma3_27b": _gemma3(
        62, 1024, global_rope_scale_factor=8.0, query_scaling="embed_dim_div_num_heads"
    ),
}


def _flatten(tree: Any, prefix: tuple[str, ...], out: dict[tuple[str, ...], Any]) -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            _flatten(value, (*prefix, *str(key).split("/")), out)
    else:
        out[prefix] = tree


def _canonical(ckpt_params: Mapping[str, Any]) -> dict[str, Any]:
    """Every array by its path without the `transformer/` prefix and the mlp `w` wrappers.

    Accepts the tree as orbax restores it (`{"transformer/layer_0/attn/q_einsum":
    {"w": ...}}`), as `gemma.params.load_and_format_params` nests it, or as
    `flax` `init` returns it (`{"params": {...}}`).
    """
    flat: dict[tuple[str, ...], Any] = {}
    _flatten(ckpt_params, (), flat)
    out: dict[str, Any] = {}
    for path, value in flat.items():
        parts = list(path)
        if parts[:1] == ["params"]:
            parts = parts[1:]
        if parts[:1] == ["transformer"]:
            parts = parts[1:]
        if len(parts) >= 2 and parts[-3:-2] == ["mlp"] and parts[-1] == "w":
            parts = parts[:-1]
        out["/".join(parts)] = value
    return out


def _pick_preset(
    arrays: Mapping[str, Any], num_layers: int, preset_name: str | GemmaPreset
) -> GemmaPreset:
    if isinstance(preset_name, GemmaPreset):
        preset = preset_name
    elif preset_name == "auto":
        has_qk_norm = "layer_0/attn/_query_norm/scale" in arrays
        found = [
            name
            for name, p in GEMMA_PRESETS.items()
            if p.num_layers == num_layers and p.has_qk_norm == has_qk_norm
        ]
        if len(found) != 1:
            raise ValueError(
                f"gemma_from_pretrained_checkpoint: no released Gemma has {num_layers} layers"
                f" {'with' if has_qk_norm else 'without'} query/key norms; pass"
                f" preset_name= one of {sorted(GEMMA_PRESETS)} or a GemmaPreset(...) that"
                " describes the checkpoint."
            )
        preset = GEMMA_PRESETS[found[0]]
    elif preset_name in GEMMA_PRESETS:
        preset = GEMMA_PRESETS[preset_name]
    else:
        raise ValueError(
            f"gemma_from_pretrained_checkpoint: unknown preset_name={preset_name!r}; use 'auto',"
            f" one of {sorted(GEMMA_PRESETS)}, or a GemmaPreset(...)."
        )
    if preset.num_layers != num_layers:
        raise ValueError(
            f"gemma_from_pretrained_checkpoint: the preset is for {preset.num_layers} layers but"
            f" the checkpoint has {num_layers} (layer_0 ... layer_{num_layers - 1})."
        )
    return preset


def _get(arrays: Mapping[str, Any], key: str, ndim: int) -> jnp.ndarray:
    if key not in arrays:
        raise ValueError(
            f"gemma_from_pretrained_checkpoint: the checkpoint has no {key!r}; expected the"
            " official Gemma parameter tree (transformer/embedder/input_embedding,"
            " transformer/layer_{i}/attn/..., ...)."
        )
    value = jnp.asarray(arrays[key])
    if value.ndim != ndim:
        raise ValueError(
            f"gemma_from_pretrained_checkpoint: {key!r} has shape {value.shape}; expected"
            f" {ndim} dimensions."
        )
    return value


def _config(
    arrays: Mapping[str, Any],
    preset: GemmaPreset,
    num_layers: int,
    upcast_activations_to_float32: bool,
    use_layer_stack: bool,
) -> llamalike.LlamalikeTransformerConfig:
    embedding = _get(arrays, "embedder/input_embedding", 2)
    vocab, embed_dim = embedding.shape
    num_heads, head_dim, _ = _get(arrays, "layer_0/attn/attn_vec_einsum/w", 3).shape
    if "layer_0/attn/qkv_einsum/w" in arrays:
        num_kv_heads = num_heads
    else:
        num_kv_heads = _get(arrays, "layer_0/attn/kv_einsum/w", 4).shape[1]
    hidden = _get(arrays, "layer_0/mlp/linear", 2).shape[0]
    if preset.query_scaling == "head_dim":
        scale = head_dim**-0.5
    else:
        scale = (embed_dim // num_heads) ** -0.5
    local = llamalike.AttentionTypeSlidingWindowCausal(
        preset.sliding_window_size or 0,
        rope=llamalike.RoPESettings(preset.local_rope_wavelength),
    )
    full = llamalike.AttentionTypeGlobalCausal(
        rope=llamalike.RoPESettings(
            preset.global_rope_wavelength, scale_factor=preset.global_rope_scale_factor
        )
    )
    if "local" in preset.attention_pattern and not preset.sliding_window_size:
        raise ValueError(
            "gemma_from_pretrained_checkpoint: the preset has local blocks but no"
            " sliding_window_size."
        )
    dtype = embedding.dtype
    return llamalike.LlamalikeTransformerConfig(
        num_kv_heads=num_kv_heads,
        query_head_multiplier=num_heads // num_kv_heads,
        embedding_dim=embed_dim,
        projection_dim=head_dim,
        mlp_hidden_dim=hidden,
        num_decoder_blocks=num_layers,
        vocab_size=vocab,
        mlp_variant="geglu_approx",
        tie_embedder_and_logits=True,
        rms_norm_eps=1e-6,
        attention_type=tuple(local if t == "local" else full for t in preset.attention_pattern),
        use_post_attn_norm="layer_0/post_attention_norm/scale" in arrays,
        use_post_ffw_norm="layer_0/post_ffw_norm/scale" in arrays,
        final_logit_softcap=preset.final_logit_softcap,
        attn_logits_soft_cap=preset.attn_logits_soft_cap,
        query_scaling_factor=scale,
        parameter_dtype=dtype,
        activation_dtype=jnp.float32 if upcast_activations_to_float32 else dtype,
        use_layer_stack=use_layer_stack,
        use_qk_norm=preset.has_qk_norm,
        scale_embeddings=True,
    )


def _layer_values(
    arrays: Mapping[str, Any],
    i: int,
    config: llamalike.LlamalikeTransformerConfig,
    preset: GemmaPreset,
) -> dict[str, nx.NamedArray]:
    p = f"layer_{i}"
    k, g = config.num_kv_heads, config.query_head_multiplier
    d, h = config.embedding_dim, config.projection_dim
    # Query head n of the checkpoint is head (n // g) of group, (n % g) within it.
    if g == 1:
        q_names, kv_names = ("heads",), ("heads",)
    elif k == 1:
        q_names, kv_names = ("query_heads",), ()
    else:
        q_names, kv_names = ("head_groups", "query_heads"), ("head_groups",)
    q_sizes = (k * g,) if g == 1 else ((g,) if k == 1 else (k, g))
    if f"{p}/attn/qkv_einsum/w" in arrays:
        qkv = _get(arrays, f"{p}/attn/qkv_einsum/w", 4)  # (3, N, D, H)
        query, key, value = qkv[0], qkv[1], qkv[2]
    else:
        query = _get(arrays, f"{p}/attn/q_einsum/w", 3)  # (N, D, H)
        kv = _get(arrays, f"{p}/attn/kv_einsum/w", 4)  # (2, K, D, H)
        key, value = kv[0], kv[1]
    kv_sizes = (k,) if kv_names else ()
    values = {
        "attention/query.weights": nx.wrap(
            query.reshape(*q_sizes, d, h), *q_names, "embedding", "projection"
        ),
        "attention/key.weights": nx.wrap(
            key.reshape(*kv_sizes, d, h), *kv_names, "embedding", "projection"
        ),
        "attention/value.weights": nx.wrap(
            value.reshape(*kv_sizes, d, h), *kv_names, "embedding", "projection"
        ),
        "attention/output.weights": nx.wrap(
            _get(arrays, f"{p}/attn/attn_vec_einsum/w", 3).reshape(*q_sizes, h, d),
            *q_names,
            "projection",
            "embedding",
        ),
    }
    norms = [("pre_attention_norm", "pre_attention_norm"), ("pre_ffw_norm", "pre_ffw_norm")]
    if config.use_post_attn_norm:
        norms.append(("post_attention_norm", "post_attention_norm"))
    if config.use_post_ffw_norm:
        norms.append(("post_ffw_norm", "post_ffw_norm"))
    for ours, theirs in norms:
        scale = _get(arrays, f"{p}/{theirs}/scale", 1)
        values[f"{ours}/scale.weights"] = nx.wrap(1 + scale, "embedding")
    if config.use_qk_norm:
        for which in ("query", "key"):
            scale = _get(arrays, f"{p}/attn/_{which}_norm/scale", 1)
            values[f"attention/{which}_norm/scale.weights"] = nx.wrap(1 + scale, "projection")
    gating = _get(arrays, f"{p}/mlp/gating_einsum", 3)
    n = config.mlp_hidden_dim
    if gating.shape not in ((2, d, n), (2, n, d)):
        raise ValueError(
            f"gemma_from_pretrained_checkpoint: {p}/mlp/gating_einsum has shape {gating.shape};"
            f" expected (2, {d}, {n}) or (2, {n}, {d})."
        )
    transposed = preset.transpose_gating_einsum if d == n else gating.shape[1] == n
    gate, up = (gating[0].T, gating[1].T) if transposed else (gating[0], gating[1])
    values["mlp/gating_linear.weights"] = nx.wrap(gate, "embedding", "neurons")
    values["mlp/value_linear.weights"] = nx.wrap(up, "embedding", "neurons")
    values["mlp/out_linear.weights"] = nx.wrap(
        _get(arrays, f"{p}/mlp/linear", 2), "neurons", "embedding"
    )
    return values


def gemma_from_pretrained_checkpoint(
    ckpt_params: Mapping[str, Any],
    upcast_activations_to_float32: bool = False,
    use_layer_stack: bool = False,
    preset_name: str | GemmaPreset = "auto",
) -> model_parts.TransformerLM:
    """Builds a Gemma `TransformerLM` from the official Flax parameter tree.

    Args:
      ckpt_params: The checkpoint's parameters: as orbax restores an official
        Gemma checkpoint (`{"transformer/layer_0/attn/q_einsum": {"w": ...}, ...}`),
        as the `gemma` package nests them (`{"transformer": {"layer_0": ...}}`)
        or as a Flax `init` returns them (`{"params": {...}}`).
      upcast_activations_to_float32: Keep the parameters in the checkpoint's
        dtype but run the activations in float32.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack` (for Gemma 2
        and 3, one step holds one period of the local/global pattern).
      preset_name: "auto" (recognize a released size by its number of layers
        and query/key norms), a name in `GEMMA_PRESETS`, or a `GemmaPreset`.

    Returns:
      The model; parameters keep the checkpoint's dtype and RMS norm scales
      hold `1 + scale`.

    Raises:
      ValueError: naming a missing or misshapen array, or a preset that does
        not fit.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import gemma
      >>> d, h, n, f = 8, 4, 2, 16
      >>> layer = {"pre_attention_norm/scale": np.zeros(d), "pre_ffw_norm/scale": np.zeros(d),
      ...     "attn/qkv_einsum": {"w": np.ones((3, n, d, h))},
      ...     "attn/attn_vec_einsum": {"w": np.ones((n, h, d))},
      ...     "mlp/gating_einsum": {"w": np.ones((2, d, f))}, "mlp/linear": {"w": np.ones((f, d))}}
      >>> tree = {"transformer/embedder": {"input_embedding": np.ones((10, d), np.float32)},
      ...     "transformer/final_norm": {"scale": np.zeros(d)},
      ...     **{f"transformer/layer_0/{k}": v for k, v in layer.items()}}
      >>> lm = gemma.gemma_from_pretrained_checkpoint(tree, preset_name=gemma.GemmaPreset(1))
      >>> lm.metadata.common_head_axes
      {'heads': 2}
    """
    arrays = _canonical(ckpt_params)
    layer_ids = sorted(
        {int(k.split("/")[0][len("layer_") :]) for k in arrays if k.startswith("layer_")}
    )
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        raise ValueError(
            "gemma_from_pretrained_checkpoint: expected layers layer_0 ... layer_{n-1} in the"
            f" checkpoint, found {[f'layer_{i}' for i in layer_ids] or 'none'}."
        )
    num_layers = len(layer_ids)
    preset = _pick_preset(arrays, num_layers, preset_name)
    config = _config(arrays, preset, num_layers, upcast_activations_to_float32, use_layer_stack)
    per_layer = [_layer_values(arrays, i, config, preset) for i in range(num_layers)]
    values = _llamalike_hf._arrange(
        config,
        num_layers,
        lambda indices: _families.arrange_blocks([per_layer[i] for i in indices], True),
        lambda i: per_layer[i],
    )
    values["embedder.embeddings"] = nx.wrap(
        _get(arrays, "embedder/input_embedding", 2), "vocabulary", "embedding"
    )
    values["final_norm/scale.weights"] = nx.wrap(
        1 + _get(arrays, "final_norm/scale", 1), "embedding"
    )
    name = "transformer"
    model = llamalike.build_llamalike_transformer(config, None, name)
    dtype = config.parameter_dtype
    params = [Parameter(label=f"{name}/{k}", value=v.astype(dtype)) for k, v in values.items()]
    return bind_variables(model, params)
