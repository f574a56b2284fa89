"""Mistral models from live Hugging Face `transformers` models.

A Mistral is a configuration of the llama-like family (`variants.llamalike`),
with sliding-window attention when its config sets `sliding_window`; this
module is the per-architecture entry point penzai users know.
"""

from __future__ import annotations

from typing import Any

from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import _penzai_hf

__all__ = ["mistral_from_huggingface_model"]


def mistral_from_huggingface_model(
    model: Any,
    upcast_activations_to_float32: bool = False,
    use_layer_stack: bool = False,
) -> model_parts.TransformerLM:
    """Converts a `transformers.MistralForCausalLM` into a saikei `TransformerLM`.

    Args:
      model: The live Hugging Face model (`model_type` "mistral"), float32 or
        bfloat16.
      upcast_activations_to_float32: Keep the parameters in the model's dtype
        but run the activations in float32.
      use_layer_stack: Build the blocks as one `sk.nn.LayerStack`.

    Returns:
      A `TransformerLM` holding a copy of the weights, in the model's dtype.

    Raises:
      ValueError: for another architecture, an unsupported dtype or config
        value.

    Example:
      >>> import transformers
      >>> from saikei.models.transformer.variants import mistral
      >>> hf = transformers.MistralForCausalLM(transformers.MistralConfig(vocab_size=16,
      ...     hidden_size=8, intermediate_size=16, num_hidden_layers=1,
      ...     num_attention_heads=2, num_key_value_heads=1))
      >>> mistral.mistral_from_huggingface_model(hf).metadata.query_only_head_axes
      {'query_heads': 2}
    """
    return _penzai_hf.convert(
        model,
        ("mistral",),
        "mistral_from_huggingface_model",
        upcast_activations_to_float32=upcast_activations_to_float32,
        use_layer_stack=use_layer_stack,
    )
