"""Llama models (Llama 1, 2 and 3.x) from live Hugging Face `transformers` models.

A Llama is a configuration of the llama-like family (`variants.llamalike`);
this module is the per-architecture entry point penzai users know.
"""

from __future__ import annotations

from typing import Any

from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import _penzai_hf

__all__ = ["llama_from_huggingface_model"]


def llama_from_huggingface_model(
    model: Any,
    upcast_activations_to_float32: bool = False,
    use_layer_stack: bool = False,
) -> model_parts.TransformerLM:
    """Converts a `transformers.LlamaForCausalLM` into a saikei `TransformerLM`.

    Args:
      model: The live Hugging Face model (`model_type` "llama"), float32 or
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
      >>> from saikei.models.transformer.variants import llama
      >>> hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=16,
      ...     hidden_size=8, intermediate_size=16, num_hidden_layers=1,
      ...     num_attention_heads=2))
      >>> llama.llama_from_huggingface_model(hf).metadata.vocab_size
      16
    """
    return _penzai_hf.convert(
        model,
        ("llama",),
        "llama_from_huggingface_model",
        upcast_activations_to_float32=upcast_activations_to_float32,
        use_layer_stack=use_layer_stack,
    )
