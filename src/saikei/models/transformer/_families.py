"""Architecture families: how a Hugging Face checkpoint maps onto a saikei `TransformerLM`.

Every supported Hugging Face `model_type` belongs to one *family*, a module in
`variants/` that knows four translations, all pure functions of plain data:

- `config_from_hf(hf_config: dict) -> config`: the HF `config.json` dict to the
  family's builder config (a frozen dataclass with at least the fields
  `use_layer_stack`, `parameter_dtype` and `activation_dtype`). Unsupported
  fields or values raise `ValueError` naming the field and value.
- `params_from_hf(config, model_type, get) -> {label suffix: NamedArray}`: the
  checkpoint tensors to the model's parameter values. `get(hf_name, shape)`
  returns the tensor called `hf_name` as a numpy/jax array after checking that
  it exists and has exactly `shape` (the error names the tensor and both
  shapes). Label suffixes are the parameter labels without the model's name
  prefix (`"embedder.embeddings"`, `"block_0/attention/query.weights"`, or
  `"blocks/..."` with a leading `blocks` axis under a LayerStack; families
  whose layers repeat with a period P > 1 stack super-blocks instead, see
  `build_llamalike_transformer`).
- `params_to_hf(config, model_type, values) -> {hf_name: np.ndarray}`: the
  inverse, for `save_pretrained`.
- `config_to_hf(config, model_type) -> dict`: the inverse of `config_from_hf`.

plus `build(config, init_base_rng, name)` and `ignore_hf_tensor(hf_name)` for
buffers a checkpoint may carry that are not parameters (e.g. rotary caches).

This module holds the registry and the code every family shares: stacking
per-layer values for a LayerStack, converting a live `transformers` model, and
collecting a model's parameters for export.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import Parameter, bind_variables, unbind_params
from saikei.core import named_axes as nx
from saikei.models.transformer import model_parts

TensorGetter = Callable[[str, tuple[int, ...]], Any]

# model_type -> module (under saikei.models.transformer.variants) of its family.
_FAMILY_MODULES: dict[str, str] = {
    "llama": "_llamalike_hf",
    "mistral": "_llamalike_hf",
    "qwen2": "_llamalike_hf",
    "qwen3": "_llamalike_hf",
    "gemma": "_llamalike_hf",
    "gemma2": "_llamalike_hf",
    "gemma3_text": "_llamalike_hf",
    "gpt_neox": "_gpt_neox_hf",
    "gpt2": "_gpt2_hf",
}


@dataclasses.dataclass(frozen=True)
class Family:
    """The translations between one family's HF checkpoints and saikei models.

    See the module docstring for the contract of each function.

    Example:
      >>> from saikei.models.transformer import _families
      >>> _families.family_for("llama").name
      'llamalike'
    """

    name: str
    config_type: type
    config_from_hf: Callable[[dict[str, Any]], Any]
    build: Callable[..., model_parts.TransformerLM]
    params_from_hf: Callable[[Any, str, TensorGetter], dict[str, nx.NamedArray]]
    params_to_hf: Callable[[Any, str, Mapping[str, nx.NamedArray]], dict[str, np.ndarray]]
    config_to_hf: Callable[[Any, str], dict[str, Any]]
    ignore_hf_tensor: Callable[[str], bool] = lambda hf_name: False


def supported_model_types() -> tuple[str, ...]:
    """The Hugging Face `model_type`s saikei can load.

    Example:
      >>> from saikei.models.transformer import _families
      >>> "llama" in _families.supported_model_types()
      True
    """
    return tuple(_FAMILY_MODULES)


def family_for(model_type: Any) -> Family:
    """Returns the family that handles `model_type`, or raises naming the supported ones.

    Example:
      >>> from saikei.models.transformer import _families
      >>> _families.family_for("mistral").name
      'llamalike'
    """
    module = _FAMILY_MODULES.get(model_type) if isinstance(model_type, str) else None
    if module is None:
        raise ValueError(
            f"unsupported model_type={model_type!r}; saikei loads {sorted(_FAMILY_MODULES)}."
        )
    return importlib.import_module(f"saikei.models.transformer.variants.{module}").FAMILY


def unsupported(field: str, value: Any, model_type: Any, hint: str = "") -> ValueError:
    """The error for a config field/value we do not support (names both).

    Example:
      >>> from saikei.models.transformer import _families
      >>> str(_families.unsupported("hidden_act", "relu", "llama", "Use 'silu'."))
      "unsupported llama config value hidden_act='relu'. Use 'silu'."
    """
    return ValueError(
        f"unsupported {model_type} config value {field}={value!r}.{(' ' + hint) if hint else ''}"
    )


def arrange_blocks(
    per_layer: list[dict[str, nx.NamedArray]], use_layer_stack: bool
) -> dict[str, nx.NamedArray]:
    """Places per-layer values under `block_{i}/` or stacks them under `blocks/`.

    Stacking empties the given per-layer dicts (to bound peak memory).

    Example:
      >>> from saikei import sk
      >>> from saikei.models.transformer import _families
      >>> layers = [{"w": sk.nx.ones({"a": 2})}, {"w": sk.nx.zeros({"a": 2})}]
      >>> sorted(_families.arrange_blocks(layers, False))
      ['block_0/w', 'block_1/w']
      >>> _families.arrange_blocks(layers, True)["blocks/w"].named_shape
      {'blocks': 2, 'a': 2}
    """
    out: dict[str, nx.NamedArray] = {}
    if not use_layer_stack:
        for i, layer in enumerate(per_layer):
            for key, value in layer.items():
                out[f"block_{i}/{key}"] = value
        return out
    for key in list(per_layer[0]):
        first = per_layer[0][key]
        names = first.axis_names
        # Each layer's array is popped as it is stacked, so that loading holds
        # at most one parameter kind twice, never the whole model.
        if not all(on_host(layer[key].data_array) for layer in per_layer):
            # Sharded (or accelerator) values are stacked where they are.
            stacked = jnp.stack([layer.pop(key).unwrap(*names) for layer in per_layer])
            out[f"blocks/{key}"] = nx.wrap(stacked, "blocks", *names)
            continue
        # Host values are stacked with numpy: `jnp.stack` would compile one XLA
        # program per parameter shape, most of a small model's load time.
        host = np.empty((len(per_layer), *(first.named_shape[n] for n in names)), first.dtype)
        for i, layer in enumerate(per_layer):
            host[i] = np.asarray(layer.pop(key).unwrap(*names))
        out[f"blocks/{key}"] = nx.wrap(jax.device_put(host), "blocks", *names)
    return out


def on_host(value: Any) -> bool:
    """Whether `value` is in host memory: numpy, or a JAX array on one CPU device.

    Loading reshapes, splits and stacks such values with numpy (no XLA programs
    to compile); sharded or accelerator arrays stay with JAX operations.

    Example:
      >>> import jax, numpy as np
      >>> from saikei.models.transformer import _families
      >>> _families.on_host(np.zeros(2)), _families.on_host(jax.numpy.zeros(2))
      (True, True)
    """
    if isinstance(value, jax.Array):
        devices = value.sharding.device_set
        return len(devices) == 1 and next(iter(devices)).platform == "cpu"
    return True


def split_blocks(
    values: Mapping[str, nx.NamedArray], num_layers: int, use_layer_stack: bool
) -> list[dict[str, nx.NamedArray]]:
    """The inverse of `arrange_blocks`: per-layer values keyed without the block prefix.

    Example:
      >>> from saikei import sk
      >>> from saikei.models.transformer import _families
      >>> layers = _families.split_blocks({"blocks/w": sk.nx.ones({"blocks": 2, "a": 3})}, 2, True)
      >>> layers[1]["w"].named_shape
      {'a': 3}
    """
    layers: list[dict[str, nx.NamedArray]] = [{} for _ in range(num_layers)]
    for key, value in values.items():
        if use_layer_stack and key.startswith("blocks/"):
            for i in range(num_layers):
                layers[i][key[len("blocks/") :]] = value[{"blocks": i}]
        elif key.startswith("block_"):
            index, _, rest = key[len("block_") :].partition("/")
            layers[int(index)][rest] = value
    return layers


def _with_provenance(
    model: model_parts.TransformerLM, config: Any, model_type: str
) -> model_parts.TransformerLM:
    metadata = dataclasses.replace(model.metadata, config=config, hf_model_type=model_type)
    return dataclasses.replace(model, metadata=metadata)


def model_from_hf_tensors(
    hf_config: Mapping[str, Any],
    get_tensor: Callable[[str], Any],
    tensor_shapes: Mapping[str, tuple[int, ...]],
    *,
    dtype: Any = None,
    activation_dtype: Any = None,
    use_layer_stack: bool = False,
    name: str = "transformer",
    source: str = "checkpoint",
) -> model_parts.TransformerLM:
    """Builds a `TransformerLM` from an HF config dict and HF-named tensors.

    Args:
      hf_config: The `config.json` contents.
      get_tensor: Returns the tensor of a name (numpy or jax array); called
        once per tensor, so it may read lazily from disk.
      tensor_shapes: The shape of every tensor the checkpoint holds.
      dtype: Parameter dtype; None keeps float32.
      activation_dtype: Activation dtype; None means `dtype`.
      use_layer_stack: Build the blocks as one LayerStack.
      name: Prefix of the parameter labels.
      source: Describes the checkpoint in error messages (e.g. its path).

    Returns:
      The bound model.

    Raises:
      ValueError: naming any unsupported config value, or any missing, extra
        or misshapen tensor with the expected and found shapes.

    Example:
      >>> import numpy as np
      >>> from saikei.models.transformer import _families
      >>> cfg = {"model_type": "llama", "vocab_size": 4, "hidden_size": 2,
      ...   "intermediate_size": 2, "num_hidden_layers": 0, "num_attention_heads": 1,
      ...   "tie_word_embeddings": True}
      >>> tensors = {"model.embed_tokens.weight": np.ones((4, 2)), "model.norm.weight": np.ones(2)}
      >>> lm = _families.model_from_hf_tensors(cfg, tensors.__getitem__,
      ...     {k: v.shape for k, v in tensors.items()})
      >>> lm.metadata.vocab_size
      4
    """
    model_type = hf_config.get("model_type")
    family = family_for(model_type)
    config = family.config_from_hf(dict(hf_config))
    param_dtype = jnp.dtype(dtype) if dtype is not None else jnp.dtype(jnp.float32)
    config = dataclasses.replace(
        config,
        use_layer_stack=use_layer_stack,
        parameter_dtype=param_dtype,
        activation_dtype=param_dtype if activation_dtype is None else jnp.dtype(activation_dtype),
    )
    used: set[str] = set()

    def get(key: str, shape: tuple[int, ...]) -> Any:
        if key not in tensor_shapes:
            raise ValueError(
                f"{source}: missing tensor {key!r} (expected shape {tuple(shape)}), which a"
                f" {model_type} model with this config needs. Check that the checkpoint"
                " matches its config.json."
            )
        found = tuple(tensor_shapes[key])
        if found != tuple(shape):
            raise ValueError(
                f"{source}: tensor {key!r} has shape {found}, but this {model_type} config"
                f" expects {tuple(shape)}. Check that the checkpoint matches its config.json."
            )
        used.add(key)
        return jnp.asarray(get_tensor(key), dtype=param_dtype)

    values = family.params_from_hf(config, model_type, get)
    extra = sorted(k for k in tensor_shapes if k not in used and not family.ignore_hf_tensor(k))
    if extra:
        raise ValueError(
            f"{source}: tensors {extra} have no place in a {model_type} model with this"
            " config; the checkpoint describes a different architecture than its config.json."
        )
    model = family.build(config, None, name)
    params = [Parameter(label=f"{name}/{k}", value=v) for k, v in values.items()]
    return _with_provenance(bind_variables(model, params), config, model_type)


def from_huggingface_model(
    hf_model: Any,
    *,
    dtype: Any = None,
    activation_dtype: Any = None,
    use_layer_stack: bool = False,
    name: str = "transformer",
) -> model_parts.TransformerLM:
    """Converts a live `transformers` causal LM into a saikei `TransformerLM`.

    torch is touched only through the model's own tensors, so this function
    needs no torch import of its own.

    Args:
      hf_model: A `transformers` `*ForCausalLM` model of a supported
        `model_type` (see `supported_model_types()`).
      dtype: Parameter dtype; None means float32.
      activation_dtype: Activation dtype; None means `dtype` (use float32 with
        bfloat16 weights to analyse activations at full precision).
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack`.
      name: Prefix of the parameter labels.

    Returns:
      A `TransformerLM` holding a copy of the model's weights.

    Raises:
      ValueError: for an unsupported config field/value or a tensor that
        does not fit.

    Example:
      >>> from saikei.models.transformer import _families
      >>> callable(_families.from_huggingface_model)
      True
    """
    state = dict(hf_model.state_dict())
    # Tied weights (e.g. lm_head sharing the embedding) appear twice in a state
    # dict; keep the first name, as safetensors checkpoints do.
    seen: set[Any] = set()
    for key in list(state):
        tensor = state[key]
        ident = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if ident in seen and tensor.numel():
            del state[key]
        seen.add(ident)
    shapes = {k: tuple(v.shape) for k, v in state.items()}

    def get_tensor(key: str) -> np.ndarray:
        return state[key].detach().cpu().float().numpy()

    return model_from_hf_tensors(
        hf_model.config.to_dict(),
        get_tensor,
        shapes,
        dtype=dtype,
        activation_dtype=activation_dtype,
        use_layer_stack=use_layer_stack,
        name=name,
        source=f"{type(hf_model).__name__}",
    )


def hf_tensors_from_model(
    model: model_parts.TransformerLM, model_type: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Returns `(config.json dict, {hf_name: array})` for a model built by a family builder.

    Args:
      model: A `TransformerLM` whose metadata records its builder config
        (every builder and loader in saikei sets it).
      model_type: The HF model_type to write; defaults to the one the model
        was loaded from, or the family's default.

    Example:
      >>> import jax
      >>> from saikei.models.transformer import _families
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=4, projection_dim=4, mlp_hidden_dim=8, num_decoder_blocks=1,
      ...     vocab_size=5)
      >>> hf_cfg, tensors = _families.hf_tensors_from_model(
      ...     llamalike.build_llamalike_transformer(cfg, jax.random.key(0)))
      >>> hf_cfg["model_type"], tensors["model.embed_tokens.weight"].shape
      ('llama', (5, 4))
    """
    config = getattr(model.metadata, "config", None)
    if config is None:
        raise ValueError(
            "save_pretrained: the model's metadata has no builder config, so its Hugging Face"
            " layout is unknown. Build it with a saikei builder or loader (they record it)."
        )
    model_type = model_type or getattr(model.metadata, "hf_model_type", None)
    family = _family_for_config(config, model_type)
    if model_type is None:
        model_type = family.config_to_hf(config, None)["model_type"]
    unbound, params = unbind_params(model)
    del unbound
    name_prefixes = {p.label.split("/", 1)[0] for p in params}
    if len(name_prefixes) != 1:
        raise ValueError(
            f"save_pretrained: expected every parameter label to share one model-name prefix,"
            f" found {sorted(name_prefixes)}."
        )
    values = {p.label.split("/", 1)[1]: p.value for p in params}
    tensors = family.params_to_hf(config, model_type, values)
    return family.config_to_hf(config, model_type), tensors


def _family_for_config(config: Any, model_type: str | None) -> Family:
    if model_type is not None:
        return family_for(model_type)
    for module in dict.fromkeys(_FAMILY_MODULES.values()):
        family = importlib.import_module(f"saikei.models.transformer.variants.{module}").FAMILY
        if isinstance(config, family.config_type):
            return family
    raise ValueError(f"save_pretrained: no family exports configs of type {type(config).__name__}.")


def positional(value: nx.NamedArray, *names: str) -> np.ndarray:
    """The NamedArray's data as a host numpy array with its axes in the order `names`.

    Example:
      >>> from saikei import sk
      >>> from saikei.models.transformer import _families
      >>> _families.positional(sk.nx.ones({"a": 2, "b": 3}), "b", "a").shape
      (3, 2)
    """
    return np.asarray(jax.device_get(value.untag(*names).data_array))
