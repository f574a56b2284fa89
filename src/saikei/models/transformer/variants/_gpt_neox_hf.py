"""Hugging Face layouts of the GPT-NeoX family (Pythia, GPT-NeoX-20B).

Translates `config.json` dicts and checkpoint tensor names to and from
`GPTNeoXTransformerConfig` and saikei parameter labels (see
`saikei.models.transformer._families` for the contract). HF fuses each
block's query, key and value projections into one `query_key_value` tensor,
interleaved per head (`heads, 3, head_dim` along its output); loading splits
it into our separate `query`/`key`/`value` parameters and exporting fuses
them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from saikei.core import named_axes as nx
from saikei.models.transformer import _families
from saikei.models.transformer._families import positional
from saikei.models.transformer.variants import _hf_tables, gpt_neox
from saikei.models.transformer.variants._hf_tables import HFTensor

_unsupported = _families.unsupported
# HF activation names (ACT2FN keys) that we compute, and our name for each.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_approx",
    "gelu_fast": "gelu_approx",
    "gelu_pytorch_tanh": "gelu_approx",
}
_ACTIVATION_TO_HF = {"gelu": "gelu", "gelu_approx": "gelu_new"}


def _rope(cfg: dict[str, Any], model_type: str) -> tuple[float, float, float]:
    """`(rope_theta, partial_rotary_factor, linear scale factor)` from new or old config keys."""
    # Newer configs hold everything in `rope_parameters`; older ones (Pythia's
    # config.json) use `rotary_pct`, `rotary_emb_base` and `rope_scaling`.
    params = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    theta = params.get("rope_theta", cfg.get("rotary_emb_base", cfg.get("rope_theta", 10_000.0)))
    pct = params.get("partial_rotary_factor", cfg.get("rotary_pct", 0.25))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return float(theta), float(pct), 1.0
    if rope_type == "linear":
        return float(theta), float(pct), float(params["factor"])
    raise _unsupported(
        "rope_type", rope_type, model_type, "Supported rope types: 'default', 'linear'."
    )


def config_from_hf(hf_config: Any) -> gpt_neox.GPTNeoXTransformerConfig:
    """Translates a `transformers` GPT-NeoX config into ours.

    Args:
      hf_config: A `config.json` dict (or a `transformers.PretrainedConfig`).

    Returns:
      The matching `GPTNeoXTransformerConfig` (float32).

    Raises:
      ValueError: naming the field and value of any unsupported setting.

    Example:
      >>> from saikei.models.transformer.variants import _gpt_neox_hf
      >>> cfg = _gpt_neox_hf.config_from_hf({"model_type": "gpt_neox", "vocab_size": 10,
      ...     "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
      ...     "num_attention_heads": 4, "rotary_pct": 0.25})
      >>> cfg.projection_dim, cfg.rotary_pct, cfg.use_parallel_residual
      (8, 0.25, True)
    """
    cfg = dict(hf_config if isinstance(hf_config, dict) else hf_config.to_dict())
    model_type = cfg.get("model_type")
    if model_type != "gpt_neox":
        raise _unsupported("model_type", model_type, str(model_type), "Use 'gpt_neox'.")
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if hidden % heads:
        raise _unsupported(
            "num_attention_heads", heads, model_type, f"It must divide hidden_size={hidden}."
        )
    head_dim = hidden // heads
    if cfg.get("head_dim") not in (None, head_dim):
        raise _unsupported(
            "head_dim",
            cfg["head_dim"],
            model_type,
            f"GPT-NeoX heads are hidden_size / num_attention_heads = {head_dim} wide.",
        )
    act = cfg.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise _unsupported("hidden_act", act, model_type, f"Use one of {list(_ACTIVATIONS)}.")
    theta, pct, scale = _rope(cfg, model_type)
    if not 0 <= pct <= 1 or int(head_dim * pct) % 2:
        raise _unsupported(
            "partial_rotary_factor",
            pct,
            model_type,
            f"It must rotate an even number of the {head_dim} dimensions of each head.",
        )
    return gpt_neox.GPTNeoXTransformerConfig(
        num_heads=heads,
        embedding_dim=hidden,
        projection_dim=head_dim,
        mlp_hidden_dim=cfg["intermediate_size"],
        num_decoder_blocks=cfg["num_hidden_layers"],
        vocab_size=cfg["vocab_size"],
        rotary_pct=pct,
        rope_wavelength=theta,
        rope_scale_factor=scale,
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),
        use_parallel_residual=bool(cfg.get("use_parallel_residual", True)),
        mlp_activation=_ACTIVATIONS[act],  # type: ignore[arg-type]
        attention_bias=bool(cfg.get("attention_bias", True)),
        tie_embedder_and_logits=bool(cfg.get("tie_word_embeddings", False)),
    )


def _layer_tensors(config: gpt_neox.GPTNeoXTransformerConfig, prefix: str) -> list[HFTensor]:
    d, h, hd, f = (
        config.embedding_dim,
        config.num_heads,
        config.projection_dim,
        config.mlp_hidden_dim,
    )
    bias = config.attention_bias
    weights, biases = _hf_tables.qkv_labels(bias)
    att = f"{prefix}.attention"
    emb, heads, neurons = {"embedding": d}, {"heads": h, "projection": hd}, {"neurons": f}
    tensors = [
        *_hf_tables.layer_norm("pre_attention_norm", f"{prefix}.input_layernorm", d),
        *_hf_tables.layer_norm("pre_ffw_norm", f"{prefix}.post_attention_layernorm", d),
        HFTensor(
            f"{att}.query_key_value.weight",
            (3 * h * hd, d),
            weights,
            ("heads", "projection", "embedding"),
            (h, 3, hd, d),
            split_axis=1,
        ),
    ]
    if bias:
        tensors.append(
            HFTensor(
                f"{att}.query_key_value.bias",
                (3 * h * hd,),
                biases,
                ("heads", "projection"),
                (h, 3, hd),
                split_axis=1,
            )
        )
    return [
        *tensors,
        *_hf_tables.linear("attention/output", f"{att}.dense", emb, heads, bias=bias),
        *_hf_tables.linear("mlp/in", f"{prefix}.mlp.dense_h_to_4h", neurons, emb, bias=True),
        *_hf_tables.linear("mlp/out", f"{prefix}.mlp.dense_4h_to_h", emb, neurons, bias=True),
    ]


def _global_tensors(config: gpt_neox.GPTNeoXTransformerConfig) -> list[HFTensor]:
    v, d = config.vocab_size, config.embedding_dim
    return [
        _hf_tables.value(
            "gpt_neox.embed_in.weight", "embedder.embeddings", {"vocabulary": v, "embedding": d}
        ),
        *_hf_tables.layer_norm("final_norm", "gpt_neox.final_layer_norm", d),
    ]


# The untied output projection: Pythia checkpoints (and what `save_pretrained`
# writes) call it `embed_out`, live `transformers` 5 models `lm_head`.
_LM_HEAD_NAMES = ("embed_out.weight", "lm_head.weight")


def params_from_hf(
    config: gpt_neox.GPTNeoXTransformerConfig, model_type: str, get: _families.TensorGetter
) -> dict[str, nx.NamedArray]:
    """Reads a GPT-NeoX checkpoint's tensors into our parameter values (see `_families`).

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _gpt_neox_hf, gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=1, embedding_dim=4,
      ...     projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=0, vocab_size=5)
      >>> values = _gpt_neox_hf.params_from_hf(cfg, "gpt_neox", lambda k, s: np.ones(s))
      >>> values["lm_head.weights"].named_shape
      {'vocabulary': 5, 'embedding': 4}
    """
    del model_type
    values = _hf_tables.read_tensors(_global_tensors(config), get)
    if not config.tie_embedder_and_logits:
        shape = (config.vocab_size, config.embedding_dim)
        _, head = _hf_tables.get_first(get, _LM_HEAD_NAMES, shape)
        values["lm_head.weights"] = nx.wrap(head, "vocabulary", "embedding")
    layers = [
        _layer_tensors(config, f"gpt_neox.layers.{i}") for i in range(config.num_decoder_blocks)
    ]
    return {**values, **_hf_tables.read_blocks(layers, get, config.use_layer_stack)}


def params_to_hf(
    config: gpt_neox.GPTNeoXTransformerConfig,
    model_type: str,
    values: Mapping[str, nx.NamedArray],
) -> dict[str, np.ndarray]:
    """The inverse of `params_from_hf`, naming the output projection `embed_out.weight`.

    `embed_out` is the name Pythia checkpoints use and the one `transformers`
    writes on `save_pretrained` (it loads it as `lm_head`).

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _gpt_neox_hf, gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=1, embedding_dim=4,
      ...     projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=0, vocab_size=5)
      >>> ours = _gpt_neox_hf.params_from_hf(cfg, "gpt_neox", lambda k, s: np.ones(s))
      >>> sorted(_gpt_neox_hf.params_to_hf(cfg, "gpt_neox", ours))  # doctest: +NORMALIZE_WHITESPACE
      ['embed_out.weight', 'gpt_neox.embed_in.weight', 'gpt_neox.final_layer_norm.bias',
       'gpt_neox.final_layer_norm.weight']
    """
    del model_type
    out = _hf_tables.write_tensors(_global_tensors(config), values)
    if not config.tie_embedder_and_logits:
        out["embed_out.weight"] = positional(values["lm_head.weights"], "vocabulary", "embedding")
    layers = _families.split_blocks(values, config.num_decoder_blocks, config.use_layer_stack)
    for i, layer in enumerate(layers):
        out.update(_hf_tables.write_tensors(_layer_tensors(config, f"gpt_neox.layers.{i}"), layer))
    return out


def config_to_hf(
    config: gpt_neox.GPTNeoXTransformerConfig, model_type: str | None
) -> dict[str, Any]:
    """The inverse of `config_from_hf`: a GPT-NeoX `config.json` dict.

    Raises:
      ValueError: for a config that HF's GPT-NeoX cannot express (naming the
        field).

    Example:
      >>> from saikei.models.transformer.variants import _gpt_neox_hf, gpt_neox
      >>> cfg = gpt_neox.GPTNeoXTransformerConfig(num_heads=2, embedding_dim=8,
      ...     projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1, vocab_size=5,
      ...     rotary_pct=0.5)
      >>> hf = _gpt_neox_hf.config_to_hf(cfg, None)
      >>> hf["model_type"], hf["rope_parameters"]["partial_rotary_factor"]
      ('gpt_neox', 0.5)
    """
    model_type = model_type or "gpt_neox"
    if model_type != "gpt_neox":
        raise _unsupported("model_type", model_type, model_type, "Use 'gpt_neox'.")
    if config.num_heads * config.projection_dim != config.embedding_dim:
        raise ValueError(
            f"save_pretrained: GPT-NeoX heads are embedding_dim / num_heads wide, but"
            f" config.projection_dim={config.projection_dim} with num_heads={config.num_heads}"
            f" and embedding_dim={config.embedding_dim}."
        )
    if config.query_scaling_factor not in ("default", config.projection_dim**-0.5):
        raise ValueError(
            "save_pretrained: GPT-NeoX always scales queries by projection_dim ** -0.5, but"
            f" config.query_scaling_factor={config.query_scaling_factor!r}."
        )
    rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": config.rope_wavelength,
        "partial_rotary_factor": config.rotary_pct,
    }
    if config.rope_scale_factor != 1.0:
        rope.update(rope_type="linear", factor=config.rope_scale_factor)
    return {
        "model_type": "gpt_neox",
        "architectures": ["GPTNeoXForCausalLM"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.embedding_dim,
        "intermediate_size": config.mlp_hidden_dim,
        "num_hidden_layers": config.num_decoder_blocks,
        "num_attention_heads": config.num_heads,
        "hidden_act": _ACTIVATION_TO_HF[config.mlp_activation],
        "layer_norm_eps": config.layer_norm_eps,
        "use_parallel_residual": config.use_parallel_residual,
        "attention_bias": config.attention_bias,
        "tie_word_embeddings": config.tie_embedder_and_logits,
        "rotary_pct": config.rotary_pct,
        "rotary_emb_base": config.rope_wavelength,
        "rope_parameters": rope,
        "torch_dtype": "float32",
    }


def ignore_hf_tensor(hf_name: str) -> bool:
    """True for buffers older GPT-NeoX checkpoints carry that are not parameters.

    Example:
      >>> from saikei.models.transformer.variants import _gpt_neox_hf
      >>> _gpt_neox_hf.ignore_hf_tensor("gpt_neox.layers.0.attention.masked_bias")
      True
      >>> _gpt_neox_hf.ignore_hf_tensor("gpt_neox.layers.0.attention.dense.bias")
      False
    """
    return hf_name.endswith((".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq"))


FAMILY = _families.Family(
    name="gpt_neox",
    config_type=gpt_neox.GPTNeoXTransformerConfig,
    config_from_hf=config_from_hf,
    build=gpt_neox.build_gpt_neox_transformer,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    config_to_hf=config_to_hf,
    ignore_hf_tensor=ignore_hf_tensor,
)
