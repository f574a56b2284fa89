"""Parity of GPT-2 models converted from live `transformers` models (tiny random configs)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import sk  # noqa: E402
from saikei.models.transformer import _families  # noqa: E402
from saikei.models.transformer.variants import _gpt2_hf, gpt2  # noqa: E402
from tests.models._hf_helpers import (  # noqa: E402
    hf_logits,
    hf_state,
    left_padded,
    our_logits,
    random_hf_model,
    random_tokens,
    slot_labels,
)

_BASE = dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16)


def _hf_model(**overrides):
    return random_hf_model(
        "GPT2Config",
        "GPT2LMHeadModel",
        {**_BASE, "bos_token_id": 0, "eos_token_id": 0, **overrides},
        sharpen={"c_attn.weight": 8.0},
    )


CASES = {
    "default": dict(),
    "exact_gelu_n_inner": dict(activation_function="gelu", n_inner=40),
    "unscaled_attention": dict(scale_attn_weights=False),
    "untied_eps": dict(tie_word_embeddings=False, layer_norm_epsilon=1e-3),
}


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, use_layer_stack):
    model = _hf_model(**CASES[case])
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_left_padding_gives_unpadded_logits(use_layer_stack):
    model = _hf_model()
    lm = _families.from_huggingface_model(model, use_layer_stack=use_layer_stack)
    short = random_tokens(seq=6, batch=2)
    pad = 3
    padded, positions = left_padded(short, pad)
    got = our_logits(lm, padded, positions)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[:, pad:], hf_logits(model, short), atol=1e-5, rtol=0)


def test_positions_come_from_the_side_input():
    # Shifting every position by 2 must change the logits (the table is read
    # at token_positions, not at the index along seq) and match HF given the
    # same position_ids.
    model = _hf_model()
    lm = _families.from_huggingface_model(model)
    tokens = random_tokens(seq=6)
    shifted = np.tile(np.arange(2, 8), (2, 1))
    ours = our_logits(lm, tokens, shifted)
    with torch.no_grad():
        theirs = model(torch.tensor(tokens), position_ids=torch.tensor(shifted)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert np.abs(ours - our_logits(lm, tokens)).max() > 1e-3


def test_positions_past_the_table_raise():
    lm = _families.from_huggingface_model(_hf_model())
    tokens = np.zeros((1, 3), dtype=np.int32)
    with pytest.raises(ValueError, match="16 learned position embeddings"):
        our_logits(lm, tokens, np.array([[14, 15, 16]]))


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_params_round_trip_to_hf_names(use_layer_stack, tied):
    model = _hf_model(tie_word_embeddings=tied)
    state = hf_state(model)
    config = dataclasses.replace(
        _gpt2_hf.config_from_hf(model.config.to_dict()), use_layer_stack=use_layer_stack
    )
    values = _gpt2_hf.params_from_hf(config, "gpt2", lambda key, shape: jnp.asarray(state[key]))
    assert any(k.startswith("blocks/" if use_layer_stack else "block_1/") for k in values)
    back = _gpt2_hf.params_to_hf(config, "gpt2", values)
    assert sorted(back) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_openai_checkpoint_names_and_buffers_load():
    # The original checkpoints have no `transformer.` prefix and carry the
    # causal-mask buffers `h.{i}.attn.bias` / `masked_bias`.
    model = _hf_model()
    state = {k.removeprefix("transformer."): v for k, v in hf_state(model).items()}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = np.ones((1, 1, 16, 16), dtype=np.float32)
        state[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    shapes = {k: v.shape for k, v in state.items()}
    lm = _families.model_from_hf_tensors(model.config.to_dict(), state.__getitem__, shapes)
    tokens = random_tokens()
    np.testing.assert_allclose(our_logits(lm, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)


def test_misshapen_tensor_is_named():
    model = _hf_model()
    state = hf_state(model)
    state["transformer.h.1.mlp.c_fc.weight"] = state["transformer.h.1.mlp.c_fc.weight"].T
    shapes = {k: v.shape for k, v in state.items()}
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight.*\(128, 32\)"):
        _families.model_from_hf_tensors(model.config.to_dict(), state.__getitem__, shapes)


@pytest.mark.parametrize("overrides", [dict(), *CASES.values()])
def test_config_round_trip(overrides):
    hf = transformers.GPT2Config(**{**_BASE, **overrides}).to_dict()
    ours = _gpt2_hf.config_from_hf(hf)
    written = _gpt2_hf.config_to_hf(ours, None)
    assert _gpt2_hf.config_from_hf(written) == ours
    rebuilt = transformers.GPT2Config(**written).to_dict()
    for key in written:
        if key not in ("architectures", "torch_dtype"):
            assert rebuilt[key] == hf[key], key


def test_saved_model_loads_in_transformers():
    model = _hf_model(n_inner=40)
    lm = _families.from_huggingface_model(model, use_layer_stack=True)
    hf_cfg, tensors = _families.hf_tensors_from_model(lm)
    reloaded = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_cfg)).eval()
    missing, unexpected = reloaded.load_state_dict(
        {k: torch.tensor(v) for k, v in tensors.items()}, strict=False
    )
    # The tied lm_head is the embedding table itself, so it needs no tensor.
    assert not unexpected and missing == ["lm_head.weight"]
    tokens = random_tokens()
    np.testing.assert_allclose(
        hf_logits(reloaded, tokens), hf_logits(model, tokens), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scale_attn_by_inverse_layer_idx", True),
        ("reorder_and_upcast_attn", True),
        ("add_cross_attention", True),
        ("activation_function", "relu"),
        ("n_head", 5),
        ("model_type", "gpt_neox"),
    ],
)
def test_unsupported_config_values_are_named(field, value):
    cfg = {"model_type": "gpt2", **_BASE, field: value}
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        _gpt2_hf.config_from_hf(cfg)


def test_builder_rejects_indivisible_heads_naming_the_field():
    cfg = gpt2.GPT2TransformerConfig(
        num_heads=3,
        embedding_dim=32,
        mlp_hidden_dim=64,
        num_decoder_blocks=1,
        vocab_size=8,
        max_positions=8,
    )
    with pytest.raises(ValueError, match="num_heads=3"):
        gpt2.build_gpt2_transformer(cfg, jax.random.key(0))


@pytest.mark.parametrize("use_layer_stack", [False, True], ids=["list", "stack"])
def test_builder_slots_are_what_the_mapping_fills(use_layer_stack):
    cfg = gpt2.GPT2TransformerConfig(
        num_heads=2,
        embedding_dim=16,
        mlp_hidden_dim=24,
        num_decoder_blocks=2,
        vocab_size=8,
        max_positions=8,
        tie_embedder_and_logits=False,
        use_layer_stack=use_layer_stack,
    )
    lm = gpt2.build_gpt2_transformer(cfg, None, name="m")
    assert lm.metadata.config == cfg
    values = _gpt2_hf.params_from_hf(cfg, "gpt2", lambda k, s: np.ones(s))
    assert slot_labels(lm) == {f"m/{k}" for k in values}


def test_jitted_padded_call_matches_eager():
    # Under jit the positions are traced: padding (-1) must still be clamped.
    lm = _families.from_huggingface_model(_hf_model(), use_layer_stack=True)
    tokens = sk.nx.wrap(jnp.array([[0, 0, 3, 4, 5]]), "batch", "seq")
    positions = sk.nx.wrap(jnp.array([[-1, -1, 0, 1, 2]]), "batch", "seq")
    eager = lm(tokens, token_positions=positions).unwrap("batch", "seq", "vocabulary")
    jitted = sk.variable_jit(lambda m, t, p: m(t, token_positions=p))(lm, tokens, positions)
    np.testing.assert_allclose(eager, jitted.unwrap("batch", "seq", "vocabulary"), atol=1e-5)
    assert np.isfinite(np.asarray(jitted.data_array)).all()
