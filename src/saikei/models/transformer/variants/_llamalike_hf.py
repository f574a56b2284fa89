"""Hugging Face layouts of the llama-like family (Llama, Mistral, Qwen2/3, Gemma 1/2/3).

Translates `config.json` dicts and checkpoint tensor names to and from
`LlamalikeTransformerConfig` and saikei parameter labels (see
`saikei.models.transformer._families` for the contract, and
`build_llamalike_transformer` for the labels, LayerStack layouts included).

Gemma's RMS norms scale by `1 + w`, where the checkpoint holds `w`. Our
`RMSLayerNorm` scale holds `1 + w` (as GGUF files do): `params_from_hf` adds 1
to every Gemma norm weight (in float32) and `params_to_hf` subtracts it again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from saikei.core import named_axes as nx
from saikei.models.transformer import _families
from saikei.models.transformer.variants import _common, _hf_tables, llamalike
from saikei.models.transformer.variants._hf_tables import HFTensor

_GEMMA_TYPES = ("gemma", "gemma2", "gemma3_text")
_SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3", *_GEMMA_TYPES)
# The transformers class of each model_type (config.json "architectures"; the GGUF
# reader writes it too).
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}
_ACTIVATIONS = {"silu": "swiglu", "gelu_pytorch_tanh": "geglu_approx"}
_unsupported = _families.unsupported


def _get(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    """`cfg[key]`, or `default` when the key is missing or null."""
    value = cfg.get(key)
    return default if value is None else value


def _check_model_type(model_type: Any) -> None:
    if model_type in _SUPPORTED_TYPES:
        return
    hint = f"Use one of {_SUPPORTED_TYPES}."
    if model_type == "gemma3":
        hint = (
            "That is the multimodal Gemma 3 config; saikei loads its text model, whose"
            " config is the 'text_config' entry (model_type 'gemma3_text'). " + hint
        )
    raise _unsupported("model_type", model_type, str(model_type), hint)


def _rope_settings(
    params: Mapping[str, Any], model_type: str, where: str = ""
) -> llamalike.RoPESettings:
    """One flat HF rope dict (`rope_type`/`type`, `rope_theta`, `factor`, ...) to ours."""
    rope_type = params.get("rope_type", params.get("type", "default"))
    theta = float(params.get("rope_theta", 10_000.0))
    factor = params.get("factor")
    hint = f"It is set in {where}. " if where else ""
    partial = params.get("partial_rotary_factor", 1.0)
    if partial not in (1, 1.0, None):
        raise _unsupported("partial_rotary_factor", partial, model_type, hint.strip())
    if rope_type == "default":
        return llamalike.RoPESettings(theta)
    if rope_type == "linear":
        return llamalike.RoPESettings(theta, scale_factor=float(factor))
    if rope_type == "llama3":
        llama3 = (
            float(factor),
            float(params["low_freq_factor"]),
            float(params["high_freq_factor"]),
            float(params["original_max_position_embeddings"]),
        )
        return llamalike.RoPESettings(theta, llama3_scaling=llama3)
    raise _unsupported(
        "rope_type",
        rope_type,
        model_type,
        f"{hint}Supported rope types: 'default', 'linear', 'llama3'.",
    )


def _rope(cfg: Mapping[str, Any], model_type: str) -> llamalike.RoPESettings:
    """The one RoPE of a config that has one: `rope_parameters` over the older keys."""
    merged = {
        "rope_theta": _get(cfg, "rope_theta", 10_000.0),
        "partial_rotary_factor": cfg.get("partial_rotary_factor", 1.0),
        **(cfg.get("rope_scaling") or {}),
        **(cfg.get("rope_parameters") or {}),
    }
    return _rope_settings(merged, model_type)


def _gemma3_ropes(
    cfg: Mapping[str, Any],
) -> tuple[llamalike.RoPESettings, llamalike.RoPESettings]:
    """Gemma 3's (global, local) RoPE, read as transformers 5 reads them.

    transformers 5 keys `rope_parameters` by layer type; older configs give the
    global base as `rope_theta` (scaled by `rope_scaling`) and the local one as
    `rope_local_base_freq`.
    """
    params = cfg.get("rope_parameters") or {}
    full = dict(params.get("full_attention") or {"rope_type": "default"})
    full.update(cfg.get("rope_scaling") or {})
    full.setdefault("rope_theta", _get(cfg, "rope_theta", 1_000_000.0))
    local = dict(params.get("sliding_attention") or {"rope_type": "default"})
    local.setdefault("rope_theta", _get(cfg, "rope_local_base_freq", 10_000.0))
    return (
        _rope_settings(full, "gemma3_text", "rope_parameters['full_attention']"),
        _rope_settings(local, "gemma3_text", "rope_parameters['sliding_attention']"),
    )


def _layer_types(cfg: Mapping[str, Any], model_type: str) -> Any:
    layer_types = cfg.get("layer_types")
    if layer_types is not None:
        return layer_types
    n = cfg["num_hidden_layers"]
    # The defaults of transformers' Gemma2Config and Gemma3TextConfig.
    if model_type == "gemma2":
        return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    if model_type == "gemma3_text":
        pattern = _get(cfg, "sliding_window_pattern", _get(cfg, "_sliding_window_pattern", 6))
        return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    return None


def _attention_types(cfg: Mapping[str, Any], model_type: str) -> Any:
    if model_type == "gemma":
        return llamalike.AttentionTypeGlobalCausal()
    if model_type in ("gemma2", "gemma3_text"):
        window = cfg.get("sliding_window", 4096)
    else:
        window = cfg.get("sliding_window")
    layer_types = _layer_types(cfg, model_type)
    if layer_types is None:
        if model_type == "mistral" and window is not None:
            return llamalike.AttentionTypeSlidingWindowCausal(int(window))
        return llamalike.AttentionTypeGlobalCausal()
    types: list[Any] = []
    for i, layer_type in enumerate(layer_types):
        if layer_type == "full_attention":
            types.append(llamalike.AttentionTypeGlobalCausal())
        elif layer_type == "sliding_attention" and window is not None:
            types.append(llamalike.AttentionTypeSlidingWindowCausal(int(window)))
        else:
            raise _unsupported(
                f"layer_types[{i}]",
                layer_type,
                model_type,
                "Supported: 'full_attention', 'sliding_attention' (with sliding_window set).",
            )
    if len(types) != cfg["num_hidden_layers"]:
        raise _unsupported(
            "layer_types",
            layer_types,
            model_type,
            f"It must have num_hidden_layers={cfg['num_hidden_layers']} entries.",
        )
    if types and all(t == types[0] for t in types):
        # One type for every layer (transformers 5 spells out layer_types even
        # then): keep the short form, so config_to_hf/config_from_hf round-trip.
        return types[0]
    return tuple(types)


def _activation(cfg: Mapping[str, Any], model_type: str) -> str:
    # transformers' Gemma 2 and 3 read `hidden_activation`, the others `hidden_act`.
    if model_type in ("gemma2", "gemma3_text"):
        field, act = "hidden_activation", cfg.get("hidden_activation", "gelu_pytorch_tanh")
    elif model_type == "gemma":
        field, act = "hidden_act", cfg.get("hidden_act", "gelu_pytorch_tanh")
        # GemmaConfig turns the legacy "gelu" of the original releases into the tanh form.
        act = "gelu_pytorch_tanh" if act == "gelu" else act
    else:
        field, act = "hidden_act", cfg.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise _unsupported(field, act, model_type, f"Use one of {list(_ACTIVATIONS)}.")
    return _ACTIVATIONS[act]


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def config_from_hf(hf_config: Any) -> llamalike.LlamalikeTransformerConfig:
    """Translates a `transformers` Llama/Mistral/Qwen2/Qwen3/Gemma 1-3 config into ours.

    Args:
      hf_config: A `config.json` dict (or a `transformers.PretrainedConfig`).

    Returns:
      The matching `LlamalikeTransformerConfig` (float32).

    Raises:
      ValueError: naming the field and value of any unsupported setting.

    Example:
      >>> from saikei.models.transformer.variants import _llamalike_hf
      >>> cfg = _llamalike_hf.config_from_hf({"model_type": "llama",
      ...     "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
      ...     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})
      >>> cfg.query_head_multiplier, cfg.projection_dim
      (2, 4)
      >>> gemma2 = _llamalike_hf.config_from_hf({"model_type": "gemma2",
      ...     "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "head_dim": 4,
      ...     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
      ...     "query_pre_attn_scalar": 16, "sliding_window": 4})
      >>> gemma2.query_scaling_factor, gemma2.attention_type[0].window_size
      (0.25, 4)
    """
    cfg = dict(hf_config if isinstance(hf_config, dict) else hf_config.to_dict())
    model_type = cfg.get("model_type")
    _check_model_type(model_type)
    gemma = model_type in _GEMMA_TYPES
    gemma2_or_3 = model_type in ("gemma2", "gemma3_text")
    if cfg.get("use_bidirectional_attention"):
        raise _unsupported(
            "use_bidirectional_attention",
            cfg["use_bidirectional_attention"],
            model_type,
            "saikei builds causal language models only.",
        )
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise _unsupported(
            "num_key_value_heads", kv_heads, model_type, f"It must divide {heads} heads."
        )
    mlp_variant = _activation(cfg, model_type)
    if cfg.get("pretraining_tp", 1) not in (1, None):
        raise _unsupported("pretraining_tp", cfg["pretraining_tp"], model_type)
    # Qwen2 always biases q/k/v (not o); elsewhere `attention_bias` covers q/k/v/o.
    output_bias = model_type in ("llama", "qwen3", *_GEMMA_TYPES) and bool(
        cfg.get("attention_bias")
    )
    attention_bias = model_type == "qwen2" or output_bias
    attention_type = _attention_types(cfg, model_type)
    if model_type == "gemma3_text":
        rope, local_rope = _gemma3_ropes(cfg)

        def with_local_rope(t: Any) -> Any:
            if isinstance(t, llamalike.AttentionTypeSlidingWindowCausal):
                return dataclasses.replace(t, rope=local_rope)
            return t

        if isinstance(attention_type, tuple):
            attention_type = tuple(with_local_rope(t) for t in attention_type)
        else:
            attention_type = with_local_rope(attention_type)
    else:
        rope = _rope(cfg, model_type)
    query_scale: float | str = "default"
    attn_softcap = final_softcap = None
    if gemma2_or_3:
        query_scale = float(_get(cfg, "query_pre_attn_scalar", 256)) ** -0.5
        gemma2 = model_type == "gemma2"
        attn_softcap = _optional_float(cfg.get("attn_logit_softcapping", 50.0 if gemma2 else None))
        final_softcap = _optional_float(
            cfg.get("final_logit_softcapping", 30.0 if gemma2 else None)
        )
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    return llamalike.LlamalikeTransformerConfig(
        num_kv_heads=kv_heads,
        query_head_multiplier=heads // kv_heads,
        embedding_dim=cfg["hidden_size"],
        projection_dim=head_dim,
        mlp_hidden_dim=cfg["intermediate_size"],
        num_decoder_blocks=cfg["num_hidden_layers"],
        vocab_size=cfg["vocab_size"],
        mlp_variant=mlp_variant,  # type: ignore[arg-type]
        tie_embedder_and_logits=bool(cfg.get("tie_word_embeddings", gemma)),
        rope_wavelength=rope.wavelength,
        rope_scale_factor=rope.scale_factor,
        rope_llama3_scaling=rope.llama3_scaling,
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        attention_type=attention_type,
        use_post_attn_norm=gemma2_or_3,
        use_post_ffw_norm=gemma2_or_3,
        final_logit_softcap=final_softcap,
        attn_logits_soft_cap=attn_softcap,
        query_scaling_factor=query_scale,  # type: ignore[arg-type]
        attention_bias=attention_bias,
        attention_output_bias=output_bias,
        # transformers' Gemma MLPs have no biases, whatever the config says.
        mlp_bias=not gemma and bool(cfg.get("mlp_bias", False)),
        use_qk_norm=model_type in ("qwen3", "gemma3_text"),
        scale_embeddings=gemma,
    )


def _norm_rows(
    config: llamalike.LlamalikeTransformerConfig, model_type: str
) -> list[tuple[str, str]]:
    """(our norm label, HF norm module) pairs of one block."""
    if model_type in ("gemma2", "gemma3_text"):
        # Gemma 2/3's `post_attention_layernorm` is the norm *after* attention;
        # the pre-feed-forward norm has a name of its own.
        pairs = [("pre_attention_norm", "input_layernorm")]
        if config.use_post_attn_norm:
            pairs.append(("post_attention_norm", "post_attention_layernorm"))
        pairs.append(("pre_ffw_norm", "pre_feedforward_layernorm"))
        if config.use_post_ffw_norm:
            pairs.append(("post_ffw_norm", "post_feedforward_layernorm"))
        return pairs
    if config.use_post_attn_norm or config.use_post_ffw_norm:
        raise ValueError(
            f"a {model_type} checkpoint has no post-attention or post-feed-forward norms, but"
            " this config uses them (use_post_attn_norm / use_post_ffw_norm). Use model_type"
            " 'gemma2' or 'gemma3_text', whose blocks have them."
        )
    return [("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm")]


def _norm_offset(model_type: str) -> float:
    """What our norm scales add to the checkpoint's weights (see the module docstring)."""
    return 1.0 if model_type in _GEMMA_TYPES else 0.0


def _layer_tensors(
    config: llamalike.LlamalikeTransformerConfig, prefix: str, model_type: str
) -> list[HFTensor]:
    hd = config.projection_dim
    common, query_only = llamalike._head_axes(config)
    q_proj = {**common, **query_only, "projection": hd}
    kv_proj = {**common, "projection": hd}
    emb, neurons = {"embedding": config.embedding_dim}, {"neurons": config.mlp_hidden_dim}
    att = f"{prefix}.self_attn"
    offset = _norm_offset(model_type)
    bias = config.attention_bias
    tensors = [
        *_hf_tables.linear("attention/query", f"{att}.q_proj", q_proj, emb, bias=bias),
        *_hf_tables.linear("attention/key", f"{att}.k_proj", kv_proj, emb, bias=bias),
        *_hf_tables.linear("attention/value", f"{att}.v_proj", kv_proj, emb, bias=bias),
        *_hf_tables.linear(
            "attention/output", f"{att}.o_proj", emb, q_proj, bias=config.attention_output_bias
        ),
    ]
    if config.use_qk_norm:
        for which, hf in (("query", "q_norm"), ("key", "k_norm")):
            tensors.append(
                _hf_tables.value(
                    f"{att}.{hf}.weight",
                    f"attention/{which}_norm/scale.weights",
                    {"projection": hd},
                    offset,
                )
            )
    for label, hf in _norm_rows(config, model_type):
        tensors.append(
            _hf_tables.value(f"{prefix}.{hf}.weight", f"{label}/scale.weights", emb, offset)
        )
    for which, hf, out_axes, in_axes in (
        ("gating_linear", "gate_proj", neurons, emb),
        ("value_linear", "up_proj", neurons, emb),
        ("out_linear", "down_proj", emb, neurons),
    ):
        tensors += _hf_tables.linear(
            f"mlp/{which}", f"{prefix}.mlp.{hf}", out_axes, in_axes, bias=config.mlp_bias
        )
    return tensors


def _global_tensors(
    config: llamalike.LlamalikeTransformerConfig, model_type: str
) -> list[HFTensor]:
    d, v = config.embedding_dim, config.vocab_size
    tensors = [
        _hf_tables.value(
            "model.embed_tokens.weight", "embedder.embeddings", {"vocabulary": v, "embedding": d}
        ),
        _hf_tables.value(
            "model.norm.weight",
            "final_norm/scale.weights",
            {"embedding": d},
            _norm_offset(model_type),
        ),
    ]
    if not config.tie_embedder_and_logits:
        tensors.append(
            _hf_tables.value("lm_head.weight", "lm_head.weights", {"vocabulary": v, "embedding": d})
        )
    return tensors


def _arrange(
    config: llamalike.LlamalikeTransformerConfig,
    num_layers: int,
    read_stacked: Callable[[list[int]], dict[str, nx.NamedArray]],
    read_one: Callable[[int], dict[str, nx.NamedArray]],
) -> dict[str, nx.NamedArray]:
    """Places per-block values under the labels `build_llamalike_transformer` gives them.

    `read_stacked(indices)` gives those blocks' values stacked (keys
    `blocks/{label}`), `read_one(i)` block `i`'s (keys `{label}`).
    """
    period = llamalike.layer_stack_period(config) if config.use_layer_stack else 0
    steps = num_layers // period if period else 0
    out: dict[str, nx.NamedArray] = {}
    for j in range(period if steps else 0):
        prefix = "blocks/" if period == 1 else f"blocks/block_{j}/"
        for key, value in read_stacked(list(range(j, steps * period, period))).items():
            out[prefix + key[len("blocks/") :]] = value
    for i in range(steps * period, num_layers):
        for key, value in read_one(i).items():
            out[f"block_{i}/{key}"] = value
    return out


def _split(
    config: llamalike.LlamalikeTransformerConfig, values: Mapping[str, nx.NamedArray]
) -> list[dict[str, nx.NamedArray]]:
    """The inverse of `_arrange`: per-block values keyed without the block prefix."""
    n = config.num_decoder_blocks
    period = llamalike.layer_stack_period(config) if config.use_layer_stack and n else 1
    if period == 1:
        return _families.split_blocks(values, n, config.use_layer_stack)
    layers: list[dict[str, nx.NamedArray]] = [{} for _ in range(n)]
    for key, value in values.items():
        if key.startswith("blocks/block_"):
            j, _, rest = key[len("blocks/block_") :].partition("/")
            for step in range(n // period):
                layers[step * period + int(j)][rest] = value[{"blocks": step}]
        elif key.startswith("block_"):
            index, _, rest = key[len("block_") :].partition("/")
            layers[int(index)][rest] = value
    return layers


def params_from_hf(
    config: llamalike.LlamalikeTransformerConfig, model_type: str, get: _families.TensorGetter
) -> dict[str, nx.NamedArray]:
    """Reads a llama-like checkpoint's tensors into our parameter values (see `_families`).

    Gemma norm weights `w` become scales `1 + w` (see the module docstring).

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _llamalike_hf, llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=0,
      ...     vocab_size=5)
      >>> values = _llamalike_hf.params_from_hf(cfg, "llama", lambda key, shape: np.ones(shape))
      >>> values["lm_head.weights"].named_shape
      {'vocabulary': 5, 'embedding': 4}
      >>> gemma = _llamalike_hf.params_from_hf(cfg, "gemma", lambda key, shape: np.zeros(shape))
      >>> gemma["final_norm/scale.weights"].unwrap("embedding").tolist()
      [1.0, 1.0, 1.0, 1.0]
    """

    n = config.num_decoder_blocks
    layers = [_layer_tensors(config, f"model.layers.{i}", model_type) for i in range(n)]
    global_values = _hf_tables.read_tensors(_global_tensors(config, model_type), get)
    blocks = _arrange(
        config,
        n,
        lambda indices: _hf_tables.read_stacked([layers[i] for i in indices], get),
        lambda i: _hf_tables.read_tensors(layers[i], get),
    )
    return {**global_values, **blocks}


def params_to_hf(
    config: llamalike.LlamalikeTransformerConfig,
    model_type: str,
    values: Mapping[str, nx.NamedArray],
) -> dict[str, Any]:
    """The inverse of `params_from_hf`: our parameter values as HF-named numpy arrays.

    Gemma norm scales lose the 1 that `params_from_hf` added; that round trip
    is exact up to the float32 rounding of `1 + w`.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _llamalike_hf, llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=0,
      ...     vocab_size=5)
      >>> ours = _llamalike_hf.params_from_hf(cfg, "llama", lambda key, shape: np.ones(shape))
      >>> sorted(_llamalike_hf.params_to_hf(cfg, "llama", ours))
      ['lm_head.weight', 'model.embed_tokens.weight', 'model.norm.weight']
      >>> _llamalike_hf.params_to_hf(cfg, "gemma", ours)["model.norm.weight"].tolist()
      [0.0, 0.0, 0.0, 0.0]
    """

    out = _hf_tables.write_tensors(_global_tensors(config, model_type), values)
    for i, layer in enumerate(_split(config, values)):
        tensors = _layer_tensors(config, f"model.layers.{i}", model_type)
        out.update(_hf_tables.write_tensors(tensors, layer))
    return out


def _rope_dict(rope: llamalike.RoPESettings) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": rope.wavelength}
    if rope.llama3_scaling is not None:
        factor, low, high, original = rope.llama3_scaling
        out.update(
            rope_type="llama3",
            factor=factor,
            low_freq_factor=low,
            high_freq_factor=high,
            original_max_position_embeddings=int(original),
        )
    elif rope.scale_factor != 1.0:
        out.update(rope_type="linear", factor=rope.scale_factor)
    return out


def _rope_of(
    config: llamalike.LlamalikeTransformerConfig, types: list[Any], kind: type | None = None
) -> llamalike.RoPESettings:
    """The RoPE of the first block of type `kind` (any type if None), else the config's."""
    for t in types:
        if kind is None or isinstance(t, kind):
            return llamalike.rope_settings_of(config, t)
    return llamalike.rope_settings_of(config, llamalike.AttentionTypeGlobalCausal())


def _query_pre_attn_scalar(config: llamalike.LlamalikeTransformerConfig) -> int:
    if config.query_scaling_factor == "default":
        return config.projection_dim
    scalar = float(config.query_scaling_factor) ** -2
    if not math.isclose(scalar, round(scalar), rel_tol=1e-6):
        raise ValueError(
            f"save_pretrained: query_scaling_factor={config.query_scaling_factor!r} is not"
            " 1 / sqrt(n) for an integer n, which is all a Gemma config"
            " (query_pre_attn_scalar) can hold."
        )
    return round(scalar)


def _effective_blocks(config: llamalike.LlamalikeTransformerConfig) -> list[tuple[Any, ...]]:
    return [
        (type(t).__name__, getattr(t, "window_size", None), llamalike.rope_settings_of(config, t))
        for t in llamalike._attention_types(config)
    ]


# Fields compared through what they mean (per-block attention and RoPE, the
# query scale) or that a checkpoint does not hold (dtypes, layout).
_NOT_COMPARED = {
    "use_layer_stack",
    "parameter_dtype",
    "activation_dtype",
    "attention_type",
    "rope_wavelength",
    "rope_scale_factor",
    "rope_llama3_scaling",
    "query_scaling_factor",
}


def _check_representable(
    config: llamalike.LlamalikeTransformerConfig, hf_config: dict[str, Any], model_type: str
) -> None:
    """Raises unless `hf_config` loads back as a model that computes what `config` does."""
    back = config_from_hf(hf_config)
    problems = [
        f"{f.name}={getattr(config, f.name)!r} (it would load back as {getattr(back, f.name)!r})"
        for f in dataclasses.fields(config)
        if f.name not in _NOT_COMPARED and getattr(config, f.name) != getattr(back, f.name)
    ]
    ours, theirs = _effective_blocks(config), _effective_blocks(back)
    for i, (mine, loaded) in enumerate(zip(ours, theirs)):
        if mine != loaded:
            problems.append(
                f"block {i} attention (type, window, RoPE) {mine} (it would load back as {loaded})"
            )
            break
    if not math.isclose(_common.query_scale(config), _common.query_scale(back), rel_tol=1e-9):
        problems.append(
            f"query_scaling_factor={config.query_scaling_factor!r} (it would load back as"
            f" {back.query_scaling_factor!r})"
        )
    if problems:
        raise ValueError(
            f"save_pretrained: a {model_type!r} checkpoint cannot express this model:"
            f" {'; '.join(problems)}. Save it under the model_type whose architecture it has."
        )


def config_to_hf(
    config: llamalike.LlamalikeTransformerConfig, model_type: str | None
) -> dict[str, Any]:
    """The inverse of `config_from_hf`: a `config.json` dict for `model_type` (default llama).

    Raises:
      ValueError: if a `model_type` checkpoint cannot express the config (a
        Llama with post-norms, a Gemma without scaled embeddings, ...), naming
        the fields that would load back differently.

    Example:
      >>> from saikei.models.transformer.variants import _llamalike_hf, llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> hf = _llamalike_hf.config_to_hf(cfg, None)
      >>> hf["model_type"], hf["num_attention_heads"], hf["num_key_value_heads"]
      ('llama', 2, 1)
    """
    model_type = model_type or "llama"
    _check_model_type(model_type)
    heads = config.num_kv_heads * config.query_head_multiplier
    types = llamalike._attention_types(config)
    windows = {
        t.window_size for t in types if isinstance(t, llamalike.AttentionTypeSlidingWindowCausal)
    }
    if len(windows) > 1:
        raise ValueError(
            f"save_pretrained: {model_type} configs hold one sliding_window, but the blocks use"
            f" windows {sorted(windows)}."
        )
    window = windows.pop() if windows else None
    layer_types = [
        "sliding_attention"
        if isinstance(t, llamalike.AttentionTypeSlidingWindowCausal)
        else "full_attention"
        for t in types
    ]
    act = {v: k for k, v in _ACTIVATIONS.items()}[config.mlp_variant]
    out: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [ARCHITECTURES[model_type]],
        "vocab_size": config.vocab_size,
        "hidden_size": config.embedding_dim,
        "intermediate_size": config.mlp_hidden_dim,
        "num_hidden_layers": config.num_decoder_blocks,
        "num_attention_heads": heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.projection_dim,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_embedder_and_logits,
        "attention_bias": config.attention_output_bias,
        "torch_dtype": "float32",
    }
    if model_type == "gemma3_text":
        out["rope_parameters"] = {
            "full_attention": _rope_dict(
                _rope_of(config, types, llamalike.AttentionTypeGlobalCausal)
            ),
            "sliding_attention": _rope_dict(
                _rope_of(config, types, llamalike.AttentionTypeSlidingWindowCausal)
            ),
        }
    else:
        rope = _rope_dict(_rope_of(config, types))
        out.update(rope_theta=rope["rope_theta"], rope_parameters=rope)
    if model_type in ("gemma2", "gemma3_text"):
        out.update(
            hidden_activation=act,
            query_pre_attn_scalar=_query_pre_attn_scalar(config),
            attn_logit_softcapping=config.attn_logits_soft_cap,
            final_logit_softcapping=config.final_logit_softcap,
            sliding_window=window,
            layer_types=layer_types,
        )
    else:
        out["hidden_act"] = act
    if model_type not in _GEMMA_TYPES:
        out["mlp_bias"] = config.mlp_bias
        if window is not None:
            out["sliding_window"] = window
            if model_type != "mistral":
                out["layer_types"] = layer_types
                out["use_sliding_window"] = True
    _check_representable(config, out, model_type)
    return out


FAMILY = _families.Family(
    name="llamalike",
    config_type=llamalike.LlamalikeTransformerConfig,
    config_from_hf=config_from_hf,
    build=llamalike.build_llamalike_transformer,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    config_to_hf=config_to_hf,
    ignore_hf_tensor=lambda key: key.endswith("rotary_emb.inv_freq"),
)
