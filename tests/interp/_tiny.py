"""Tiny saikei models for the interp tests, converted from random `transformers` models.

Converting a tiny Hugging Face model takes a moment, where building the same
model with random init runs many small eager JAX ops (slow on a busy machine).
Test modules import it as `from tests.interp._tiny import tiny_lm`.
"""

import functools

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from saikei.models.transformer import _families
from tests.models._hf_helpers import TINY_LLAMA, TINY_SIZES, random_hf_model

_LLAMA = dict(TINY_LLAMA, num_key_value_heads=2, initializer_range=0.1)

# name: (config class, model class, config, use_layer_stack)
TINY = {
    "llama_list": ("LlamaConfig", "LlamaForCausalLM", dict(_LLAMA, num_hidden_layers=3), False),
    "llama_stack": ("LlamaConfig", "LlamaForCausalLM", dict(_LLAMA, num_hidden_layers=3), True),
    # Local/global layers in a period-2 LayerStack with one block left over, post-norms.
    "gemma2_stack": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(_LLAMA, num_hidden_layers=5, head_dim=8, sliding_window=2),
        True,
    ),
    "mqa_stack": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(_LLAMA, num_key_value_heads=1, num_hidden_layers=4, head_dim=8),
        True,
    ),
    "neox_parallel_stack": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(TINY_SIZES, num_hidden_layers=3, use_parallel_residual=True, rotary_pct=0.25),
        True,
    ),
    "gpt2_list": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16),
        False,
    ),
}


@functools.cache
def tiny_hf(which: str):
    """The random `transformers` model behind `tiny_lm(which)` (eager attention)."""
    config_class, model_class, config, _ = TINY[which]
    model = random_hf_model(config_class, model_class, config)
    model.set_attn_implementation("eager")
    return model


@functools.cache
def tiny_lm(which: str):
    """A saikei `TransformerLM` (without hook points) converted from `tiny_hf(which)`."""
    return _families.from_huggingface_model(tiny_hf(which), use_layer_stack=TINY[which][3])
