"""`interp.weights` against the tensors of the Hugging Face model the saikei model came from."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import interp, sk  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from saikei.models.transformer.variants import llamalike  # noqa: E402
from tests.models._hf_helpers import TINY_LLAMA, TINY_SIZES, random_hf_model  # noqa: E402

# Axis orders the expected numpy arrays below are written in.
AXES = {
    "W_Q": ("layer", "heads", "embedding", "projection"),
    "W_K": ("layer", "kv_heads", "embedding", "projection"),
    "W_V": ("layer", "kv_heads", "embedding", "projection"),
    "W_O": ("layer", "heads", "projection", "embedding"),
    "b_Q": ("layer", "heads", "projection"),
    "b_K": ("layer", "kv_heads", "projection"),
    "b_V": ("layer", "kv_heads", "projection"),
    "b_O": ("layer", "embedding"),
    "W_in": ("layer", "embedding", "neurons"),
    "W_gate": ("layer", "embedding", "neurons"),
    "W_out": ("layer", "neurons", "embedding"),
    "b_in": ("layer", "neurons"),
    "b_out": ("layer", "embedding"),
    "W_E": ("vocabulary", "embedding"),
    "W_U": ("embedding", "vocabulary"),
    "W_pos": ("positions", "embedding"),
    "final_norm_scale": ("embedding",),
    "final_norm_bias": ("embedding",),
}


def _state(model):
    return {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def _heads_in(weight, heads):
    """`(heads * d, E)` torch Linear weight -> `(heads, E, d)`."""
    return weight.reshape(heads, -1, weight.shape[1]).transpose(0, 2, 1)


def _llamalike_expected(model, gemma=False):
    s = _state(model)
    cfg = model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    layers = range(cfg.num_hidden_layers)
    p = "model.layers.{}."

    def per_layer(fn):
        return np.stack([fn(p.format(i)) for i in layers])

    out = {
        "W_Q": per_layer(lambda q: _heads_in(s[q + "self_attn.q_proj.weight"], heads)),
        "W_K": per_layer(lambda q: _heads_in(s[q + "self_attn.k_proj.weight"], kv)),
        "W_V": per_layer(lambda q: _heads_in(s[q + "self_attn.v_proj.weight"], kv)),
        "W_O": per_layer(
            lambda q: s[q + "self_attn.o_proj.weight"].T.reshape(heads, -1, cfg.hidden_size)
        ),
        "W_gate": per_layer(lambda q: s[q + "mlp.gate_proj.weight"].T),
        "W_in": per_layer(lambda q: s[q + "mlp.up_proj.weight"].T),
        "W_out": per_layer(lambda q: s[q + "mlp.down_proj.weight"].T),
        "W_E": s["model.embed_tokens.weight"],
        "W_U": s.get("lm_head.weight", s["model.embed_tokens.weight"]).T,
        "final_norm_scale": s["model.norm.weight"] + (1.0 if gemma else 0.0),
    }
    if "model.layers.0.self_attn.q_proj.bias" in s:
        out["b_Q"] = per_layer(lambda q: s[q + "self_attn.q_proj.bias"].reshape(heads, -1))
        out["b_K"] = per_layer(lambda q: s[q + "self_attn.k_proj.bias"].reshape(kv, -1))
        out["b_V"] = per_layer(lambda q: s[q + "self_attn.v_proj.bias"].reshape(kv, -1))
    return out


def _neox_expected(model):
    s = _state(model)
    cfg = model.config
    heads, emb = cfg.num_attention_heads, cfg.hidden_size
    d = emb // heads

    def per_layer(fn):
        return np.stack([fn(f"gpt_neox.layers.{i}.") for i in range(cfg.num_hidden_layers)])

    def qkv(q, which):
        # HF views the fused output as (heads, 3 * d) and chunks the last axis.
        w = s[q + "attention.query_key_value.weight"].reshape(heads, 3, d, emb)[:, which]
        return w.transpose(0, 2, 1)

    def qkv_bias(q, which):
        return s[q + "attention.query_key_value.bias"].reshape(heads, 3, d)[:, which]

    return {
        "W_Q": per_layer(lambda q: qkv(q, 0)),
        "W_K": per_layer(lambda q: qkv(q, 1)),
        "W_V": per_layer(lambda q: qkv(q, 2)),
        "b_Q": per_layer(lambda q: qkv_bias(q, 0)),
        "b_K": per_layer(lambda q: qkv_bias(q, 1)),
        "b_V": per_layer(lambda q: qkv_bias(q, 2)),
        "W_O": per_layer(lambda q: s[q + "attention.dense.weight"].T.reshape(heads, d, emb)),
        "b_O": per_layer(lambda q: s[q + "attention.dense.bias"]),
        "W_in": per_layer(lambda q: s[q + "mlp.dense_h_to_4h.weight"].T),
        "b_in": per_layer(lambda q: s[q + "mlp.dense_h_to_4h.bias"]),
        "W_out": per_layer(lambda q: s[q + "mlp.dense_4h_to_h.weight"].T),
        "b_out": per_layer(lambda q: s[q + "mlp.dense_4h_to_h.bias"]),
        "W_E": s["gpt_neox.embed_in.weight"],
        "W_U": s["lm_head.weight"].T,
        "final_norm_scale": s["gpt_neox.final_layer_norm.weight"],
        "final_norm_bias": s["gpt_neox.final_layer_norm.bias"],
    }


def _gpt2_expected(model):
    s = _state(model)
    cfg = model.config
    heads, emb = cfg.n_head, cfg.n_embd
    d = emb // heads

    def per_layer(fn):
        return np.stack([fn(f"transformer.h.{i}.") for i in range(cfg.n_layer)])

    def qkv(q, which):
        # Conv1D: y = x @ W, W of shape (E, 3E) split into q | k | v, each (heads, d).
        w = s[q + "attn.c_attn.weight"][:, which * emb : (which + 1) * emb]
        return w.reshape(emb, heads, d).transpose(1, 0, 2)

    def qkv_bias(q, which):
        return s[q + "attn.c_attn.bias"][which * emb : (which + 1) * emb].reshape(heads, d)

    return {
        "W_Q": per_layer(lambda q: qkv(q, 0)),
        "W_K": per_layer(lambda q: qkv(q, 1)),
        "W_V": per_layer(lambda q: qkv(q, 2)),
        "b_Q": per_layer(lambda q: qkv_bias(q, 0)),
        "b_K": per_layer(lambda q: qkv_bias(q, 1)),
        "b_V": per_layer(lambda q: qkv_bias(q, 2)),
        "W_O": per_layer(lambda q: s[q + "attn.c_proj.weight"].reshape(heads, d, emb)),
        "b_O": per_layer(lambda q: s[q + "attn.c_proj.bias"]),
        "W_in": per_layer(lambda q: s[q + "mlp.c_fc.weight"]),
        "b_in": per_layer(lambda q: s[q + "mlp.c_fc.bias"]),
        "W_out": per_layer(lambda q: s[q + "mlp.c_proj.weight"]),
        "b_out": per_layer(lambda q: s[q + "mlp.c_proj.bias"]),
        "W_E": s["transformer.wte.weight"],
        "W_U": s["transformer.wte.weight"].T,
        "W_pos": s["transformer.wpe.weight"],
        "final_norm_scale": s["transformer.ln_f.weight"],
        "final_norm_bias": s["transformer.ln_f.bias"],
    }


def _gemma2():
    return random_hf_model(
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(TINY_LLAMA, num_key_value_heads=2, head_dim=8, num_hidden_layers=3, sliding_window=4),
    )


CASES = {
    "llama_gqa": (
        lambda: random_hf_model(
            "LlamaConfig", "LlamaForCausalLM", dict(TINY_LLAMA, num_key_value_heads=2)
        ),
        _llamalike_expected,
    ),
    "llama_mqa_tied": (
        lambda: random_hf_model(
            "LlamaConfig",
            "LlamaForCausalLM",
            dict(TINY_LLAMA, num_key_value_heads=1, tie_word_embeddings=True),
        ),
        _llamalike_expected,
    ),
    "qwen2_mha_bias": (
        lambda: random_hf_model(
            "Qwen2Config", "Qwen2ForCausalLM", dict(TINY_LLAMA, num_key_value_heads=4)
        ),
        _llamalike_expected,
    ),
    # Three blocks alternating local/global: a LayerStack of 2-block steps plus one block.
    "gemma2_period_2": (_gemma2, lambda m: _llamalike_expected(m, gemma=True)),
    "gpt_neox": (
        lambda: random_hf_model(
            "GPTNeoXConfig", "GPTNeoXForCausalLM", dict(TINY_SIZES, rotary_pct=0.25)
        ),
        _neox_expected,
    ),
    "gpt2": (
        lambda: random_hf_model(
            "GPT2Config",
            "GPT2LMHeadModel",
            dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16),
        ),
        _gpt2_expected,
    ),
}


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_weights_equal_the_hf_tensors(case, use_layer_stack):
    make, expected_of = CASES[case]
    model = make()
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    w = interp.weights(lm)
    expected = expected_of(model)
    for name, axes in AXES.items():
        ours = getattr(w, name)
        if name not in expected:
            assert ours is None, name
            continue
        np.testing.assert_allclose(
            np.asarray(ours.unwrap(*axes)), expected[name], atol=1e-7, err_msg=name
        )
        if axes[0] == "layer":
            for i in (0, len(w.layers) - 1):
                np.testing.assert_allclose(
                    np.asarray(getattr(w.layers[i], name).unwrap(*axes[1:])),
                    expected[name][i],
                    atol=1e-7,
                    err_msg=f"layers[{i}].{name}",
                )


def test_weights_read_the_live_parameters():
    lm = _families.from_huggingface_model(CASES["llama_gqa"][0]())
    w = interp.weights(lm)
    query = (
        sk.select(lm)
        .at_instances_of(sk.Parameter)
        .where(lambda p: p.label == "transformer/block_1/attention/query.weights")
        .get()
    )
    query.value = query.value * 0 + 3.0
    assert float(jnp.min(w.W_Q.unwrap("layer", "heads", "embedding", "projection")[1])) == 3.0
    assert float(jnp.max(w.layers[0].W_Q.unwrap("heads", "embedding", "projection"))) != 3.0
    # Hook points (and interventions) around the projections change nothing.
    hooked = interp.intervene(lm, {"blocks.*.attn.result": interp.Scale(1.0)})
    for name in ("W_Q", "W_O", "W_gate", "W_in", "W_out", "W_U"):
        assert (getattr(interp.weights(hooked), name) == getattr(w, name)).data_array.all(), name


def test_weights_of_unbound_model_names_the_slot():
    cfg = llamalike.LlamalikeTransformerConfig(
        num_kv_heads=2,
        query_head_multiplier=2,
        embedding_dim=8,
        projection_dim=4,
        mlp_hidden_dim=16,
        num_decoder_blocks=2,
        vocab_size=11,
    )
    lm = llamalike.build_llamalike_transformer(cfg, None)
    with pytest.raises(ValueError, match=r"unbound slot 'transformer/block_0/attention/query"):
        _ = interp.weights(lm).W_Q


def test_weights_rejects_a_non_transformer():
    with pytest.raises(TypeError, match="expected a TransformerLM"):
        interp.weights(sk.nn.Identity())
