"""Rewiring layers: head knockout, parallel-world path patching, linearization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.toolshed import model_rewiring as mr

_EMB, _HEADS, _DH, _SEQ = 4, 2, 3, 5


@sk.pytree_dataclass
class _Scores(sk.nn.Layer):
    def __call__(self, qk, /, **side_inputs):
        q, k = qk
        k = k.untag("seq").tag("kv_seq")
        return (q * k).untag("head_dim").sum()


@sk.pytree_dataclass
class _Mix(sk.nn.Layer):
    def __call__(self, attn_v, /, **side_inputs):
        attn, v = attn_v
        return (attn * v.untag("seq").tag("kv_seq")).untag("kv_seq").sum()


def _proj(name, out):
    return sk.nn.Linear.from_config(
        name=name,
        init_base_rng=jax.random.key(0),
        input_axes={"embedding": _EMB},
        output_axes={"heads": _HEADS, "head_dim": _DH} if out else {"embedding": _EMB},
    )


def _attention():
    out = sk.nn.Linear.from_config(
        name="out",
        init_base_rng=jax.random.key(0),
        input_axes={"heads": _HEADS, "head_dim": _DH},
        output_axes={"embedding": _EMB},
    )
    return sk.nn.Attention(
        input_to_query=_proj("q", True),
        input_to_key=_proj("k", True),
        input_to_value=_proj("v", True),
        query_key_to_attn=sk.nn.Sequential([_Scores(), sk.nn.Softmax("kv_seq")]),
        attn_value_to_output=sk.nn.Sequential([_Mix(), out]),
    )


def _x(seed=1, **shape):
    data = jax.random.normal(jax.random.key(seed), tuple(shape.values()))
    return sk.nx.wrap(data, *shape)


def _knock_out(model, mask):
    return (
        sk.select(model)
        .at_instances_of(sk.nn.Softmax)
        .insert_after(mr.KnockOutAttentionHeads(sk.nx.wrap(jnp.asarray(mask), "heads")))
    )


def _np(named, *names):
    return np.asarray(named.unwrap(*names))


def test_knockout_all_heads_equals_attending_to_first_token():
    model = _attention()
    x = _x(seq=_SEQ, embedding=_EMB)
    knocked = _knock_out(model, [0.0, 0.0])
    # Oracle: every query reads the value of position 0, in every head.
    wv = _np(model.input_to_value.weights.value, "embedding", "heads", "head_dim")
    wo = _np(
        model.attn_value_to_output.sublayers[1].weights.value, "heads", "head_dim", "embedding"
    )
    xs = _np(x, "seq", "embedding")
    v0 = np.einsum("e,ehd->hd", xs[0], wv)
    expected = np.broadcast_to(np.einsum("hd,hde->e", v0, wo), (_SEQ, _EMB))
    np.testing.assert_allclose(_np(knocked(x), "seq", "embedding"), expected, rtol=1e-5, atol=1e-5)


def test_knockout_no_heads_is_noop_and_one_head_only_changes_that_head():
    model = _attention()
    x = _x(seq=_SEQ, embedding=_EMB)
    np.testing.assert_allclose(
        _np(_knock_out(model, [1.0, 1.0])(x), "seq", "embedding"),
        _np(model(x), "seq", "embedding"),
        rtol=1e-6,
    )
    scores = sk.nn.Sequential([_Scores(), sk.nn.Softmax("kv_seq")])
    q = model.input_to_query(x)
    k = model.input_to_key(x)
    weights = scores((q, k))
    knocked = mr.KnockOutAttentionHeads(sk.nx.wrap(jnp.array([1.0, 0.0]), "heads"))(weights)
    w_before = _np(weights, "heads", "seq", "kv_seq")
    w_after = _np(knocked, "heads", "seq", "kv_seq")
    np.testing.assert_array_equal(w_after[0], w_before[0])
    onehot = np.zeros((_SEQ, _SEQ), np.float32)
    onehot[:, 0] = 1
    np.testing.assert_array_equal(w_after[1], onehot)


def test_knockout_errors_name_the_missing_axis():
    knock = mr.KnockOutAttentionHeads(sk.nx.wrap(jnp.ones(2), "heads"))
    with pytest.raises(ValueError, match="'kv_seq'"):
        knock(sk.nx.ones({"heads": 2, "seq": 3}))


def _mlp_with_rewire(rewire):
    lin1 = sk.nn.Linear.from_config(
        name="l1", init_base_rng=jax.random.key(2), input_axes={"f": 3}, output_axes={"h": 4}
    )
    lin2 = sk.nn.Linear.from_config(
        name="l2", init_base_rng=jax.random.key(3), input_axes={"h": 4}, output_axes={"o": 2}
    )
    return sk.nn.Sequential([lin1, sk.nn.Elementwise(jnp.tanh), rewire, lin2])


def test_identity_path_matrix_is_noop():
    worlds = ("clean", "corrupt", "third")
    rewire = mr.RewireComputationPaths("worlds", worlds, {w: mr.From(w) for w in worlds})
    np.testing.assert_array_equal(np.asarray(rewire.path_matrix().unwrap()), np.eye(3))
    model = _mlp_with_rewire(rewire)
    plain = _mlp_with_rewire(sk.nn.Identity())
    x = _x(worlds=3, batch=2, f=3)
    np.testing.assert_array_equal(
        _np(model(x), "worlds", "batch", "o"), _np(plain(x), "worlds", "batch", "o")
    )


def test_swap_matrix_equals_running_other_worlds_input():
    rewire = mr.RewireComputationPaths("worlds", ("a", "b"), {"a": mr.From("b"), "b": mr.From("a")})
    np.testing.assert_array_equal(
        np.asarray(rewire.path_matrix().unwrap()), np.array([[0.0, 1.0], [1.0, 0.0]])
    )
    # Rewiring right at the input: world a computes what world b's input gives.
    model = sk.nn.Sequential([rewire, _mlp_with_rewire(sk.nn.Identity())])
    x = _x(worlds=2, batch=3, f=3)
    swapped_input = sk.nx.wrap(_np(x, "worlds", "batch", "f")[::-1].copy(), "worlds", "batch", "f")
    np.testing.assert_allclose(
        _np(model(x), "worlds", "batch", "o"),
        _np(_mlp_with_rewire(sk.nn.Identity())(swapped_input), "worlds", "batch", "o"),
        rtol=1e-6,
    )


def test_weighted_and_per_axis_weights_match_numpy():
    weight = sk.nx.wrap(jnp.array([0.25, 1.0, 0.0, 2.0]), "h")
    rewire = mr.RewireComputationPaths(
        "worlds",
        ("a", "b", "c"),
        {"a": mr.From("a"), "b": (mr.From("a", 0.5), mr.From("c", weight)), "c": ()},
    )
    x = _x(worlds=3, batch=2, h=4)
    xs = _np(x, "worlds", "batch", "h")
    expected = np.stack(
        [xs[0], 0.5 * xs[0] + xs[2] * np.array([0.25, 1.0, 0.0, 2.0]), np.zeros_like(xs[0])]
    )
    np.testing.assert_allclose(
        _np(rewire(x), "worlds", "batch", "h"), expected, rtol=1e-6, atol=1e-6
    )


def test_rewire_validates_configuration_and_input():
    with pytest.raises(ValueError, match="exactly the worlds"):
        mr.RewireComputationPaths("worlds", ("a", "b"), {"a": mr.From("a")})
    with pytest.raises(ValueError, match="'z'"):
        mr.RewireComputationPaths("worlds", ("a",), {"a": mr.From("z")})
    rewire = mr.RewireComputationPaths("worlds", ("a", "b"), {"a": mr.From("a"), "b": ()})
    with pytest.raises(ValueError, match="size 3"):
        rewire(sk.nx.ones({"worlds": 3}))


def test_rewire_works_under_jit():
    rewire = mr.RewireComputationPaths(
        "worlds", ("a", "b"), {"a": mr.From("b", 2.0), "b": mr.From("a")}
    )
    x = _x(worlds=2, h=3)
    out = jax.jit(lambda layer, v: layer(v))(rewire, x)
    xs = _np(x, "worlds", "h")
    np.testing.assert_allclose(_np(out, "worlds", "h"), np.stack([2 * xs[1], xs[0]]), rtol=1e-6)


def test_linearize_with_equal_points_is_exact():
    target = sk.nn.Elementwise(jnp.tanh)
    layer = mr.LinearizeAndAdjust(sk.nn.Identity(), sk.nn.Identity(), target)
    x = _x(batch=3, h=4)
    np.testing.assert_allclose(
        _np(layer(x), "batch", "h"), np.tanh(_np(x, "batch", "h")), rtol=1e-6
    )


def test_linearize_around_one_world_matches_numpy_first_order():
    take_a = mr.RewireComputationPaths("worlds", ("a", "b"), {"a": mr.From("a"), "b": mr.From("a")})
    layer = mr.LinearizeAndAdjust(take_a, sk.nn.Identity(), sk.nn.Elementwise(jnp.tanh))
    x = _x(worlds=2, h=4)
    xs = _np(x, "worlds", "h")
    p = xs[0]
    expected = np.tanh(p) + (1 - np.tanh(p) ** 2) * (xs - p)
    np.testing.assert_allclose(_np(layer(x), "worlds", "h"), expected, rtol=1e-5, atol=1e-6)


# Knock-out with padding: a padded row must equal the same sequence alone ---------------


def _knocked_tiny_llama():
    pytest.importorskip("transformers")
    from saikei.models.transformer import _families
    from tests.models._hf_helpers import TINY_LLAMA, random_hf_model

    hf = random_hf_model(
        "LlamaConfig", "LlamaForCausalLM", TINY_LLAMA, sharpen={"lm_head.weight": 20.0}
    )
    lm = _families.from_huggingface_model(hf)
    mask = sk.nx.wrap(jnp.array([0.0, 1.0, 0.0, 1.0]), "heads")
    return (
        sk.select(lm).at_instances_of(sk.nn.Softmax).insert_after(mr.KnockOutAttentionHeads(mask))
    )


_SEQUENCE = np.array([7, 3, 11, 5, 9, 2], np.int32)


def test_knockout_padded_row_equals_sequence_alone():
    lm = _knocked_tiny_llama()
    alone = lm(sk.nx.wrap(jnp.asarray(_SEQUENCE[None]), "batch", "seq"))
    pad = 3
    padded = np.concatenate([np.zeros(pad, np.int32), _SEQUENCE])[None]
    positions = np.concatenate([-np.ones(pad, np.int32), np.arange(len(_SEQUENCE))])[None]
    out = lm(
        sk.nx.wrap(jnp.asarray(padded), "batch", "seq"),
        token_positions=sk.nx.wrap(jnp.asarray(positions), "batch", "seq"),
    )
    np.testing.assert_allclose(
        _np(out, "batch", "seq", "vocabulary")[:, pad:],
        _np(alone, "batch", "seq", "vocabulary"),
        atol=1e-4,
    )


def test_knockout_padded_row_generates_like_sequence_alone():
    from saikei.models.transformer import sampling

    lm = _knocked_tiny_llama()
    short = _SEQUENCE[2:]
    # Row 1 is `short` left-padded to the length of row 0.
    batch = np.stack([_SEQUENCE, np.concatenate([np.zeros(2, np.int32), short])])
    together = sampling.generate(
        lm, sk.nx.wrap(jnp.asarray(batch), "batch", "seq"), max_new_tokens=4, temperature=0.0
    )
    alone = sampling.generate(
        lm, sk.nx.wrap(jnp.asarray(short[None]), "batch", "seq"), max_new_tokens=4, temperature=0.0
    )
    assert _np(together, "batch", "seq")[1].tolist() == _np(alone, "batch", "seq")[0].tolist()


def test_knockout_fallback_uses_first_real_key_position():
    knock = mr.KnockOutAttentionHeads(sk.nx.wrap(jnp.zeros(1), "heads"))
    weights = sk.nx.full({"heads": 1, "batch": 2, "seq": 1, "kv_seq": 4}, 0.25)
    # Row 0: no padding; row 1: two pads, then positions 0, 1 (cache slots likewise).
    positions = sk.nx.wrap(jnp.array([[0, 1, 2, 3], [-1, -1, 0, 1]]), "batch", "seq")
    got = knock(weights, kv_token_positions=positions, token_positions=None)
    np.testing.assert_array_equal(
        _np(got, "batch", "heads", "seq", "kv_seq")[:, 0, 0], [[1, 0, 0, 0], [0, 0, 1, 0]]
    )


def test_knockout_mask_broadcasts_by_name_like_penzai():
    mask = sk.nx.wrap(jnp.array([[1.0, 0.0], [0.0, 1.0]]), "sweep", "heads")
    weights = sk.nx.full({"heads": 2, "seq": 1, "kv_seq": 2}, 0.5)
    got = mr.KnockOutAttentionHeads(mask)(weights)
    assert dict(got.named_shape) == {"sweep": 2, "heads": 2, "seq": 1, "kv_seq": 2}
    np.testing.assert_array_equal(
        _np(got, "sweep", "heads", "seq", "kv_seq")[:, :, 0],
        [[[0.5, 0.5], [1.0, 0.0]], [[1.0, 0.0], [0.5, 0.5]]],
    )
    # Weights without the mask's head axis gain it, as in penzai.
    plain = mr.KnockOutAttentionHeads(sk.nx.wrap(jnp.array([1.0, 0.0]), "heads"))(
        sk.nx.full({"seq": 1, "kv_seq": 2}, 0.5)
    )
    assert dict(plain.named_shape) == {"heads": 2, "seq": 1, "kv_seq": 2}


# A From weight with a new axis (issue 14, wrong result 3) -----------------------------


def test_rewire_weight_with_new_axis_adds_that_axis():
    rewire = mr.RewireComputationPaths(
        "worlds",
        ("a", "b"),
        {"a": mr.From("a"), "b": mr.From("a", sk.nx.wrap(jnp.array([1.0, 0.0])).tag("switch"))},
    )
    x = jnp.arange(6.0).reshape(2, 3)
    out = rewire(sk.nx.wrap(x, "worlds", "f"))
    assert dict(out.named_shape) == {"worlds": 2, "f": 3, "switch": 2} or set(out.named_shape) == {
        "worlds",
        "f",
        "switch",
    }
    got = _np(out, "worlds", "switch", "f")
    np.testing.assert_array_equal(got[0], [x[0], x[0]])  # world a reads a, whatever the switch
    np.testing.assert_array_equal(got[1], [x[0], np.zeros(3)])  # b reads a only where switch=0


# LinearizeAndAdjust broadcasting -----------------------------------------------------------


@sk.pytree_dataclass
class _AddSweep(sk.nn.Layer):
    def __call__(self, x, /, **side_inputs):
        return x + sk.nx.wrap(jnp.array([0.0, 1.0]), "sweep")


def test_linearize_broadcasts_evaluation_points_with_new_axes():
    layer = mr.LinearizeAndAdjust(
        linearize_around=sk.nn.Identity(),
        evaluate_at=_AddSweep(),
        target=sk.nn.Elementwise(jnp.square),
    )
    out = layer(sk.nx.wrap(jnp.array([3.0, 4.0]), "f"))
    # Around p: p^2 + 2p (e - p), with e = p + sweep.
    p = np.array([3.0, 4.0])
    want = np.stack([p**2, p**2 + 2 * p])
    np.testing.assert_allclose(_np(out, "sweep", "f"), want, rtol=1e-6)


def test_linearize_on_plain_arrays():
    layer = mr.LinearizeAndAdjust(
        linearize_around=sk.nn.Elementwise(lambda x: x * 0 + 1.0),
        evaluate_at=sk.nn.Identity(),
        target=sk.nn.Elementwise(jnp.square),
    )
    np.testing.assert_allclose(layer(jnp.array([3.0, 4.0])), [5.0, 7.0])
