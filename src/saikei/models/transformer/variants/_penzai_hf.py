"""The conversion behind penzai's per-family `*_from_huggingface_model` functions.

penzai converts a live `transformers` model keeping its parameter dtype
(float32 or bfloat16) and, with `upcast_activations_to_float32`, runs the
activations in float32. The per-family entry points (`llama`, `mistral`,
`gpt_neox`, `llamalike`) check the architecture and call `convert` here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import jax.numpy as jnp

from saikei.models.transformer import _families, model_parts

_DTYPES = {"torch.float32": jnp.float32, "torch.bfloat16": jnp.bfloat16}


def convert(
    model: Any,
    model_types: Collection[str],
    function: str,
    *,
    upcast_activations_to_float32: bool,
    use_layer_stack: bool,
) -> model_parts.TransformerLM:
    """Converts `model` after checking that its `model_type` is one of `model_types`.

    Args:
      model: A live `transformers` causal LM.
      model_types: The Hugging Face `model_type`s `function` accepts.
      function: The public function's name, for error messages.
      upcast_activations_to_float32: Run activations in float32 whatever the
        parameter dtype.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack`.

    Returns:
      The `TransformerLM`, parameters in the model's dtype.

    Raises:
      ValueError: for another architecture or a dtype other than float32/bfloat16.

    Example:
      >>> from saikei.models.transformer.variants import _penzai_hf
      >>> _penzai_hf.convert(object(), ("llama",), "llama_from_huggingface_model",
      ...     upcast_activations_to_float32=False, use_layer_stack=False)
      Traceback (most recent call last):
      ...
      ValueError: llama_from_huggingface_model expects a transformers model (with a .config), got object.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "state_dict"):
        raise ValueError(
            f"{function} expects a transformers model (with a .config), got {type(model).__name__}."
        )
    model_type = getattr(config, "model_type", None)
    if model_type not in model_types:
        raise ValueError(
            f"{function} converts model_type {sorted(model_types)}, but this"
            f" {type(model).__name__} has model_type={model_type!r}. Use the function for its"
            " family, or saikei.models.transformer.from_huggingface_model(model), which picks"
            " the family from the config."
        )
    dtype = _DTYPES.get(str(getattr(model, "dtype", "torch.float32")))
    if dtype is None:
        raise ValueError(
            f"{function}: the model's parameters are {model.dtype}; convert float32 or bfloat16"
            " models (e.g. model.float() first)."
        )
    return _families.from_huggingface_model(
        model,
        dtype=dtype,
        activation_dtype=jnp.float32 if upcast_activations_to_float32 else dtype,
        use_layer_stack=use_layer_stack,
    )
