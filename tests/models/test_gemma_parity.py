"""Parity of Gemma 1/2/3 (text) models converted from live `transformers` models."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import sk  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from saikei.models.transformer.variants import _llamalike_hf, llamalike  # noqa: E402
from tests.models._hf_helpers import (  # noqa: E402
    TINY_LLAMA,
    hf_logits,
    hf_state,
    left_padded,
    our_logits,
    random_hf_model,
    random_tokens,
)

_BASE = dict(
    TINY_LLAMA,
    num_key_value_heads=2,
    head_dim=8,
    # Larger weights than the default 0.02 make soft caps and scalings visible.
    initializer_range=0.1,
)
_CLASSES = {
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
}


def _hf_model(model_type: str, **overrides):
    # Gemma norms start at zero (scale 1 + 0); random ones show a wrong mapping.
    return random_hf_model(*_CLASSES[model_type], {**_BASE, **overrides})


CASES = {
    "gemma_mha": ("gemma", dict(num_key_value_heads=4)),
    "gemma_mqa_bias_untied_legacy_gelu": (
        "gemma",
        dict(
            num_key_value_heads=1, attention_bias=True, tie_word_embeddings=False, hidden_act="gelu"
        ),
    ),
    # 3 layers alternate local/global with one block left over under a LayerStack.
    "gemma2_gqa_softcaps": (
        "gemma2",
        dict(
            num_hidden_layers=3,
            sliding_window=4,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=1.0,
            final_logit_softcapping=0.5,
        ),
    ),
    "gemma2_mha_defaults_bias": (
        "gemma2",
        dict(num_hidden_layers=4, num_key_value_heads=4, sliding_window=3, attention_bias=True),
    ),
    # Period 3 (two local, one global) over 8 layers: 2 stacked steps and 2 left over.
    "gemma3_pattern3_linear_rope": (
        "gemma3_text",
        dict(
            num_hidden_layers=8,
            sliding_window=3,
            sliding_window_pattern=3,
            rope_scaling={"rope_type": "linear", "factor": 8.0},
            rope_local_base_freq=100.0,
        ),
    ),
    "gemma3_layer_types_rope_parameters": (
        "gemma3_text",
        dict(
            num_hidden_layers=4,
            num_key_value_heads=1,
            sliding_window=2,
            # Period 3 over 4 layers: one stacked step, one block left over.
            layer_types=[
                "full_attention",
                "sliding_attention",
                "sliding_attention",
                "full_attention",
            ],
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 50.0},
                "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10.0},
            },
            final_logit_softcapping=0.5,
            tie_word_embeddings=False,
        ),
    ),
}


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, use_layer_stack):
    model_type, overrides = CASES[case]
    model = _hf_model(model_type, **overrides)
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


def test_every_gemma_setting_changes_the_logits():
    # Guards the parity tests: dropping any one Gemma feature moves the logits.
    gemma3 = _hf_model("gemma3_text", **CASES["gemma3_pattern3_linear_rope"][1])
    gemma2 = _hf_model("gemma2", **CASES["gemma2_gqa_softcaps"][1])
    tokens = random_tokens()
    for hf_model, changes in (
        (
            gemma2,
            [
                dict(attn_logits_soft_cap=None),
                dict(final_logit_softcap=None),
                dict(query_scaling_factor="default"),
                dict(scale_embeddings=False),
            ],
        ),
        (gemma3, [dict(rope_scale_factor=1.0), dict(rope_wavelength=10_000.0)]),
    ):
        lm = _families.from_huggingface_model(hf_model)
        reference = hf_logits(hf_model, tokens)
        params = sk.unbind_params(lm)[1]
        for change in changes:
            config = dataclasses.replace(lm.metadata.config, **change)
            changed = sk.bind_variables(llamalike.build_llamalike_transformer(config), params)
            assert np.abs(our_logits(changed, tokens) - reference).max() > 1e-3, change


def test_gemma3_local_layers_use_their_own_rope():
    model = _hf_model("gemma3_text", **CASES["gemma3_pattern3_linear_rope"][1])
    lm = _families.from_huggingface_model(model)
    config = lm.metadata.config
    local = llamalike.RoPESettings(100.0)
    assert [t.rope for t in config.attention_type] == [local, local, None] * 2 + [local] * 2
    assert (config.rope_wavelength, config.rope_scale_factor) == (1_000_000.0, 8.0)
    # Giving the local layers the global RoPE breaks parity.
    same_rope = tuple(dataclasses.replace(t, rope=None) for t in config.attention_type)
    changed = sk.bind_variables(
        llamalike.build_llamalike_transformer(
            dataclasses.replace(config, attention_type=same_rope)
        ),
        sk.unbind_params(lm)[1],
    )
    tokens = random_tokens()
    assert np.abs(our_logits(changed, tokens) - hf_logits(model, tokens)).max() > 1e-3


def test_sliding_window_of_w_sees_w_tokens_including_itself():
    model = _hf_model("gemma2", num_hidden_layers=2, sliding_window=3)
    tokens = random_tokens(seq=10)
    expected = hf_logits(model, tokens)
    lm = _families.from_huggingface_model(model)
    np.testing.assert_allclose(our_logits(lm, tokens), expected, atol=1e-5, rtol=0)
    params = sk.unbind_params(lm)[1]
    for window in (2, 4):
        config = dataclasses.replace(
            lm.metadata.config,
            attention_type=(
                llamalike.AttentionTypeSlidingWindowCausal(window),
                llamalike.AttentionTypeGlobalCausal(),
            ),
        )
        other = sk.bind_variables(llamalike.build_llamalike_transformer(config), params)
        got = our_logits(other, tokens)
        # Positions before the window fills agree; later ones do not.
        np.testing.assert_allclose(got[:, :2], expected[:, :2], atol=1e-5, rtol=0)
        assert np.abs(got - expected)[:, 3:].max() > 1e-3, window


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_gemma2_left_padding_gives_unpadded_logits(use_layer_stack):
    model = _hf_model("gemma2", num_hidden_layers=3, sliding_window=3)
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    short = random_tokens(seq=8, batch=1)
    pad = 3
    padded, positions = left_padded(short, pad)
    got = our_logits(lm, padded, positions)[:, pad:]
    np.testing.assert_allclose(got, hf_logits(model, short), atol=1e-5, rtol=0)


def test_layer_stack_labels_follow_the_attention_period():
    model = _hf_model("gemma3_text", **CASES["gemma3_pattern3_linear_rope"][1])
    lm = _families.from_huggingface_model(model, use_layer_stack=True)
    assert llamalike.layer_stack_period(lm.metadata.config) == 3
    shapes = {p.label: p.value.named_shape for p in sk.unbind_params(lm)[1]}
    assert shapes["transformer/blocks/block_2/attention/key_norm/scale.weights"] == {
        "blocks": 2,
        "projection": 8,
    }
    assert shapes["transformer/block_7/post_ffw_norm/scale.weights"] == {"embedding": 32}
    blocks = {label.split("/")[1] for label in shapes if label.split("/")[1].startswith("block")}
    assert blocks == {"blocks", "block_6", "block_7"}
    # Gemma 2's uniform-by-pairs layout and a uniform Gemma 3 (all local) one.
    gemma2 = _families.from_huggingface_model(
        _hf_model("gemma2", num_hidden_layers=4), use_layer_stack=True
    )
    labels = {p.label for p in sk.unbind_params(gemma2)[1]}
    assert "transformer/blocks/block_1/attention/query.weights" in labels
    uniform = _families.from_huggingface_model(_hf_model("gemma3_text"), use_layer_stack=True)
    labels = {p.label for p in sk.unbind_params(uniform)[1]}
    assert "transformer/blocks/attention/query.weights" in labels


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_params_to_hf_inverts_params_from_hf(case, use_layer_stack):
    model_type, overrides = CASES[case]
    model = _hf_model(model_type, **overrides)
    tensors = hf_state(model)
    config = dataclasses.replace(
        _llamalike_hf.config_from_hf(model.config.to_dict()), use_layer_stack=use_layer_stack
    )

    def get(name, shape):
        assert tensors[name].shape == tuple(shape), name
        return tensors[name]

    values = _llamalike_hf.params_from_hf(config, model_type, get)
    back = _llamalike_hf.params_to_hf(config, model_type, values)
    assert sorted(back) == sorted(tensors)
    for name, tensor in tensors.items():
        # Norm weights come back through float32 `1 + w`: within one rounding of it.
        atol = 2.0**-23 if "norm" in name else 0.0
        np.testing.assert_allclose(back[name], tensor, atol=atol, rtol=0, err_msg=name)
    # Our side of the round trip is exact.
    again = _llamalike_hf.params_from_hf(config, model_type, lambda name, shape: back[name])
    for label, value in values.items():
        assert (again[label] == value).data_array.all(), label


@pytest.mark.parametrize("case", list(CASES))
def test_config_to_hf_inverts_config_from_hf(case):
    model_type, overrides = CASES[case]
    hf_config = getattr(transformers, _CLASSES[model_type][0])(**{**_BASE, **overrides})
    config = _llamalike_hf.config_from_hf(hf_config.to_dict())
    exported = _llamalike_hf.config_to_hf(config, model_type)
    assert exported["model_type"] == model_type
    assert _llamalike_hf.config_from_hf(exported) == config


@pytest.mark.parametrize(
    "case",
    ["gemma_mqa_bias_untied_legacy_gelu", "gemma2_gqa_softcaps", "gemma3_pattern3_linear_rope"],
)
def test_exported_checkpoint_loads_in_transformers_with_the_same_logits(case):
    model_type, overrides = CASES[case]
    model = _hf_model(model_type, **overrides)
    lm = _families.from_huggingface_model(model, use_layer_stack=True)
    hf_config, tensors = _families.hf_tensors_from_model(lm)
    config_name, model_name = _CLASSES[model_type]
    reloaded = getattr(transformers, model_name)(
        getattr(transformers, config_name).from_dict(hf_config)
    ).eval()
    missing, unexpected = reloaded.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=False
    )
    assert not unexpected
    assert set(missing) <= ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    tokens = random_tokens()
    np.testing.assert_allclose(
        hf_logits(reloaded, tokens), hf_logits(model, tokens), atol=1e-6, rtol=0
    )


def test_old_style_gemma3_config_reads_like_the_new_one():
    # Configs on the Hub written before transformers 5 give RoPE and layer pattern flat.
    old = {
        "model_type": "gemma3_text",
        **{k: v for k, v in _BASE.items() if k != "initializer_range"},
        "num_hidden_layers": 8,
        "sliding_window": 3,
        "sliding_window_pattern": 3,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 100.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    }
    new = transformers.Gemma3TextConfig.from_dict(old).to_dict()
    assert _llamalike_hf.config_from_hf(old) == _llamalike_hf.config_from_hf(new)


def _gemma3_dict(**overrides):
    return {"model_type": "gemma3_text", **_BASE, **overrides}


@pytest.mark.parametrize(
    "hf_config, message",
    [
        ({"model_type": "gemma3"}, r"model_type='gemma3'.*text_config"),
        (_gemma3_dict(use_bidirectional_attention=True), "use_bidirectional_attention=True"),
        (
            _gemma3_dict(
                rope_parameters={
                    "full_attention": {"rope_type": "yarn", "factor": 8.0, "rope_theta": 1e6},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                }
            ),
            r"rope_type='yarn'.*full_attention",
        ),
        (
            {**_gemma3_dict(hidden_activation="gelu"), "model_type": "gemma2"},
            "hidden_activation='gelu'",
        ),
        (_gemma3_dict(layer_types=["sliding_attention", "chunked_attention"]), r"layer_types\[1\]"),
    ],
    ids=["multimodal", "bidirectional", "yarn", "exact_gelu", "layer_type"],
)
def test_unsupported_gemma_settings_are_named(hf_config, message):
    with pytest.raises(ValueError, match=message):
        _llamalike_hf.config_from_hf(hf_config)


def test_config_to_hf_refuses_what_the_model_type_cannot_express():
    gemma2 = _llamalike_hf.config_from_hf(transformers.Gemma2Config(**_BASE).to_dict())
    with pytest.raises(ValueError, match="use_post_attn_norm"):
        _llamalike_hf.config_to_hf(gemma2, "llama")
    llama = _llamalike_hf.config_from_hf(
        transformers.LlamaConfig(**{k: v for k, v in _BASE.items()}).to_dict()
    )
    with pytest.raises(ValueError, match="scale_embeddings=False"):
        _llamalike_hf.config_to_hf(llama, "gemma")
    odd_scale = dataclasses.replace(gemma2, query_scaling_factor=0.3)
    with pytest.raises(ValueError, match=r"query_scaling_factor=0\.3"):
        _llamalike_hf.config_to_hf(odd_scale, "gemma2")
