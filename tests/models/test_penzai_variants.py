"""penzai's per-architecture entry points (`variants.llama`, `.mistral`, `.gpt_neox`, ...).

Logits are checked against `transformers` on tiny random models; builders'
initial weights against penzai 0.2.5's builders for the same key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import sk  # noqa: E402
from saikei.models.transformer import variants  # noqa: E402
from saikei.models.transformer.variants import (  # noqa: E402
    gpt_neox,
    llama,
    llamalike,
    llamalike_common,
    mistral,
)
from tests.models._hf_helpers import (  # noqa: E402
    TINY_LLAMA,
    TINY_SIZES,
    hf_logits,
    our_logits,
    random_hf_model,
    random_tokens,
)


def _llama(**overrides):
    return random_hf_model("LlamaConfig", "LlamaForCausalLM", {**TINY_LLAMA, **overrides})


def _mistral(**overrides):
    return random_hf_model("MistralConfig", "MistralForCausalLM", {**TINY_LLAMA, **overrides})


def _gpt_neox(**overrides):
    return random_hf_model(
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {**TINY_SIZES, "layer_norm_eps": 1e-5, "rotary_pct": 0.25, **overrides},
        sharpen={"query_key_value.weight": 8.0},
    )


CONVERTERS = {
    "llama_gqa": (llama.llama_from_huggingface_model, lambda: _llama(num_key_value_heads=2)),
    "llama_mqa": (llama.llama_from_huggingface_model, lambda: _llama(num_key_value_heads=1)),
    "mistral_sliding": (
        mistral.mistral_from_huggingface_model,
        lambda: _mistral(num_key_value_heads=2, sliding_window=4),
    ),
    "gpt_neox": (gpt_neox.gpt_neox_from_huggingface_model, _gpt_neox),
    "llamalike_mistral": (
        llamalike.llamalike_from_huggingface_model,
        lambda: _mistral(num_key_value_heads=4),
    ),
}


@pytest.mark.parametrize(
    ("case", "use_layer_stack"),
    [
        ("llama_gqa", False),
        ("llama_mqa", True),
        ("mistral_sliding", False),
        ("mistral_sliding", True),
        ("gpt_neox", False),
        ("gpt_neox", True),
        ("llamalike_mistral", False),
    ],
)
def test_converted_logits_match_transformers(case, use_layer_stack):
    convert, make = CONVERTERS[case]
    hf = make()
    tokens = random_tokens()
    lm = convert(hf, use_layer_stack=use_layer_stack)
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(hf, tokens), atol=1e-5, rtol=0)
    if use_layer_stack:
        assert any(isinstance(layer, sk.nn.LayerStack) for layer in lm.body.sublayers)


def test_converter_rejects_another_architecture():
    with pytest.raises(ValueError, match=r"mistral_from_huggingface_model.*model_type='llama'"):
        mistral.mistral_from_huggingface_model(_llama())
    with pytest.raises(ValueError, match=r"gpt_neox_from_huggingface_model"):
        gpt_neox.gpt_neox_from_huggingface_model(_llama())


def test_bfloat16_model_keeps_its_dtype_and_can_upcast_activations():
    hf = _llama(num_key_value_heads=2).to(torch.bfloat16)
    tokens = random_tokens()
    plain = llama.llama_from_huggingface_model(hf)
    params = sk.unbind_params(plain)[1]
    assert {p.value.dtype for p in params} == {jnp.dtype(jnp.bfloat16)}
    assert plain(sk.nx.wrap(jnp.asarray(tokens), "batch", "seq")).dtype == jnp.bfloat16
    upcast = llama.llama_from_huggingface_model(hf, upcast_activations_to_float32=True)
    assert {p.value.dtype for p in sk.unbind_params(upcast)[1]} == {jnp.dtype(jnp.bfloat16)}
    logits = our_logits(upcast, tokens)
    assert upcast(sk.nx.wrap(jnp.asarray(tokens), "batch", "seq")).dtype == jnp.float32
    # The oracle: transformers on the same bfloat16 weights, computing in float32.
    np.testing.assert_allclose(logits, hf_logits(hf.float(), tokens), atol=1e-4, rtol=0)


def test_float16_model_is_refused():
    hf = _llama().to(torch.float16)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        llama.llama_from_huggingface_model(hf)


def test_module_names_match_penzai():
    assert variants.llamalike_common.build_llamalike_transformer is (
        llamalike.build_llamalike_transformer
    )
    for name in (
        "build_llamalike_attention",
        "build_llamalike_feedforward",
        "build_llamalike_block",
        "llamalike_from_huggingface_model",
        "LlamalikeTransformerConfig",
        "AttentionTypeGlobalCausal",
        "AttentionTypeSlidingWindowCausal",
    ):
        assert hasattr(llamalike_common, name), name
    for name in ("build_gpt_neox_attention", "build_gpt_neox_feedforward", "build_gpt_neox_block"):
        assert callable(getattr(gpt_neox, name)), name


_TINY = dict(
    num_kv_heads=2,
    query_head_multiplier=2,
    embedding_dim=16,
    projection_dim=4,
    mlp_hidden_dim=32,
    num_decoder_blocks=3,
    vocab_size=11,
    mlp_variant="swiglu",
    tie_embedder_and_logits=False,
)


def _arrays(params):
    return {p.label: np.asarray(p.value.unwrap(*sorted(p.value.named_shape))) for p in params}


def _assert_same_params(ours, theirs):
    pz = pytest.importorskip("penzai.pz")
    ours, theirs = _arrays(sk.unbind_params(ours)[1]), _arrays(pz.unbind_params(theirs)[1])
    assert sorted(ours) == sorted(theirs)
    for label, value in theirs.items():
        np.testing.assert_array_equal(ours[label], value, err_msg=label)


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_llamalike_transformer_starts_from_penzai_weights(use_layer_stack):
    penzai_ll = pytest.importorskip("penzai.models.transformer.variants.llamalike_common")
    key = jax.random.key(5)
    ours = llamalike.build_llamalike_transformer(
        llamalike.LlamalikeTransformerConfig(**_TINY, use_layer_stack=use_layer_stack), key
    )
    theirs = penzai_ll.build_llamalike_transformer(
        penzai_ll.LlamalikeTransformerConfig(**_TINY, use_layer_stack=use_layer_stack), key
    )
    _assert_same_params(ours, theirs)
    if use_layer_stack:
        return  # the same weights; the forward pass is compared once, below, for the list
    tokens = sk.nx.wrap(jnp.arange(7), "seq")
    np.testing.assert_allclose(
        np.asarray(ours(tokens).unwrap("seq", "vocabulary")),
        np.asarray(
            theirs(pytest.importorskip("penzai.pz").nx.wrap(jnp.arange(7), "seq")).unwrap(
                "seq", "vocabulary"
            )
        ),
        atol=1e-5,
    )


def test_llamalike_parts_start_from_penzai_weights():
    penzai_ll = pytest.importorskip("penzai.models.transformer.variants.llamalike_common")
    key = jax.random.key(9)
    local = dict(attention_type=(llamalike.AttentionTypeSlidingWindowCausal(3),))
    ours_cfg = llamalike.LlamalikeTransformerConfig(**_TINY)
    theirs_cfg = penzai_ll.LlamalikeTransformerConfig(**_TINY)
    _assert_same_params(
        llamalike.build_llamalike_feedforward("f", key, ours_cfg),
        penzai_ll.build_llamalike_feedforward("f", key, theirs_cfg),
    )
    _assert_same_params(
        llamalike.build_llamalike_attention("a", key, ours_cfg),
        penzai_ll.build_llamalike_attention("a", key, theirs_cfg),
    )
    _assert_same_params(
        llamalike.build_llamalike_block("b", key, ours_cfg),
        penzai_ll.build_llamalike_block("b", key, theirs_cfg),
    )
    with pytest.raises(ValueError, match="block_index"):
        llamalike.build_llamalike_block(
            "b", key, llamalike.LlamalikeTransformerConfig(**{**_TINY, **local})
        )


def test_llamalike_block_index_picks_the_attention_type():
    local, full = (
        llamalike.AttentionTypeSlidingWindowCausal(3),
        llamalike.AttentionTypeGlobalCausal(),
    )
    cfg = llamalike.LlamalikeTransformerConfig(**{**_TINY, "attention_type": (local, full)})
    masks = [
        type(llamalike.build_llamalike_attention("a", None, cfg, i).query_key_to_attn.sublayers[1])
        for i in range(3)
    ]
    assert [m.__name__ for m in masks] == [
        "ApplyCausalSlidingWindowAttentionMask",
        "ApplyCausalAttentionMask",
        "ApplyCausalSlidingWindowAttentionMask",
    ]
    with pytest.raises(ValueError, match="out of range"):
        llamalike.build_llamalike_attention("a", None, cfg, 3)


def test_gpt_neox_transformer_starts_from_penzai_weights():
    penzai_neox = pytest.importorskip("penzai.models.transformer.variants.gpt_neox")
    key = jax.random.key(4)
    ours = gpt_neox.build_gpt_neox_transformer(
        gpt_neox.GPTNeoXTransformerConfig(
            num_heads=4,
            embedding_dim=32,
            projection_dim=8,
            mlp_hidden_dim=64,
            num_decoder_blocks=2,
            vocab_size=11,
            rotary_pct=0.25,
        ),
        key,
    )
    theirs = penzai_neox.build_gpt_neox_transformer(
        penzai_neox.GPTNeoXTransformerConfig(
            num_attention_heads=4,
            embedding_dim=32,
            projection_dim=8,
            mlp_hidden_dim=64,
            num_decoder_blocks=2,
            vocab_size=11,
            activation_fn="gelu_exact",
            rope_subset_size=2,
            rope_wavelength=10_000.0,
            layernorm_epsilon=1e-5,
            parameter_dtype=jnp.float32,
            activation_dtype=jnp.float32,
        ),
        key,
    )
    _assert_same_params(ours, theirs)
