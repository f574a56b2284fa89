"""Hugging Face layouts of GPT-2.

Translates `config.json` dicts and checkpoint tensor names to and from
`GPT2TransformerConfig` and saikei parameter labels (see
`saikei.models.transformer._families` for the contract). GPT-2 stores its
projections as `Conv1D` weights, `(in, out)` (transposed against
`torch.nn.Linear`), and fuses query, key and value into one `c_attn` whose
output is `[query | key | value]`, each `heads * head_dim` wide; loading
splits it and exporting fuses it again.

Checkpoints saved from `GPT2LMHeadModel` prefix every name with
`transformer.`; the original OpenAI checkpoints (saved from `GPT2Model`) do
not. Both load; export writes the `GPT2LMHeadModel` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from saikei.core import named_axes as nx
from saikei.models.transformer import _families
from saikei.models.transformer.variants import _hf_tables, gpt2
from saikei.models.transformer.variants._hf_tables import HFTensor

_unsupported = _families.unsupported
_ACTIVATIONS = {"gelu_new": "gelu_approx", "gelu": "gelu"}
_ACTIVATION_TO_HF = {v: k for k, v in _ACTIVATIONS.items()}
# Config switches whose non-default value changes the computation in ways we do not build.
_MUST_BE_FALSE = (
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "add_cross_attention",
)


def _get(cfg: dict[str, Any], name: str, alias: str, default: Any = None) -> Any:
    """`cfg[name]`, or `cfg[alias]` (config.json files use either), or `default`."""
    if cfg.get(name) is not None:
        return cfg[name]
    if cfg.get(alias) is not None:
        return cfg[alias]
    return default


def config_from_hf(hf_config: Any) -> gpt2.GPT2TransformerConfig:
    """Translates a `transformers` GPT-2 config into ours.

    Args:
      hf_config: A `config.json` dict (or a `transformers.PretrainedConfig`).

    Returns:
      The matching `GPT2TransformerConfig` (float32).

    Raises:
      ValueError: naming the field and value of any unsupported setting.

    Example:
      >>> from saikei.models.transformer.variants import _gpt2_hf
      >>> cfg = _gpt2_hf.config_from_hf({"model_type": "gpt2", "vocab_size": 10,
      ...     "n_embd": 32, "n_layer": 1, "n_head": 4, "n_positions": 16})
      >>> cfg.mlp_hidden_dim, cfg.mlp_activation
      (128, 'gelu_approx')
    """
    cfg = dict(hf_config if isinstance(hf_config, dict) else hf_config.to_dict())
    model_type = cfg.get("model_type")
    if model_type != "gpt2":
        raise _unsupported("model_type", model_type, str(model_type), "Use 'gpt2'.")
    for field in _MUST_BE_FALSE:
        if cfg.get(field):
            raise _unsupported(field, cfg[field], model_type, "Only False is supported.")
    act = cfg.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise _unsupported(
            "activation_function", act, model_type, f"Use one of {list(_ACTIVATIONS)}."
        )
    hidden = _get(cfg, "n_embd", "hidden_size")
    heads = _get(cfg, "n_head", "num_attention_heads")
    if hidden % heads:
        raise _unsupported("n_head", heads, model_type, f"It must divide n_embd={hidden}.")
    return gpt2.GPT2TransformerConfig(
        num_heads=heads,
        embedding_dim=hidden,
        mlp_hidden_dim=cfg.get("n_inner") or 4 * hidden,
        num_decoder_blocks=_get(cfg, "n_layer", "num_hidden_layers"),
        vocab_size=cfg["vocab_size"],
        max_positions=_get(cfg, "n_positions", "max_position_embeddings", 1024),
        layer_norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        mlp_activation=_ACTIVATIONS[act],  # type: ignore[arg-type]
        scale_attention_weights=bool(cfg.get("scale_attn_weights", True)),
        tie_embedder_and_logits=bool(cfg.get("tie_word_embeddings", True)),
    )


def _layer_tensors(config: gpt2.GPT2TransformerConfig, prefix: str) -> list[HFTensor]:
    d, h, hd, f = (
        config.embedding_dim,
        config.num_heads,
        config.projection_dim,
        config.mlp_hidden_dim,
    )
    weights, biases = _hf_tables.qkv_labels(True)
    emb, heads, neurons = {"embedding": d}, {"heads": h, "projection": hd}, {"neurons": f}
    return [
        *_hf_tables.layer_norm("pre_attention_norm", f"{prefix}.ln_1", d),
        *_hf_tables.layer_norm("pre_ffw_norm", f"{prefix}.ln_2", d),
        HFTensor(
            f"{prefix}.attn.c_attn.weight",
            (d, 3 * d),
            weights,
            ("embedding", "heads", "projection"),
            (d, 3, h, hd),
            split_axis=1,
        ),
        HFTensor(
            f"{prefix}.attn.c_attn.bias",
            (3 * d,),
            biases,
            ("heads", "projection"),
            (3, h, hd),
            split_axis=0,
        ),
        # Conv1D weights are (in, out).
        *_hf_tables.linear(
            "attention/output", f"{prefix}.attn.c_proj", emb, heads, bias=True, transposed=True
        ),
        *_hf_tables.linear(
            "mlp/in", f"{prefix}.mlp.c_fc", neurons, emb, bias=True, transposed=True
        ),
        *_hf_tables.linear(
            "mlp/out", f"{prefix}.mlp.c_proj", emb, neurons, bias=True, transposed=True
        ),
    ]


def _global_tensors(config: gpt2.GPT2TransformerConfig, prefix: str) -> list[HFTensor]:
    v, d, p = config.vocab_size, config.embedding_dim, config.max_positions
    tensors = [
        _hf_tables.value(
            f"{prefix}wte.weight", "embedder.embeddings", {"vocabulary": v, "embedding": d}
        ),
        _hf_tables.value(
            f"{prefix}wpe.weight", "position_embedder.embeddings", {"positions": p, "embedding": d}
        ),
        *_hf_tables.layer_norm("final_norm", f"{prefix}ln_f", d),
    ]
    if not config.tie_embedder_and_logits:
        tensors.append(
            _hf_tables.value("lm_head.weight", "lm_head.weights", {"vocabulary": v, "embedding": d})
        )
    return tensors


def params_from_hf(
    config: gpt2.GPT2TransformerConfig, model_type: str, get: _families.TensorGetter
) -> dict[str, nx.NamedArray]:
    """Reads a GPT-2 checkpoint's tensors into our parameter values (see `_families`).

    Names with and without the `transformer.` prefix both load.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _gpt2_hf, gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=1, embedding_dim=4, mlp_hidden_dim=8,
      ...     num_decoder_blocks=0, vocab_size=5, max_positions=3)
      >>> values = _gpt2_hf.params_from_hf(cfg, "gpt2", lambda k, s: np.ones(s))
      >>> values["position_embedder.embeddings"].named_shape
      {'positions': 3, 'embedding': 4}
    """
    del model_type
    wte_shape = (config.vocab_size, config.embedding_dim)
    found, wte = _hf_tables.get_first(get, ("transformer.wte.weight", "wte.weight"), wte_shape)
    prefix = found[: -len("wte.weight")]
    rest = [t for t in _global_tensors(config, prefix) if t.hf_name != found]
    values = {
        "embedder.embeddings": nx.wrap(wte, "vocabulary", "embedding"),
        **_hf_tables.read_tensors(rest, get),
    }
    layers = [_layer_tensors(config, f"{prefix}h.{i}") for i in range(config.num_decoder_blocks)]
    return {**values, **_hf_tables.read_blocks(layers, get, config.use_layer_stack)}


def params_to_hf(
    config: gpt2.GPT2TransformerConfig, model_type: str, values: Mapping[str, nx.NamedArray]
) -> dict[str, np.ndarray]:
    """The inverse of `params_from_hf`, with `GPT2LMHeadModel` (`transformer.`) names.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer.variants import _gpt2_hf, gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=1, embedding_dim=4, mlp_hidden_dim=8,
      ...     num_decoder_blocks=0, vocab_size=5, max_positions=3)
      >>> ours = _gpt2_hf.params_from_hf(cfg, "gpt2", lambda k, s: np.ones(s))
      >>> sorted(_gpt2_hf.params_to_hf(cfg, "gpt2", ours))  # doctest: +NORMALIZE_WHITESPACE
      ['transformer.ln_f.bias', 'transformer.ln_f.weight', 'transformer.wpe.weight',
       'transformer.wte.weight']
    """
    del model_type
    out = _hf_tables.write_tensors(_global_tensors(config, "transformer."), values)
    layers = _families.split_blocks(values, config.num_decoder_blocks, config.use_layer_stack)
    for i, layer in enumerate(layers):
        out.update(_hf_tables.write_tensors(_layer_tensors(config, f"transformer.h.{i}"), layer))
    return out


def config_to_hf(config: gpt2.GPT2TransformerConfig, model_type: str | None) -> dict[str, Any]:
    """The inverse of `config_from_hf`: a GPT-2 `config.json` dict.

    Example:
      >>> from saikei.models.transformer.variants import _gpt2_hf, gpt2
      >>> cfg = gpt2.GPT2TransformerConfig(num_heads=2, embedding_dim=8, mlp_hidden_dim=32,
      ...     num_decoder_blocks=1, vocab_size=5, max_positions=16)
      >>> hf = _gpt2_hf.config_to_hf(cfg, None)
      >>> hf["model_type"], hf["n_inner"], hf["activation_function"]
      ('gpt2', None, 'gelu_new')
    """
    model_type = model_type or "gpt2"
    if model_type != "gpt2":
        raise _unsupported("model_type", model_type, model_type, "Use 'gpt2'.")
    d = config.embedding_dim
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_positions,
        "n_embd": d,
        "n_layer": config.num_decoder_blocks,
        "n_head": config.num_heads,
        "n_inner": None if config.mlp_hidden_dim == 4 * d else config.mlp_hidden_dim,
        "activation_function": _ACTIVATION_TO_HF[config.mlp_activation],
        "layer_norm_epsilon": config.layer_norm_eps,
        "scale_attn_weights": config.scale_attention_weights,
        "tie_word_embeddings": config.tie_embedder_and_logits,
        **{field: False for field in _MUST_BE_FALSE},
        "torch_dtype": "float32",
    }


def ignore_hf_tensor(hf_name: str) -> bool:
    """True for the causal-mask buffers older GPT-2 checkpoints carry (`h.0.attn.bias`, ...).

    Example:
      >>> from saikei.models.transformer.variants import _gpt2_hf
      >>> _gpt2_hf.ignore_hf_tensor("h.0.attn.bias")
      True
      >>> _gpt2_hf.ignore_hf_tensor("h.0.attn.c_attn.bias")
      False
    """
    return hf_name.endswith((".attn.bias", ".attn.masked_bias"))


FAMILY = _families.Family(
    name="gpt2",
    config_type=gpt2.GPT2TransformerConfig,
    config_from_hf=config_from_hf,
    build=gpt2.build_gpt2_transformer,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    config_to_hf=config_to_hf,
    ignore_hf_tensor=ignore_hf_tensor,
)
