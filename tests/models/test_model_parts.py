"""Tests of the shared transformer parts and the llama-like builder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.models.transformer import model_parts
from saikei.models.transformer.variants import llamalike


def _config(**overrides):
    base = dict(
        num_kv_heads=2,
        query_head_multiplier=2,
        embedding_dim=16,
        projection_dim=4,
        mlp_hidden_dim=24,
        num_decoder_blocks=2,
        vocab_size=11,
    )
    return llamalike.LlamalikeTransformerConfig(**{**base, **overrides})


def test_default_positions_are_arange_of_seq():
    @sk.pytree_dataclass
    class Positions(sk.nn.Layer):
        def __call__(self, tokens, /, **side_inputs):
            return side_inputs["token_positions"]

    meta = model_parts.TransformerMetadata({"heads": 1}, {}, 2, 2, 2, 5)
    lm = model_parts.TransformerLM(Positions(), meta)
    out = lm(sk.nx.wrap(jnp.zeros((2, 4), jnp.int32), "batch", "seq"))
    assert out.unwrap("seq").tolist() == [0, 1, 2, 3]


def test_tokens_without_seq_axis_are_rejected():
    lm = llamalike.build_llamalike_transformer(_config(), jax.random.key(0))
    with pytest.raises(ValueError, match="'seq' axis"):
        lm(sk.nx.wrap(jnp.arange(3), "tokens"))


def test_slot_model_has_one_slot_per_parameter_of_random_model():
    cfg = _config()
    slot_model = llamalike.build_llamalike_transformer(cfg)
    slots = sk.select(slot_model).at_instances_of(sk.ParameterSlot).get_sequence()
    params = sk.unbind_params(llamalike.build_llamalike_transformer(cfg, jax.random.key(0)))[1]
    assert len(params) == 3 + 2 * 9
    assert sorted(s.label for s in slots) == sorted(p.label for p in params)


def test_layer_stack_builds_one_stacked_block():
    cfg = _config(use_layer_stack=True, num_decoder_blocks=3)
    lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
    stacks = sk.select(lm).at_instances_of(sk.nn.LayerStack).get_sequence()
    assert len(stacks) == 1 and stacks[0].stack_axis_size == 3
    weights = [p for p in sk.unbind_params(lm)[1] if p.label.endswith("attention/query.weights")]
    assert weights[0].value.named_shape["blocks"] == 3


def test_head_axes_follow_mha_gqa_mqa():
    for kv, mult, expected in [
        (4, 1, {"heads": 4, "projection": 4, "embedding": 16}),
        (2, 2, {"head_groups": 2, "query_heads": 2, "projection": 4, "embedding": 16}),
        (1, 4, {"query_heads": 4, "projection": 4, "embedding": 16}),
    ]:
        lm = llamalike.build_llamalike_transformer(
            _config(num_kv_heads=kv, query_head_multiplier=mult), jax.random.key(0)
        )
        (q,) = [
            p
            for p in sk.unbind_params(lm)[1]
            if p.label.endswith("block_0/attention/query.weights")
        ]
        assert dict(q.value.named_shape) == expected


def test_mixed_attention_types_stack_by_their_period():
    types = (llamalike.AttentionTypeSlidingWindowCausal(2), llamalike.AttentionTypeGlobalCausal())
    cfg = _config(attention_type=types, num_decoder_blocks=3, use_layer_stack=True)
    lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
    shapes = {p.label: p.value.named_shape for p in sk.unbind_params(lm)[1]}
    assert shapes["transformer/blocks/block_1/attention/output.weights"]["blocks"] == 1
    assert "transformer/block_2/attention/output.weights" in shapes
    assert lm(sk.nx.wrap(jnp.arange(5), "seq")).named_shape == {"seq": 5, "vocabulary": 11}


def test_final_logit_softcap_bounds_logits():
    lm = llamalike.build_llamalike_transformer(_config(final_logit_softcap=0.5), jax.random.key(1))
    logits = lm(sk.nx.wrap(jnp.arange(5), "seq")).unwrap("seq", "vocabulary")
    assert float(jnp.abs(logits).max()) <= 0.5


def test_unknown_mlp_variant_is_named():
    with pytest.raises(ValueError, match="'relu'"):
        llamalike.build_llamalike_transformer(_config(mlp_variant="relu"))


def test_bfloat16_activations():
    cfg = _config(activation_dtype=jnp.bfloat16, parameter_dtype=jnp.bfloat16)
    lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
    out = lm(sk.nx.wrap(jnp.arange(4), "seq"))
    assert out.dtype == jnp.bfloat16 and np.isfinite(np.asarray(out.data_array, np.float32)).all()
