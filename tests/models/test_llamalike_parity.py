"""Parity of llama-like models converted from live `transformers` models (tiny random configs)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei.models.transformer import _families  # noqa: E402
from saikei.models.transformer.variants import _llamalike_hf  # noqa: E402
from tests.models._hf_helpers import (  # noqa: E402
    TINY_LLAMA,
    hf_logits,
    left_padded,
    our_logits,
    random_hf_model,
    random_tokens,
)


def _hf_model(cls_name: str, **overrides):
    return random_hf_model(
        f"{cls_name}Config", f"{cls_name}ForCausalLM", {**TINY_LLAMA, **overrides}
    )


CASES = {
    "llama_mha": ("Llama", dict(num_key_value_heads=4)),
    "llama_gqa": ("Llama", dict(num_key_value_heads=2)),
    "llama_mqa": ("Llama", dict(num_key_value_heads=1)),
    "llama_tied_headdim_linear_rope": (
        "Llama",
        dict(
            num_key_value_heads=2,
            tie_word_embeddings=True,
            head_dim=16,
            mlp_bias=True,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
        ),
    ),
    "llama_attention_bias": ("Llama", dict(num_key_value_heads=2, attention_bias=True)),
    "mistral_sliding": ("Mistral", dict(num_key_value_heads=2, sliding_window=4)),
    "qwen2_bias": ("Qwen2", dict(num_key_value_heads=2)),
    "qwen3_qk_norm": ("Qwen3", dict(num_key_value_heads=2, head_dim=8)),
    "qwen3_attention_bias": ("Qwen3", dict(num_key_value_heads=1, attention_bias=True)),
}


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, use_layer_stack):
    cls_name, overrides = CASES[case]
    model = _hf_model(cls_name, **overrides)
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


def test_mistral_window_is_shorter_than_sequence_and_matters():
    model = _hf_model("Mistral", num_key_value_heads=2, sliding_window=3)
    lm = _families.from_huggingface_model(model)
    tokens = random_tokens(seq=10)
    ours = our_logits(lm, tokens)
    np.testing.assert_allclose(ours, hf_logits(model, tokens), atol=1e-5, rtol=0)
    model.config.sliding_window = None
    full = _families.from_huggingface_model(model)
    assert np.abs(our_logits(full, tokens) - ours)[:, 3:].max() > 1e-3


def test_qwen2_mixed_sliding_layers_match():
    model = _hf_model(
        "Qwen2",
        num_key_value_heads=2,
        num_hidden_layers=3,
        use_sliding_window=True,
        sliding_window=3,
        max_window_layers=1,
    )
    tokens = random_tokens(seq=10)
    expected = hf_logits(model, tokens)
    # [full, sliding, sliding] does not repeat: the LayerStack holds one step of all three.
    for use_layer_stack in (False, True):
        lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
        np.testing.assert_allclose(our_logits(lm, tokens), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_left_padding_gives_unpadded_logits(use_layer_stack):
    model = _hf_model("Llama", num_key_value_heads=2)
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    short = random_tokens(seq=6, batch=1)
    pad = 3
    padded, positions = left_padded(short, pad)
    got = our_logits(lm, padded, positions)[:, pad:]
    np.testing.assert_allclose(got, hf_logits(model, short), atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_layer_stack", [False, True])
def test_llama3_rope_scaling_matches(use_layer_stack):
    # A short original context makes every band of the llama3 rule matter:
    # with head_dim 8 the wavelengths are ~6, 63, 628 and 6283 tokens, against
    # the band edges 16 / 4 = 4 and 16 / 1 = 16.
    model = _hf_model(
        "Llama",
        num_key_value_heads=2,
        rope_parameters={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
            "rope_theta": 10000.0,
        },
    )
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


def test_unsupported_rope_type_is_named():
    model = _hf_model(
        "Llama",
        num_key_value_heads=2,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    )
    with pytest.raises(ValueError, match="rope_type='dynamic'"):
        _families.from_huggingface_model(model)


def test_unsupported_model_type_is_named():
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        _llamalike_hf.config_from_hf({"model_type": "gpt2"})


def test_unsupported_activation_is_named():
    cfg = {
        "model_type": "llama",
        "vocab_size": 8,
        "hidden_size": 8,
        "intermediate_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "hidden_act": "relu",
    }
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        _llamalike_hf.config_from_hf(cfg)


def test_partial_rotary_factor_is_named():
    cfg = {
        "model_type": "llama",
        "vocab_size": 8,
        "hidden_size": 8,
        "intermediate_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e4,
            "partial_rotary_factor": 0.5,
        },
    }
    with pytest.raises(ValueError, match=r"partial_rotary_factor=0\.5"):
        _llamalike_hf.config_from_hf(cfg)
