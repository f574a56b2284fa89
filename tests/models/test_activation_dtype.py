"""bfloat16 weights with float32 activations compute exactly what float32 does on the rounded weights."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei.models.transformer import from_huggingface_model  # noqa: E402
from tests.models._hf_helpers import hf_logits, our_logits, random_tokens  # noqa: E402

_CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(num_key_value_heads=2, head_dim=8)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(rotary_pct=0.5)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_positions=32)),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_float32_activations_over_bfloat16_weights(case):
    config_name, model_name, extra = _CASES[case]
    if case == "gpt2":
        sizes = dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4)
    else:
        sizes = dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
        )
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**sizes, **extra)
    model_cls = getattr(transformers, model_name)
    bf16 = model_cls(config).eval().to(torch.bfloat16)
    # The oracle: the same bfloat16-rounded weights, computed in float32 by HF.
    reference = model_cls(config).eval()
    reference.load_state_dict({k: v.float() for k, v in bf16.state_dict().items()})
    lm = from_huggingface_model(bf16, dtype=jnp.bfloat16, activation_dtype=jnp.float32)
    tokens = random_tokens(seq=8, batch=1)
    logits = our_logits(lm, tokens)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, hf_logits(reference, tokens), atol=1e-5, rtol=0)
