"""Parity of GPT-NeoX (Pythia) models converted from live `transformers` models (tiny configs)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import sk  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from saikei.models.transformer.variants import _gpt_neox_hf, gpt_neox  # noqa: E402
from tests.models._hf_helpers import (  # noqa: E402
    TINY_SIZES,
    hf_logits,
    left_padded,
    our_logits,
    random_hf_model,
    random_tokens,
    slot_labels,
)

_BASE = dict(TINY_SIZES, layer_norm_eps=1e-5)


def _hf_model(**overrides):
    return random_hf_model(
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {**_BASE, **overrides},
        sharpen={"query_key_value.weight": 8.0},
    )


CASES = {
    "parallel_rotary_0.25": dict(use_parallel_residual=True, rotary_pct=0.25),
    "parallel_rotary_1.0": dict(use_parallel_residual=True, rotary_pct=1.0),
    "sequential_rotary_0.25": dict(use_parallel_residual=False, rotary_pct=0.25),
    "sequential_rotary_1.0_tanh_gelu": dict(
        use_parallel_residual=False, rotary_pct=1.0, hidden_act="gelu_new"
    ),
    "no_attention_bias_tied_linear_rope": dict(
        attention_bias=False,
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "linear",
            "factor": 2.0,
            "rope_theta": 500.0,
            "partial_rotary_factor": 0.5,
        },
    ),
}


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, use_layer_stack):
    model = _hf_model(**CASES[case])
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


def test_rotation_is_partial_and_applied():
    # With rotary_pct 0.25 only 2 of 8 dims per head rotate: turning RoPE off
    # must change the logits (it is applied), and the model must not equal the
    # fully rotated one (the subset is respected).
    partial = _hf_model(rotary_pct=0.25)
    lm = _families.from_huggingface_model(partial)
    tokens = random_tokens()
    ours = our_logits(lm, tokens)
    cfg = lm.metadata.config
    for other in (
        dataclasses.replace(cfg, rotary_pct=0.0),
        dataclasses.replace(cfg, rotary_pct=1.0),
    ):
        slots = gpt_neox.build_gpt_neox_transformer(other, None)
        rebound = sk.bind_variables(slots, sk.unbind_params(lm)[1])
        assert np.abs(our_logits(rebound, tokens) - ours).max() > 1e-3


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
def test_left_padding_gives_unpadded_logits(use_layer_stack, parallel):
    model = _hf_model(use_parallel_residual=parallel)
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    short = random_tokens(seq=6, batch=1)
    pad = 3
    padded, positions = left_padded(short, pad)
    got = our_logits(lm, padded, positions)[:, pad:]
    np.testing.assert_allclose(got, hf_logits(model, short), atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_params_round_trip_to_hf_names(use_layer_stack):
    model = _hf_model(rotary_pct=0.25)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["embed_out.weight"] = state.pop("lm_head.weight")  # the on-disk name
    config = dataclasses.replace(
        _gpt_neox_hf.config_from_hf(model.config.to_dict()), use_layer_stack=use_layer_stack
    )

    def get(key, shape):
        assert state[key].shape == tuple(shape), key
        return jnp.asarray(state[key])

    values = _gpt_neox_hf.params_from_hf(config, "gpt_neox", get)
    assert any(k.startswith("blocks/" if use_layer_stack else "block_1/") for k in values)
    back = _gpt_neox_hf.params_to_hf(config, "gpt_neox", values)
    assert sorted(back) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_lm_head_loads_under_either_name():
    model = _hf_model()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    cfg = model.config.to_dict()
    tokens = random_tokens()
    expected = hf_logits(model, tokens)
    for name in ("lm_head.weight", "embed_out.weight"):
        renamed = {(name if k == "lm_head.weight" else k): v for k, v in state.items()}
        shapes = {k: v.shape for k, v in renamed.items()}
        lm = _families.model_from_hf_tensors(cfg, renamed.__getitem__, shapes)
        np.testing.assert_allclose(our_logits(lm, tokens), expected, atol=1e-5, rtol=0)
    del state["lm_head.weight"]
    with pytest.raises(ValueError, match=r"'embed_out\.weight'.*'lm_head\.weight'"):
        _families.model_from_hf_tensors(
            cfg, state.__getitem__, {k: v.shape for k, v in state.items()}
        )


def test_checkpoint_buffers_are_ignored_and_strays_rejected():
    model = _hf_model()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["gpt_neox.layers.0.attention.bias"] = np.ones((1, 1, 4, 4), dtype=bool)
    state["gpt_neox.layers.0.attention.masked_bias"] = np.array(-1e9)
    state["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = np.ones(1)
    shapes = {k: v.shape for k, v in state.items()}
    cfg = model.config.to_dict()
    lm = _families.model_from_hf_tensors(cfg, state.__getitem__, shapes)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)
    state["gpt_neox.layers.0.attention.q_proj.weight"] = np.ones(1)
    with pytest.raises(ValueError, match=r"q_proj\.weight"):
        _families.model_from_hf_tensors(
            cfg, state.__getitem__, {k: v.shape for k, v in state.items()}
        )


@pytest.mark.parametrize(
    "overrides",
    [
        dict(rotary_pct=0.25),
        dict(use_parallel_residual=False, hidden_act="gelu_new", rotary_pct=1.0),
        dict(
            tie_word_embeddings=True,
            attention_bias=False,
            rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100.0},
        ),
    ],
)
def test_config_round_trip(overrides):
    hf = transformers.GPTNeoXConfig(**{**_BASE, **overrides}).to_dict()
    ours = _gpt_neox_hf.config_from_hf(hf)
    written = _gpt_neox_hf.config_to_hf(ours, None)
    assert _gpt_neox_hf.config_from_hf(written) == ours
    rebuilt = transformers.GPTNeoXConfig(**written).to_dict()
    for key in (*_BASE, "hidden_act", "use_parallel_residual", "attention_bias"):
        assert rebuilt[key] == hf[key], key
    assert rebuilt["tie_word_embeddings"] == hf["tie_word_embeddings"]
    assert rebuilt["rope_parameters"] == hf["rope_parameters"]


def test_old_style_config_json_keys():
    # Pythia's config.json: rotary_pct / rotary_emb_base at the top level.
    cfg = {
        "model_type": "gpt_neox",
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "rotary_pct": 0.5,
        "rotary_emb_base": 123.0,
        "hidden_act": "gelu",
    }
    ours = _gpt_neox_hf.config_from_hf(cfg)
    assert (ours.rotary_pct, ours.rope_wavelength) == (0.5, 123.0)


def test_saved_model_loads_in_transformers(tmp_path):
    # Our export, read back by transformers, computes the same logits.
    model = _hf_model(rotary_pct=0.25)
    lm = _families.from_huggingface_model(model, use_layer_stack=True)
    hf_cfg, tensors = _families.hf_tensors_from_model(lm)
    reloaded = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**hf_cfg)).eval()
    renamed = {("lm_head.weight" if k == "embed_out.weight" else k): v for k, v in tensors.items()}
    missing, unexpected = reloaded.load_state_dict(
        {k: torch.tensor(v) for k, v in renamed.items()}, strict=False
    )
    assert not unexpected and not missing
    tokens = random_tokens()
    np.testing.assert_allclose(
        hf_logits(reloaded, tokens), hf_logits(model, tokens), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("hidden_act", "relu", "hidden_act='relu'"),
        ("rotary_pct", 0.375, r"partial_rotary_factor=0\.375"),
        ("num_attention_heads", 5, "num_attention_heads=5"),
        ("model_type", "gpt2", "model_type='gpt2'"),
        ("rope_scaling", {"type": "dynamic", "factor": 2.0}, "rope_type='dynamic'"),
    ],
)
def test_unsupported_config_values_are_named(field, value, match):
    cfg = {"model_type": "gpt_neox", **_BASE, field: value}
    with pytest.raises(ValueError, match=match):
        _gpt_neox_hf.config_from_hf(cfg)


def test_builder_rejects_odd_rotary_dims_naming_the_field():
    cfg = gpt_neox.GPTNeoXTransformerConfig(
        num_heads=2,
        embedding_dim=16,
        projection_dim=8,
        mlp_hidden_dim=16,
        num_decoder_blocks=1,
        vocab_size=8,
        rotary_pct=0.375,
    )
    with pytest.raises(ValueError, match="rotary_pct"):
        gpt_neox.build_gpt_neox_transformer(cfg, jax.random.key(0))


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_builder_slots_are_what_the_mapping_fills(use_layer_stack):
    cfg = gpt_neox.GPTNeoXTransformerConfig(
        num_heads=2,
        embedding_dim=16,
        projection_dim=8,
        mlp_hidden_dim=24,
        num_decoder_blocks=2,
        vocab_size=8,
        rotary_pct=0.25,
        use_layer_stack=use_layer_stack,
    )
    lm = gpt_neox.build_gpt_neox_transformer(cfg, None, name="m")
    assert lm.metadata.config == cfg
    values = _gpt_neox_hf.params_from_hf(cfg, "gpt_neox", lambda k, s: np.ones(s))
    assert slot_labels(lm) == {f"m/{k}" for k in values}
