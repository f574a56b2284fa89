"""Interventions (`interp.intervene` and friends) against hand-built selector versions."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from saikei import interp, sk  # noqa: E402
from saikei.models.transformer import _families, sampling  # noqa: E402
from tests.models._hf_helpers import TINY_LLAMA, random_hf_model  # noqa: E402

TOKENS = np.random.default_rng(1).integers(1, 64, size=(2, 7))


@pytest.fixture(scope="module")
def hf_model():
    # 4 query heads in 2 groups: the `heads` axis has to be mapped onto two model axes.
    return random_hf_model(
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(TINY_LLAMA, num_key_value_heads=2),
        sharpen={"q_proj.weight": 4.0, "lm_head.weight": 4.0},
    )


@pytest.fixture(scope="module")
def lm(hf_model):
    return interp.with_hook_points(_families.from_huggingface_model(hf_model))


@pytest.fixture(scope="module")
def stacked_lm(hf_model):
    return interp.with_hook_points(_families.from_huggingface_model(hf_model, use_layer_stack=True))


def _tokens(array=TOKENS):
    return sk.nx.wrap(jnp.asarray(array), "batch", "seq")


def _logits(model, tokens=None, **side):
    out = model(_tokens() if tokens is None else tokens, **side)
    return np.asarray(out.unwrap("batch", "seq", "vocabulary"))


def _by_hand(lm, name, fn):
    """`lm` with a `_ByHand(fn)` inserted right after the hook point `name` (a block list)."""
    return (
        sk.select(lm)
        .at_instances_of(interp.HookPoint)
        .where(lambda h: h.name == name)
        .insert_after(_ByHand(fn))
    )


@sk.pytree_dataclass
class _ByHand(sk.nn.Layer):
    """A layer built in the test: applies `fn(x, token_positions)` (the independent path)."""

    fn: Any

    def __call__(self, x, /, **side):
        return self.fn(x, side["token_positions"])


def _vector(seed=0, scale=3.0):
    return sk.nx.wrap(jax.random.normal(jax.random.key(seed), (32,)) * scale, "embedding")


def test_add_equals_adding_by_hand(lm):
    v = _vector()
    ours = interp.intervene(lm, {"blocks.1.resid_pre": interp.Add(v)})
    hand = _by_hand(lm, "blocks.1.resid_pre", lambda x, pos: x + v)
    np.testing.assert_allclose(_logits(ours), _logits(hand), atol=1e-5)
    assert np.abs(_logits(ours) - _logits(lm)).max() > 1e-2


def test_add_at_positions_uses_absolute_positions_with_left_padding(lm):
    v = _vector()
    ours = interp.intervene(lm, {"blocks.0.resid_post": interp.Add(v, positions=[2, 4])})

    def at_2_and_4(x, pos):
        mask = sk.nx.nmap(lambda p: (p == 2) | (p == 4))(pos)
        return sk.nx.nmap(jnp.where)(mask, x + v, x)

    hand = _by_hand(lm, "blocks.0.resid_post", at_2_and_4)
    np.testing.assert_allclose(_logits(ours), _logits(hand), atol=1e-5)
    # Two pads in front: the same tokens at the same absolute positions give the same logits.
    padded = np.concatenate([np.zeros((2, 2), np.int64), TOKENS], axis=1)
    positions = sk.nx.wrap(jnp.asarray([[-1, -1, *range(7)]] * 2), "batch", "seq")
    np.testing.assert_allclose(
        _logits(ours, _tokens(padded), token_positions=positions)[:, 2:],
        _logits(ours),
        atol=1e-5,
    )
    unchanged = _logits(lm)
    assert np.abs(_logits(ours)[:, :2] - unchanged[:, :2]).max() < 1e-6
    assert np.abs(_logits(ours)[:, 2] - unchanged[:, 2]).max() > 1e-2


def _zero_head_internal(h, q_per_group=2):
    group, within = divmod(h, q_per_group)

    def fn(x, pos):
        mask = sk.nx.nmap(lambda g, q: (g == group) & (q == within))(
            sk.nx.arange("head_groups", x.named_shape["head_groups"]),
            sk.nx.arange("query_heads", x.named_shape["query_heads"]),
        )
        return sk.nx.nmap(jnp.where)(mask, 0.0, x)

    return fn


def test_zero_ablating_a_head_follows_hf_head_order(lm):
    ours = interp.intervene(lm, {"blocks.0.attn.z": interp.Ablate(heads=[3])})
    hand = _by_hand(lm, "blocks.0.attn.z", _zero_head_internal(3))
    np.testing.assert_allclose(_logits(ours), _logits(hand), atol=1e-5)
    other = _by_hand(lm, "blocks.0.attn.z", _zero_head_internal(1))
    assert np.abs(_logits(ours) - _logits(other)).max() > 1e-3


def test_mean_ablation_uses_the_reference_mean(lm, stacked_lm):
    _, cache = interp.run_with_cache(lm, _tokens(), names="blocks.1.attn.z")
    z = np.asarray(cache["blocks.1.attn.z"].unwrap("batch", "seq", "heads", "projection"))
    mean = z.mean(axis=(0, 1))  # (heads, projection)
    ours = interp.intervene(
        lm, {"blocks.1.attn.z": interp.Ablate(heads=[0, 2], mode="mean", reference=cache)}
    )

    def fn(x, pos):
        # Internal layout: head h = (h // 2, h % 2).
        m = sk.nx.wrap(
            jnp.asarray(mean.reshape(2, 2, -1)), "head_groups", "query_heads", "projection"
        )
        keep = sk.nx.wrap(jnp.asarray([[True, False], [True, False]]), "head_groups", "query_heads")
        return sk.nx.nmap(jnp.where)(keep, m + 0 * x, x)

    hand = _by_hand(lm, "blocks.1.attn.z", fn)
    np.testing.assert_allclose(_logits(ours), _logits(hand), atol=1e-5)
    # In a LayerStack the mean of block 1 is stacked with zeros for block 0, where it is unused.
    stacked = interp.intervene(
        stacked_lm,
        {"blocks.1.attn.z": interp.Ablate(heads=[0, 2], mode="mean", reference=cache)},
    )
    np.testing.assert_allclose(_logits(stacked), _logits(hand), atol=1e-5)
    assert "reference" not in repr(interp.interventions(ours)["blocks.1.attn.z"].reference)


def test_scale_replace_and_hook(lm):
    scaled = interp.intervene(lm, {"blocks.0.mlp_out": interp.Scale(0.0)})
    replaced = interp.intervene(lm, {"blocks.0.mlp_out": interp.Replace(0.0)})
    hooked = interp.intervene(lm, {"blocks.0.mlp_out": interp.Hook(lambda x: x * 0)})
    hand = _by_hand(lm, "blocks.0.mlp_out", lambda x, pos: x * 0)
    for model in (scaled, replaced, hooked):
        np.testing.assert_allclose(_logits(model), _logits(hand), atol=1e-5)


def test_intervention_in_a_layer_stack_acts_only_in_its_block(lm, stacked_lm):
    v = _vector()
    ours = interp.intervene(stacked_lm, {"blocks.1.resid_pre": interp.Add(v)})
    hand = _by_hand(lm, "blocks.1.resid_pre", lambda x, pos: x + v)
    np.testing.assert_allclose(_logits(ours), _logits(hand), atol=1e-5)
    head = interp.intervene(stacked_lm, {"blocks.0.attn.z": interp.Ablate(heads=[3])})
    head_hand = _by_hand(lm, "blocks.0.attn.z", _zero_head_internal(3))
    np.testing.assert_allclose(_logits(head), _logits(head_hand), atol=1e-5)


def test_glob_covers_every_block_and_replacing_one_keeps_the_others(stacked_lm, lm):
    v = _vector(scale=1.0)
    both = interp.intervene(stacked_lm, {"blocks.*.resid_pre": interp.Add(v)})
    assert list(interp.interventions(both)) == ["blocks.0.resid_pre", "blocks.1.resid_pre"]
    mixed = interp.intervene(both, {"blocks.1.resid_pre": interp.Scale(2.0)})
    found = interp.interventions(mixed)
    assert isinstance(found["blocks.0.resid_pre"], interp.Add)
    assert isinstance(found["blocks.1.resid_pre"], interp.Scale)
    hand = _by_hand(
        _by_hand(lm, "blocks.0.resid_pre", lambda x, pos: x + v),
        "blocks.1.resid_pre",
        lambda x, pos: x * 2.0,
    )
    np.testing.assert_allclose(_logits(mixed), _logits(hand), atol=1e-5)


def test_remove_interventions_restores_the_model(stacked_lm):
    changed = interp.intervene(
        stacked_lm,
        {"embed": interp.Scale(0.5), "blocks.*.attn.pattern": interp.Ablate(heads=[1])},
    )
    assert np.abs(_logits(changed) - _logits(stacked_lm)).max() > 1e-3
    restored = interp.remove_interventions(changed)
    assert interp.interventions(restored) == {}
    np.testing.assert_array_equal(_logits(restored), _logits(stacked_lm))
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(stacked_lm)


def test_cache_sees_the_value_before_the_intervention(lm):
    v = _vector()
    ours = interp.intervene(lm, {"blocks.0.resid_post": interp.Add(v)})
    names = ["blocks.0.resid_post", "blocks.1.resid_pre"]
    _, clean = interp.run_with_cache(lm, _tokens(), names=names)
    _, cache = interp.run_with_cache(ours, _tokens(), names=names)
    order = ("batch", "seq", "embedding")
    post = np.asarray(cache["blocks.0.resid_post"].unwrap(*order))
    np.testing.assert_allclose(post, np.asarray(clean["blocks.0.resid_post"].unwrap(*order)))
    np.testing.assert_allclose(
        np.asarray(cache["blocks.1.resid_pre"].unwrap(*order)),
        post + np.asarray(v.unwrap("embedding")),
        atol=1e-5,
    )


def test_new_values_do_not_recompile(lm):
    traces = []

    @jax.jit
    def run(model, tokens):
        traces.append(1)
        return model(tokens)

    frozen = sk.freeze_variables(lm)
    outs = []
    for seed, positions in ((0, [1]), (1, [3]), (2, [5])):
        model = interp.intervene(
            frozen, {"blocks.1.attn_out": interp.Add(_vector(seed), positions=positions)}
        )
        outs.append(np.asarray(run(model, _tokens()).unwrap("batch", "seq", "vocabulary")))
    assert len(traces) == 1
    assert np.abs(outs[0] - outs[1]).max() > 1e-3


def _teacher_forced_argmax(model, prompt, generated):
    """What greedy decoding must pick at each step, from one uncached forward pass.

    The model is causal, so the logits at position t of prompt + generated
    depend only on the tokens up to t: their argmax is the token the step
    after t must produce.
    """
    seq = np.concatenate([prompt, generated[:, :-1]], axis=1)
    logits = model(sk.nx.wrap(jnp.asarray(seq), "batch", "seq"))
    picked = np.asarray(logits.unwrap("batch", "seq", "vocabulary")).argmax(-1)
    return picked[:, prompt.shape[1] - 1 :]


def test_interventions_act_at_every_generate_step(lm, stacked_lm):
    prompt = TOKENS[:, :4]
    steps = 5
    # Act on the tokens at positions 5 and 6, which only the decoding steps produce; the
    # keys are written to the KV cache (inside the LayerStack's scan for stacked_lm).
    changes = {
        "blocks.0.resid_post": interp.Add(_vector(7, scale=30.0), positions=[5, 6]),
        "blocks.1.attn.k": interp.Ablate(heads=[0], positions=[5, 6]),
    }
    steer = interp.intervene(lm, changes)
    steered = sampling.generate(steer, _tokens(prompt), max_new_tokens=steps, temperature=0.0)
    steered = np.asarray(steered.unwrap("batch", "seq"))
    np.testing.assert_array_equal(steered, _teacher_forced_argmax(steer, prompt, steered))
    stacked = sampling.generate(
        interp.intervene(stacked_lm, changes),
        _tokens(prompt),
        max_new_tokens=steps,
        temperature=0.0,
    )
    np.testing.assert_array_equal(np.asarray(stacked.unwrap("batch", "seq")), steered)
    restored = sampling.generate(
        interp.remove_interventions(steer), _tokens(prompt), max_new_tokens=steps, temperature=0.0
    )
    restored = np.asarray(restored.unwrap("batch", "seq"))
    np.testing.assert_array_equal(restored, _teacher_forced_argmax(lm, prompt, restored))
    np.testing.assert_array_equal(steered[:, :2], restored[:, :2])
    assert (steered != restored).any()


def test_unknown_name_says_what_exists(lm):
    with pytest.raises(KeyError, match=r"blocks\.0\.attn_out"):
        interp.intervene(lm, {"blocks.0.attn_output": interp.Scale(0.0)})


def test_value_that_does_not_fit_is_an_error(lm):
    bad = sk.nx.ones({"embedding": 5})
    with pytest.raises(ValueError, match="do not fit the activation"):
        interp.intervene(lm, {"blocks.0.resid_pre": interp.Add(bad)})(_tokens())
    with pytest.raises(ValueError, match="without axis names"):
        interp.Add(jnp.ones(32))
    with pytest.raises(ValueError, match="padding has -1"):
        interp.Replace(0.0, positions=[-1])


def test_ablate_heads_needs_a_head_site_and_mean_needs_a_reference(lm):
    with pytest.raises(ValueError, match="per-head hook point"):
        interp.intervene(lm, {"blocks.0.resid_pre": interp.Ablate(heads=[0])})
    with pytest.raises(ValueError, match="needs reference=cache"):
        interp.Ablate(mode="mean")
    with pytest.raises(ValueError, match="mode must be"):
        interp.Ablate(mode="half")


def test_one_hook_point_matched_twice_is_an_error(lm):
    with pytest.raises(ValueError, match="matches both"):
        interp.intervene(
            lm, {"blocks.*.mlp_out": interp.Scale(0.0), "blocks.0.mlp_out": interp.Scale(1.0)}
        )


def test_gemma_period_stack_acts_only_in_the_named_blocks():
    # Three blocks alternating local/global: a LayerStack of 2-block steps plus one block.
    model = random_hf_model(
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(TINY_LLAMA, num_key_value_heads=2, head_dim=8, num_hidden_layers=3, sliding_window=4),
    )
    listed = interp.with_hook_points(_families.from_huggingface_model(model))
    stacked = interp.with_hook_points(_families.from_huggingface_model(model, use_layer_stack=True))
    changes = {
        "blocks.1.attn_out": interp.Scale(0.5),
        "blocks.2.mlp_out": interp.Scale(-1.0),
        "blocks.0.attn.pattern": interp.Ablate(heads=[2]),
    }
    ours = _logits(interp.intervene(stacked, changes))
    np.testing.assert_allclose(ours, _logits(interp.intervene(listed, changes)), atol=1e-5)
    assert np.abs(ours - _logits(listed)).max() > 1e-3


def test_embed_intervention_keeps_hook_points_for_caching_and_more_interventions(lm):
    halved = interp.intervene(lm, {"embed": interp.Scale(0.5)})
    both = interp.intervene(halved, {"blocks.0.mlp_out": interp.Scale(0.0)})
    assert interp.hook_names(both) == interp.hook_names(lm)
    assert list(interp.interventions(both)) == ["embed", "blocks.0.mlp_out"]
    _, cache = interp.run_with_cache(halved, _tokens(), names=["embed", "blocks.0.resid_pre"])
    order = ("batch", "seq", "embedding")
    np.testing.assert_allclose(
        np.asarray(cache["blocks.0.resid_pre"].unwrap(*order)),
        0.5 * np.asarray(cache["embed"].unwrap(*order)),
        rtol=1e-6,
    )
