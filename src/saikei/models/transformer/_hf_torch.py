"""Conversion of a live Hugging Face `transformers` model into a saikei `TransformerLM`.

torch is only touched through the tensors of the given model (no import here),
so this module loads without torch installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saikei.core import Parameter, bind_variables
from saikei.core import named_axes as nx
from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import llamalike

_SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ACTIVATIONS = {"silu": "swiglu", "gelu_pytorch_tanh": "geglu_approx"}


def _unsupported(field: str, value: Any, model_type: str, hint: str = "") -> ValueError:
    return ValueError(
        f"llamalike_from_huggingface_model: unsupported {model_type} config value"
        f" {field}={value!r}.{(' ' + hint) if hint else ''}"
    )


def _rope(
    cfg: dict[str, Any], model_type: str
) -> tuple[float, float, tuple[float, float, float, float] | None]:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    theta = params.get("rope_theta", cfg.get("rope_theta", 10_000.0))
    rope_type = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    factor = params.get("factor", scaling.get("factor"))
    partial = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if partial not in (1, 1.0, None):
        raise _unsupported("partial_rotary_factor", partial, model_type)
    if rope_type == "default":
        return float(theta), 1.0, None
    if rope_type == "linear":
        return float(theta), float(factor), None
    if rope_type == "llama3":
        source = params if "low_freq_factor" in params else scaling
        llama3 = (
            float(factor),
            float(source["low_freq_factor"]),
            float(source["high_freq_factor"]),
            float(source["original_max_position_embeddings"]),
        )
        return float(theta), 1.0, llama3
    raise _unsupported(
        "rope_type",
        rope_type,
        model_type,
        "Supported rope types: 'default', 'linear', 'llama3'.",
    )


def _attention_types(cfg: dict[str, Any], model_type: str) -> Any:
    window = cfg.get("sliding_window")
    layer_types = cfg.get("layer_types")
    if layer_types is None:
        if model_type == "mistral" and window is not None:
            return llamalike.AttentionTypeSlidingWindowCausal(int(window))
        return llamalike.AttentionTypeGlobalCausal()
    types = []
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
    return tuple(types)


def llamalike_config_from_huggingface(
    hf_config: Any, *, use_layer_stack: bool = False
) -> llamalike.LlamalikeTransformerConfig:
    """Translates a `transformers` Llama/Mistral/Qwen2/Qwen3 config into ours.

    Args:
      hf_config: A `transformers.PretrainedConfig` (or its `to_dict()`).
      use_layer_stack: Build the blocks as one LayerStack.

    Returns:
      The matching `LlamalikeTransformerConfig` (float32).

    Raises:
      ValueError: naming the field and value of any unsupported setting.

    Example:
      >>> from saikei.models.transformer import _hf_torch
      >>> cfg = _hf_torch.llamalike_config_from_huggingface({"model_type": "llama",
      ...     "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
      ...     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})
      >>> cfg.query_head_multiplier, cfg.projection_dim
      (2, 4)
    """
    cfg = dict(hf_config if isinstance(hf_config, dict) else hf_config.to_dict())
    model_type = cfg.get("model_type")
    if model_type not in _SUPPORTED_TYPES:
        raise _unsupported("model_type", model_type, str(model_type), f"Use {_SUPPORTED_TYPES}.")
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise _unsupported(
            "num_key_value_heads", kv_heads, model_type, f"It must divide {heads} heads."
        )
    act = cfg.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise _unsupported("hidden_act", act, model_type, f"Use one of {list(_ACTIVATIONS)}.")
    if cfg.get("pretraining_tp", 1) not in (1, None):
        raise _unsupported("pretraining_tp", cfg["pretraining_tp"], model_type)
    # Qwen2 always biases q/k/v (not o); Llama and Qwen3 `attention_bias` covers q/k/v/o.
    output_bias = model_type in ("llama", "qwen3") and bool(cfg.get("attention_bias"))
    attention_bias = model_type == "qwen2" or output_bias
    attention_type = _attention_types(cfg, model_type)
    theta, scale, llama3_scaling = _rope(cfg, model_type)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    return llamalike.LlamalikeTransformerConfig(
        num_kv_heads=kv_heads,
        query_head_multiplier=heads // kv_heads,
        embedding_dim=cfg["hidden_size"],
        projection_dim=head_dim,
        mlp_hidden_dim=cfg["intermediate_size"],
        num_decoder_blocks=cfg["num_hidden_layers"],
        vocab_size=cfg["vocab_size"],
        mlp_variant=_ACTIVATIONS[act],  # type: ignore[arg-type]
        tie_embedder_and_logits=bool(cfg.get("tie_word_embeddings", False)),
        rope_wavelength=theta,
        rope_scale_factor=scale,
        rope_llama3_scaling=llama3_scaling,
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        attention_type=attention_type,
        use_layer_stack=use_layer_stack,
        attention_bias=attention_bias,
        attention_output_bias=output_bias,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        use_qk_norm=model_type == "qwen3",
    )


def _head_names(config: llamalike.LlamalikeTransformerConfig) -> tuple[tuple, tuple]:
    kv, mult = config.num_kv_heads, config.query_head_multiplier
    if mult == 1:
        return ("heads",), (kv,)
    if kv == 1:
        return ("query_heads",), (mult,)
    return ("head_groups", "query_heads"), (kv, mult)


def _kv_names(config: llamalike.LlamalikeTransformerConfig) -> tuple[tuple, tuple]:
    kv, mult = config.num_kv_heads, config.query_head_multiplier
    if mult == 1:
        return ("heads",), (kv,)
    if kv == 1:
        return (), ()
    return ("head_groups",), (kv,)


def _convert_layer(
    get: Any, prefix: str, config: llamalike.LlamalikeTransformerConfig
) -> dict[str, nx.NamedArray]:
    """Returns `{label suffix: value}` for one decoder layer."""
    hd = config.projection_dim
    d = config.embedding_dim
    q_names, q_sizes = _head_names(config)
    k_names, k_sizes = _kv_names(config)
    out: dict[str, nx.NamedArray] = {}

    def proj(which: str, hf: str, names: tuple, sizes: tuple) -> None:
        w = get(f"{prefix}.self_attn.{hf}.weight").reshape(*sizes, hd, d)
        label = f"attention/{which}"
        if config.attention_bias:
            out[f"{label}/Linear.weights"] = nx.wrap(w, *names, "projection", "embedding")
            b = get(f"{prefix}.self_attn.{hf}.bias").reshape(*sizes, hd)
            out[f"{label}/AddBias.bias"] = nx.wrap(b, *names, "projection")
        else:
            out[f"{label}.weights"] = nx.wrap(w, *names, "projection", "embedding")

    proj("query", "q_proj", q_names, q_sizes)
    proj("key", "k_proj", k_names, k_sizes)
    proj("value", "v_proj", k_names, k_sizes)
    o = nx.wrap(
        get(f"{prefix}.self_attn.o_proj.weight").reshape(d, *q_sizes, hd),
        "embedding",
        *q_names,
        "projection",
    )
    if config.attention_output_bias:
        out["attention/output/Linear.weights"] = o
        b = get(f"{prefix}.self_attn.o_proj.bias")
        out["attention/output/AddBias.bias"] = nx.wrap(b, "embedding")
    else:
        out["attention/output.weights"] = o
    if config.use_qk_norm:
        for which, hf in (("query", "q_norm"), ("key", "k_norm")):
            w = get(f"{prefix}.self_attn.{hf}.weight")
            out[f"attention/{which}_norm/scale.weights"] = nx.wrap(w, "projection")
    out["pre_attention_norm/scale.weights"] = nx.wrap(
        get(f"{prefix}.input_layernorm.weight"), "embedding"
    )
    out["pre_ffw_norm/scale.weights"] = nx.wrap(
        get(f"{prefix}.post_attention_layernorm.weight"), "embedding"
    )
    for which, hf, names in (
        ("gating", "gate_proj", ("neurons", "embedding")),
        ("value", "up_proj", ("neurons", "embedding")),
        ("out", "down_proj", ("embedding", "neurons")),
    ):
        w = nx.wrap(get(f"{prefix}.mlp.{hf}.weight"), *names)
        if config.mlp_bias:
            out[f"mlp/{which}/Linear.weights"] = w
            out[f"mlp/{which}/AddBias.bias"] = nx.wrap(get(f"{prefix}.mlp.{hf}.bias"), names[0])
        else:
            out[f"mlp/{which}.weights"] = w
    return out


def llamalike_from_huggingface_model(
    hf_model: Any, *, use_layer_stack: bool = False, name: str = "transformer"
) -> model_parts.TransformerLM:
    """Converts a live `transformers` Llama/Mistral/Qwen2/Qwen3 causal LM (float32).

    Args:
      hf_model: A `transformers` `*ForCausalLM` model.
      use_layer_stack: Build the blocks as one LayerStack.
      name: Prefix of the parameter labels.

    Returns:
      A `TransformerLM` with the model's weights as float32 parameters.

    Raises:
      ValueError: for an unsupported config field/value or a missing tensor.

    Example:
      >>> from saikei.models.transformer import _hf_torch
      >>> callable(_hf_torch.llamalike_from_huggingface_model)
      True
    """
    config = llamalike_config_from_huggingface(hf_model.config, use_layer_stack=use_layer_stack)
    state = hf_model.state_dict()
    used: set[str] = set()

    def get(key: str) -> np.ndarray:
        if key not in state:
            raise ValueError(
                f"llamalike_from_huggingface_model: the model has no tensor {key!r}, which a"
                f" {hf_model.config.model_type} model with this config needs."
            )
        used.add(key)
        return state[key].detach().cpu().float().numpy()

    values: dict[str, nx.NamedArray] = {
        "embedder.embeddings": nx.wrap(get("model.embed_tokens.weight"), "vocabulary", "embedding"),
        "final_norm/scale.weights": nx.wrap(get("model.norm.weight"), "embedding"),
    }
    if not config.tie_embedder_and_logits:
        values["lm_head.weights"] = nx.wrap(get("lm_head.weight"), "vocabulary", "embedding")
    layers = [
        _convert_layer(get, f"model.layers.{i}", config) for i in range(config.num_decoder_blocks)
    ]
    if use_layer_stack:
        for key in layers[0]:
            stacked = np.stack([np.asarray(layer[key].data_array) for layer in layers])
            values[f"blocks/{key}"] = nx.wrap(stacked, "blocks", *layers[0][key].axis_names)
    else:
        for i, layer in enumerate(layers):
            for key, value in layer.items():
                values[f"block_{i}/{key}"] = value
    extra = sorted(k for k in state if k not in used and not k.endswith("rotary_emb.inv_freq"))
    if config.tie_embedder_and_logits:
        extra = [k for k in extra if k != "lm_head.weight"]
    if extra:
        raise ValueError(
            f"llamalike_from_huggingface_model: tensors {extra} of the model have no place in"
            " the converted model; its config describes a different architecture."
        )
    model = llamalike.build_llamalike_transformer(config, init_base_rng=None, name=name)
    params = [Parameter(label=f"{name}/{k}", value=v) for k, v in values.items()]
    return bind_variables(model, params)
