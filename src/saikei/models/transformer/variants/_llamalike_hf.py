"""Hugging Face layouts of the llama-like family (Llama, Mistral, Qwen2, Qwen3).

Translates `config.json` dicts and checkpoint tensor names to and from
`LlamalikeTransformerConfig` and saikei parameter labels (see
`saikei.models.transformer._families` for the contract).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saikei.core import named_axes as nx
from saikei.models.transformer import _families
from saikei.models.transformer._families import positional
from saikei.models.transformer.variants import llamalike

_SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ACTIVATIONS = {"silu": "swiglu", "gelu_pytorch_tanh": "geglu_approx"}
_unsupported = _families.unsupported


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


def config_from_hf(hf_config: Any) -> llamalike.LlamalikeTransformerConfig:
    """Translates a `transformers` Llama/Mistral/Qwen2/Qwen3 config into ours.

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
        attention_bias=attention_bias,
        attention_output_bias=output_bias,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        use_qk_norm=model_type == "qwen3",
    )


def _kv_names(config: llamalike.LlamalikeTransformerConfig) -> tuple[tuple, tuple]:
    kv, mult = config.num_kv_heads, config.query_head_multiplier
    if mult == 1:
        return ("heads",), (kv,)
    if kv == 1:
        return (), ()
    return ("head_groups",), (kv,)


def _q_names(config: llamalike.LlamalikeTransformerConfig) -> tuple[tuple, tuple]:
    kv, mult = config.num_kv_heads, config.query_head_multiplier
    if mult == 1:
        return ("heads",), (kv,)
    if kv == 1:
        return ("query_heads",), (mult,)
    return ("head_groups", "query_heads"), (kv, mult)


# One row per tensor: (our label suffix, HF name, HF shape, our axis names, our
# axis sizes). Our value is the HF tensor reshaped to the sizes and named.
_Row = tuple[str, str, tuple[int, ...], tuple[str, ...], tuple[int, ...]]


def _layer_rows(config: llamalike.LlamalikeTransformerConfig, prefix: str) -> list[_Row]:
    d, hd, f = config.embedding_dim, config.projection_dim, config.mlp_hidden_dim
    q_names, q_sizes = _q_names(config)
    k_names, k_sizes = _kv_names(config)
    nq = config.num_kv_heads * config.query_head_multiplier
    nk = config.num_kv_heads
    att = f"{prefix}.self_attn"
    rows: list[_Row] = []
    for which, hf, names, sizes, n in (
        ("query", "q_proj", q_names, q_sizes, nq),
        ("key", "k_proj", k_names, k_sizes, nk),
        ("value", "v_proj", k_names, k_sizes, nk),
    ):
        w = (
            f"{att}.{hf}.weight",
            (n * hd, d),
            (*names, "projection", "embedding"),
            (*sizes, hd, d),
        )
        if config.attention_bias:
            rows.append((f"attention/{which}/Linear.weights", *w))
            rows.append(
                (
                    f"attention/{which}/AddBias.bias",
                    f"{att}.{hf}.bias",
                    (n * hd,),
                    (*names, "projection"),
                    (*sizes, hd),
                )
            )
        else:
            rows.append((f"attention/{which}.weights", *w))
    o = (
        f"{att}.o_proj.weight",
        (d, nq * hd),
        ("embedding", *q_names, "projection"),
        (d, *q_sizes, hd),
    )
    if config.attention_output_bias:
        rows.append(("attention/output/Linear.weights", *o))
        rows.append(
            ("attention/output/AddBias.bias", f"{att}.o_proj.bias", (d,), ("embedding",), (d,))
        )
    else:
        rows.append(("attention/output.weights", *o))
    if config.use_qk_norm:
        for which, hf in (("query", "q_norm"), ("key", "k_norm")):
            rows.append(
                (
                    f"attention/{which}_norm/scale.weights",
                    f"{att}.{hf}.weight",
                    (hd,),
                    ("projection",),
                    (hd,),
                )
            )
    for label, hf in (
        ("pre_attention_norm", "input_layernorm"),
        ("pre_ffw_norm", "post_attention_layernorm"),
    ):
        rows.append((f"{label}/scale.weights", f"{prefix}.{hf}.weight", (d,), ("embedding",), (d,)))
    for which, hf, names, shape in (
        ("gating", "gate_proj", ("neurons", "embedding"), (f, d)),
        ("value", "up_proj", ("neurons", "embedding"), (f, d)),
        ("out", "down_proj", ("embedding", "neurons"), (d, f)),
    ):
        w = (f"{prefix}.mlp.{hf}.weight", shape, names, shape)
        if config.mlp_bias:
            rows.append((f"mlp/{which}/Linear.weights", *w))
            rows.append(
                (
                    f"mlp/{which}/AddBias.bias",
                    f"{prefix}.mlp.{hf}.bias",
                    shape[:1],
                    names[:1],
                    shape[:1],
                )
            )
        else:
            rows.append((f"mlp/{which}.weights", *w))
    return rows


def _global_rows(config: llamalike.LlamalikeTransformerConfig) -> list[_Row]:
    d, v = config.embedding_dim, config.vocab_size
    rows: list[_Row] = [
        (
            "embedder.embeddings",
            "model.embed_tokens.weight",
            (v, d),
            ("vocabulary", "embedding"),
            (v, d),
        ),
        ("final_norm/scale.weights", "model.norm.weight", (d,), ("embedding",), (d,)),
    ]
    if not config.tie_embedder_and_logits:
        rows.append(
            ("lm_head.weights", "lm_head.weight", (v, d), ("vocabulary", "embedding"), (v, d))
        )
    return rows


def params_from_hf(
    config: llamalike.LlamalikeTransformerConfig, model_type: str, get: _families.TensorGetter
) -> dict[str, nx.NamedArray]:
    """Reads a llama-like checkpoint's tensors into our parameter values (see `_families`).

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _llamalike_hf, llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=0,
      ...     vocab_size=5)
      >>> values = _llamalike_hf.params_from_hf(cfg, "llama", lambda key, shape: np.ones(shape))
      >>> values["lm_head.weights"].named_shape
      {'vocabulary': 5, 'embedding': 4}
    """
    del model_type

    def read(rows: list[_Row]) -> dict[str, nx.NamedArray]:
        return {
            label: nx.wrap(get(hf, shape).reshape(sizes), *names)
            for label, hf, shape, names, sizes in rows
        }

    per_layer = [
        read(_layer_rows(config, f"model.layers.{i}")) for i in range(config.num_decoder_blocks)
    ]
    return {
        **read(_global_rows(config)),
        **_families.arrange_blocks(per_layer, config.use_layer_stack),
    }


def params_to_hf(
    config: llamalike.LlamalikeTransformerConfig,
    model_type: str,
    values: Mapping[str, nx.NamedArray],
) -> dict[str, Any]:
    """The inverse of `params_from_hf`: our parameter values as HF-named numpy arrays.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _llamalike_hf, llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=0,
      ...     vocab_size=5)
      >>> ours = _llamalike_hf.params_from_hf(cfg, "llama", lambda key, shape: np.ones(shape))
      >>> sorted(_llamalike_hf.params_to_hf(cfg, "llama", ours))
      ['lm_head.weight', 'model.embed_tokens.weight', 'model.norm.weight']
    """
    del model_type

    def write(rows: list[_Row], source: Mapping[str, nx.NamedArray]) -> dict[str, Any]:
        return {
            hf: positional(source[label], *names).reshape(shape)
            for label, hf, shape, names, _ in rows
        }

    layers = _families.split_blocks(values, config.num_decoder_blocks, config.use_layer_stack)
    out = write(_global_rows(config), values)
    for i, layer in enumerate(layers):
        out.update(write(_layer_rows(config, f"model.layers.{i}"), layer))
    return out


def config_to_hf(
    config: llamalike.LlamalikeTransformerConfig, model_type: str | None
) -> dict[str, Any]:
    """The inverse of `config_from_hf`: a `config.json` dict for `model_type` (default llama).

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
    if model_type not in _SUPPORTED_TYPES:
        raise _unsupported("model_type", model_type, model_type, f"Use {_SUPPORTED_TYPES}.")
    act = {v: k for k, v in _ACTIVATIONS.items()}[config.mlp_variant]
    heads = config.num_kv_heads * config.query_head_multiplier
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_wavelength}
    if config.rope_llama3_scaling is not None:
        factor, low, high, original = config.rope_llama3_scaling
        rope.update(
            rope_type="llama3",
            factor=factor,
            low_freq_factor=low,
            high_freq_factor=high,
            original_max_position_embeddings=int(original),
        )
    elif config.rope_scale_factor != 1.0:
        rope.update(rope_type="linear", factor=config.rope_scale_factor)
    types = llamalike._attention_types(config)
    windows = {
        t.window_size for t in types if isinstance(t, llamalike.AttentionTypeSlidingWindowCausal)
    }
    if len(windows) > 1:
        raise ValueError(
            f"save_pretrained: {model_type} configs hold one sliding_window, but the blocks use"
            f" windows {sorted(windows)}."
        )
    out: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [
            {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}[model_type]
            + "ForCausalLM"
        ],
        "vocab_size": config.vocab_size,
        "hidden_size": config.embedding_dim,
        "intermediate_size": config.mlp_hidden_dim,
        "num_hidden_layers": config.num_decoder_blocks,
        "num_attention_heads": heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.projection_dim,
        "hidden_act": act,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_embedder_and_logits,
        "rope_theta": config.rope_wavelength,
        "rope_parameters": rope,
        "mlp_bias": config.mlp_bias,
        "attention_bias": config.attention_output_bias,
        "torch_dtype": "float32",
    }
    if windows:
        out["sliding_window"] = windows.pop()
        if model_type != "mistral":
            out["layer_types"] = [
                "sliding_attention"
                if isinstance(t, llamalike.AttentionTypeSlidingWindowCausal)
                else "full_attention"
                for t in types
            ]
            out["use_sliding_window"] = True
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
