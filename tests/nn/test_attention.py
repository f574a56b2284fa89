"""Tests for sk.nn attention: the Attention combinator, masks and KVCachingAttention."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope

from saikei import sk

# ---------------------------------------------------------------- masks


def _mask_of(layer_output):
    """Which logits survived, from a mask layer applied to all-zero logits."""
    return np.asarray(layer_output) == 0


def _causal_reference(q_pos, kv_pos, window=None):
    """Visible[b, q, k] by Hugging Face's rules, written independently in numpy."""
    q = np.asarray(q_pos)[:, :, None]
    k = np.asarray(kv_pos)[:, None, :]
    visible = (k >= 0) & (k <= q)
    if window is not None:
        visible &= k > q - window
    return visible


POSITIONS = np.array([[0, 1, 2, 3, 4, 5], [-1, -1, 0, 1, 2, 3], [0, 1, 2, -1, -1, -1]])


def test_causal_mask_matches_reference_with_padding():
    mask = sk.nn.ApplyCausalAttentionMask(masked_out_value=-1e9)
    logits = sk.nx.zeros({"batch": 3, "heads": 2, "seq": 6, "kv_seq": 6})
    out = mask(logits, token_positions=sk.nx.wrap(POSITIONS, "batch", "seq"))
    got = _mask_of(out.unwrap("batch", "heads", "seq", "kv_seq"))
    expected = _causal_reference(POSITIONS, POSITIONS)
    np.testing.assert_array_equal(got, np.broadcast_to(expected[:, None], got.shape))


def test_causal_mask_masked_value_is_used():
    mask = sk.nn.ApplyCausalAttentionMask(masked_out_value=-7.0)
    out = mask(sk.nx.ones({"seq": 2, "kv_seq": 2}), token_positions=sk.nx.arange("seq", 2))
    assert out.unwrap("seq", "kv_seq").tolist() == [[1.0, -7.0], [1.0, 1.0]]


@pytest.mark.parametrize("window", [1, 2, 3, 10])
def test_sliding_window_mask_matches_hf_rule(window):
    mask = sk.nn.ApplyCausalSlidingWindowAttentionMask(-1e9, sliding_window_size=window)
    logits = sk.nx.zeros({"batch": 3, "seq": 6, "kv_seq": 6})
    out = mask(logits, token_positions=sk.nx.wrap(POSITIONS, "batch", "seq"))
    got = _mask_of(out.unwrap("batch", "seq", "kv_seq"))
    np.testing.assert_array_equal(got, _causal_reference(POSITIONS, POSITIONS, window))


def test_causal_mask_with_separate_kv_positions():
    mask = sk.nn.ApplyCausalAttentionMask(-1e9, kv_positions_input_name="kv_token_positions")
    q_pos = np.array([[3]])
    kv_pos = np.array([[0, 1, 2, 3, -1, -1]])
    out = mask(
        sk.nx.zeros({"batch": 1, "seq": 1, "kv_seq": 6}),
        token_positions=sk.nx.wrap(q_pos, "batch", "seq"),
        kv_token_positions=sk.nx.wrap(kv_pos, "batch", "seq"),
    )
    got = _mask_of(out.unwrap("batch", "seq", "kv_seq"))
    np.testing.assert_array_equal(got, _causal_reference(q_pos, kv_pos))


def test_explicit_mask_broadcasts_over_other_axes():
    mask_values = np.random.default_rng(0).random((4, 5)) > 0.5
    layer = sk.nn.ApplyExplicitAttentionMask("mask", masked_out_value=-1e9)
    out = layer(
        sk.nx.zeros({"batch": 2, "seq": 4, "heads": 3, "kv_seq": 5}),
        mask=sk.nx.wrap(mask_values.T, "kv_seq", "seq"),
    )
    got = _mask_of(out.unwrap("batch", "heads", "seq", "kv_seq"))
    np.testing.assert_array_equal(got, np.broadcast_to(mask_values, got.shape))


def test_mask_keeps_logits_dtype():
    mask = sk.nn.ApplyCausalAttentionMask(masked_out_value=jnp.array(-2.38e38, jnp.float32))
    logits = sk.nx.zeros({"seq": 2, "kv_seq": 2}, jnp.bfloat16)
    assert mask(logits, token_positions=sk.nx.arange("seq", 2)).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("dtype", "value"), [(jnp.float16, -2.38e38), (jnp.float32, -np.inf), (jnp.bfloat16, -np.inf)]
)
def test_fully_masked_padding_rows_softmax_without_nan(dtype, value):
    mask = sk.nn.ApplyCausalAttentionMask(masked_out_value=value)
    logits = sk.nx.wrap(jnp.ones((3, 3), dtype), "seq", "kv_seq")
    out = mask(logits, token_positions=sk.nx.wrap(np.array([-1, 0, 1]), "seq"))
    weights = np.asarray(sk.nn.Softmax("kv_seq")(out).unwrap("seq", "kv_seq").astype(jnp.float32))
    assert np.isfinite(weights).all()
    np.testing.assert_allclose(weights[1], [0, 1, 0], atol=1e-3)


def test_mask_missing_side_input_names_it():
    mask = sk.nn.ApplyCausalAttentionMask(-1e9, kv_positions_input_name="kv_token_positions")
    with pytest.raises(KeyError, match="kv_token_positions"):
        mask(sk.nx.zeros({"seq": 2, "kv_seq": 2}), token_positions=sk.nx.arange("seq", 2))


def test_mask_positions_with_axis_missing_from_logits():
    mask = sk.nn.ApplyCausalAttentionMask(-1e9)
    positions = sk.nx.wrap(np.zeros((2, 3), np.int32), "batch", "seq")
    with pytest.raises(ValueError, match="batch"):
        mask(sk.nx.zeros({"seq": 3, "kv_seq": 3}), token_positions=positions)


def test_mask_positions_of_wrong_length():
    mask = sk.nn.ApplyCausalAttentionMask(-1e9)
    with pytest.raises(ValueError, match="kv_seq"):
        mask(sk.nx.zeros({"seq": 3, "kv_seq": 4}), token_positions=sk.nx.arange("seq", 3))


def test_mask_rejects_float_positions():
    mask = sk.nn.ApplyCausalAttentionMask(-1e9)
    with pytest.raises(TypeError, match="integers"):
        mask(sk.nx.zeros({"seq": 2, "kv_seq": 2}), token_positions=sk.nx.ones({"seq": 2}))


def test_explicit_mask_must_be_boolean():
    layer = sk.nn.ApplyExplicitAttentionMask("mask", -1e9)
    with pytest.raises(TypeError, match="boolean"):
        layer(sk.nx.zeros({"seq": 2, "kv_seq": 2}), mask=sk.nx.ones({"seq": 2}))


def test_mask_rejects_nan_masked_value():
    with pytest.raises(ValueError, match="masked_out_value"):
        sk.nn.ApplyCausalAttentionMask(masked_out_value=float("nan"))


def test_sliding_window_rejects_nonpositive_size():
    with pytest.raises(ValueError, match="sliding_window_size"):
        sk.nn.ApplyCausalSlidingWindowAttentionMask(-1e9, sliding_window_size=0)


def test_mask_under_jit_matches_eager():
    mask = sk.nn.ApplyCausalSlidingWindowAttentionMask(-1e9, sliding_window_size=2)
    logits = sk.nx.wrap(np.random.default_rng(1).normal(size=(3, 6, 6)), "batch", "seq", "kv_seq")
    positions = sk.nx.wrap(POSITIONS, "batch", "seq")
    eager = mask(logits, token_positions=positions)
    jitted = jax.jit(lambda m, x, p: m(x, token_positions=p))(mask, logits, positions)
    np.testing.assert_array_equal(
        np.asarray(eager.unwrap("batch", "seq", "kv_seq")),
        np.asarray(jitted.unwrap("batch", "seq", "kv_seq")),
    )


# ---------------------------------------------------------------- a full attention block

BATCH, SEQ, EMBED, HEADS, PROJ = 3, 6, 8, 2, 4
BASE = 10_000


@sk.pytree_dataclass
class _Project(sk.nn.Layer):
    """x[..., embedding] -> [..., heads, projection] with weights (embedding, heads, projection)."""

    weights: Any

    def __call__(self, x, /, **side_inputs):
        return sk.nx.nmap(jnp.dot)(x.untag("embedding"), self.weights.untag("embedding"))


@sk.pytree_dataclass
class _Scores(sk.nn.Layer):
    scale: float = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, qk, /, **side_inputs):
        q, k = qk
        k = k.untag("seq").tag("kv_seq")
        return sk.nx.nmap(jnp.dot)(q.untag("projection"), k.untag("projection")) * self.scale


@sk.pytree_dataclass
class _Mix(sk.nn.Layer):
    def __call__(self, attn_v, /, **side_inputs):
        attn, v = attn_v
        v = v.untag("seq").tag("kv_seq")
        return sk.nx.nmap(jnp.dot)(attn.untag("kv_seq"), v.untag("kv_seq"))


@sk.pytree_dataclass
class _Unproject(sk.nn.Layer):
    weights: Any  # heads, projection, embedding

    def __call__(self, x, /, **side_inputs):
        return sk.nx.nmap(lambda a, w: jnp.tensordot(a, w, 2))(
            x.untag("heads", "projection"), self.weights.untag("heads", "projection")
        )


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"q": (EMBED, HEADS, PROJ), "k": (EMBED, HEADS, PROJ), "v": (EMBED, HEADS, PROJ)}
    w = {name: rng.normal(size=s).astype(np.float32) / 3 for name, s in shapes.items()}
    w["o"] = rng.normal(size=(HEADS, PROJ, EMBED)).astype(np.float32) / 3
    return w


def _build_attention(w, mask):
    def qkv(name):
        return sk.nx.wrap(w[name], "embedding", "heads", "projection")

    rope = sk.nn.ApplyRoPE("projection", max_wavelength=BASE)
    return sk.nn.Attention(
        input_to_query=sk.nn.Sequential([_Project(qkv("q")), rope]),
        input_to_key=sk.nn.Sequential([_Project(qkv("k")), rope]),
        input_to_value=_Project(qkv("v")),
        query_key_to_attn=sk.nn.Sequential([_Scores(PROJ**-0.5), mask, sk.nn.Softmax("kv_seq")]),
        attn_value_to_output=sk.nn.Sequential(
            [_Mix(), _Unproject(sk.nx.wrap(w["o"], "heads", "projection", "embedding"))]
        ),
    )


def _rope_np(x, positions):
    """HF rotate_half RoPE on the last axis; x: (b, s, h, p), positions: (b, s)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (BASE ** (np.arange(0, d, 2) / d))
    freqs = positions[:, :, None, None].astype(np.float64) * inv_freq
    cos, sin = (
        np.cos(np.concatenate([freqs, freqs], -1)),
        np.sin(np.concatenate([freqs, freqs], -1)),
    )
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rotated * sin


def _attention_np(w, x, positions, visible):
    """Plain numpy multi-head attention; visible: (b, s, t) boolean."""
    x = x.astype(np.float64)
    q = _rope_np(np.einsum("bse,ehp->bshp", x, w["q"]), positions)
    k = _rope_np(np.einsum("bse,ehp->bshp", x, w["k"]), positions)
    v = np.einsum("bse,ehp->bshp", x, w["v"])
    logits = np.einsum("bshp,bthp->bhst", q, k) / np.sqrt(PROJ)
    logits = np.where(visible[:, None], logits, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhst,bthp->bshp", weights, v)
    return np.einsum("bshp,hpe->bse", out, w["o"])


def _inputs(seed=1):
    return np.random.default_rng(seed).normal(size=(BATCH, SEQ, EMBED)).astype(np.float32)


MASKS = {
    "causal": (lambda: sk.nn.ApplyCausalAttentionMask(-2.38e38), None),
    "sliding": (lambda: sk.nn.ApplyCausalSlidingWindowAttentionMask(-2.38e38, 3), 3),
}


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_multi_head_attention_matches_numpy(kind):
    make_mask, window = MASKS[kind]
    w = _weights()
    x = _inputs()
    layer = _build_attention(w, make_mask())
    out = layer(
        sk.nx.wrap(x, "batch", "seq", "embedding"),
        token_positions=sk.nx.wrap(POSITIONS, "batch", "seq"),
    )
    got = np.asarray(out.unwrap("batch", "seq", "embedding"))
    visible = _causal_reference(POSITIONS, POSITIONS, window)
    real = POSITIONS >= 0
    safe_positions = np.where(real, POSITIONS, 0)
    visible_for_reference = visible | ~real[:, :, None]  # padded rows: anything finite
    expected = _attention_np(w, x, safe_positions, visible_for_reference)
    # RoPE of padding rows uses position -1 in saikei; only real rows are compared.
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[real], expected[real], atol=1e-5)


def test_multi_head_attention_with_explicit_mask_matches_numpy():
    w = _weights(2)
    x = _inputs(3)
    positions = np.tile(np.arange(SEQ), (BATCH, 1))
    visible = np.random.default_rng(4).random((BATCH, SEQ, SEQ)) > 0.4
    visible[:, np.arange(SEQ), np.arange(SEQ)] = True
    layer = _build_attention(w, sk.nn.ApplyExplicitAttentionMask("mask", -1e30))
    out = layer(
        sk.nx.wrap(x, "batch", "seq", "embedding"),
        token_positions=sk.nx.wrap(positions, "batch", "seq"),
        mask=sk.nx.wrap(visible, "batch", "seq", "kv_seq"),
    )
    expected = _attention_np(w, x, positions, visible)
    np.testing.assert_allclose(
        np.asarray(out.unwrap("batch", "seq", "embedding")), expected, atol=1e-5
    )


def test_attention_passes_side_inputs_to_every_sublayer():
    seen = []

    @sk.pytree_dataclass
    class Record(sk.nn.Layer):
        tag: str = dataclasses.field(metadata={"pytree_node": False})

        def __call__(self, value, /, **side_inputs):
            seen.append((self.tag, side_inputs["flag"]))
            return value

    layer = sk.nn.Attention(*(Record(t) for t in "qkvao"))
    layer(1.0, flag=7)
    assert seen == [(t, 7) for t in "qkvao"]


def test_attention_feeds_query_key_pairs_in_order():
    @sk.pytree_dataclass
    class Tag(sk.nn.Layer):
        text: str = dataclasses.field(metadata={"pytree_node": False})

        def __call__(self, value, /, **side_inputs):
            return (self.text, value)

    layer = sk.nn.Attention(Tag("q"), Tag("k"), Tag("v"), Tag("attn"), Tag("out"))
    out = layer("x")
    assert out == ("out", (("attn", (("q", "x"), ("k", "x"))), ("v", "x")))


def test_attention_renders_with_treescope():
    layer = _build_attention(_weights(), sk.nn.ApplyCausalAttentionMask(-2.38e38))
    text = treescope.render_to_text(layer)
    assert "Attention" in text and "ApplyCausalAttentionMask" in text and "ApplyRoPE" in text


# ---------------------------------------------------------------- KV caching

CACHE_LEN = 9


def _cached_layer(kind, cache_len=CACHE_LEN, **kwargs):
    make_mask, _ = MASKS[kind]
    mask = dataclasses.replace(make_mask(), kv_positions_input_name="kv_token_positions")
    return sk.nn.KVCachingAttention.from_uncached(
        _build_attention(_weights(), mask),
        sequence_axis="seq",
        cache_len=cache_len,
        cached_axes={"batch": BATCH, "heads": HEADS, "projection": PROJ},
        cache_end_index_key="cache_end_index",
        **kwargs,
    )


def _kv_positions(upto):
    """Positions of every cache slot once `upto` tokens are written (-1 = empty)."""
    slots = np.full((BATCH, CACHE_LEN), -1)
    slots[:, :upto] = POSITIONS[:, :upto]
    return sk.nx.wrap(slots, "batch", "seq")


def _run_cached(layer, x, chunks, call=None):
    call = call or (lambda layer, x, **side: layer(x, **side))
    outputs, start = [], 0
    for size in chunks:
        stop = start + size
        out = call(
            layer,
            sk.nx.wrap(x[:, start:stop], "batch", "seq", "embedding"),
            token_positions=sk.nx.wrap(POSITIONS[:, start:stop], "batch", "seq"),
            kv_token_positions=_kv_positions(stop),
            cache_end_index=jnp.array(start),
        )
        outputs.append(np.asarray(out.unwrap("batch", "seq", "embedding")))
        start = stop
    return np.concatenate(outputs, axis=1)


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_cached_decoding_matches_uncached(kind):
    make_mask, _ = MASKS[kind]
    x = _inputs()
    full = _build_attention(_weights(), make_mask())(
        sk.nx.wrap(x, "batch", "seq", "embedding"),
        token_positions=sk.nx.wrap(POSITIONS, "batch", "seq"),
    )
    expected = np.asarray(full.unwrap("batch", "seq", "embedding"))
    got = _run_cached(_cached_layer(kind), x, chunks=[3, 1, 1, 1])
    real = POSITIONS >= 0
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[real], expected[real], atol=1e-5)


def test_cached_decoding_under_jit_with_stateless_call():
    x = _inputs(5)
    eager = _run_cached(_cached_layer("causal"), x, chunks=[2, 2, 1, 1])

    layer, state = sk.unbind_state_vars(_cached_layer("causal"), freeze=True)
    step = jax.jit(lambda layer, state, x, side: layer.stateless_call(state, x, **side))
    holder = {"state": state}

    def call(layer, x, **side):
        out, holder["state"] = step(layer, holder["state"], x, side)
        return out

    jitted = _run_cached(layer, x, chunks=[2, 2, 1, 1], call=call)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)


def test_cache_holds_the_written_keys_and_values():
    layer = _cached_layer("causal")
    x = _inputs()
    _run_cached(layer, x, chunks=[4])
    keys, values = layer.kv_cache.value
    w = _weights()
    expected_values = np.einsum("bse,ehp->bshp", x[:, :4], w["v"])
    got = np.asarray(values.unwrap("batch", "seq", "heads", "projection"))
    np.testing.assert_allclose(got[:, :4], expected_values, atol=1e-5)
    assert not got[:, 4:].any()
    assert keys.named_shape == values.named_shape


def test_stacked_cache_writes_and_reads_only_the_running_layers_slice():
    # A cache stacked over 3 LayerStack layers; layer 1 runs (told so by the
    # side input a LayerStack gives): its values land in slice 1 only, and it
    # attends over that slice as a layer with its own cache would.
    layer = _cached_layer("causal", layerstack_axes={"blocks": 3})
    x = _inputs()
    expected = _run_cached(_cached_layer("causal"), x, chunks=[4, 1])
    got = _run_cached(
        layer,
        x,
        chunks=[4, 1],
        call=lambda layer, x, **side: layer(x, layerstack_index={"blocks": jnp.int32(1)}, **side),
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    _, values = layer.kv_cache.value
    got_values = np.asarray(values.unwrap("blocks", "batch", "seq", "heads", "projection"))
    expected_values = np.einsum("bse,ehp->bshp", x[:, :5], _weights()["v"])
    np.testing.assert_allclose(got_values[1, :, :5], expected_values, atol=1e-5)
    assert not got_values[[0, 2]].any() and not got_values[1, :, 5:].any()


@sk.pytree_dataclass
class _Second(sk.nn.Layer):
    """Returns the second element of a pair: the key cache, then the value cache."""

    def __call__(self, pair, /, **side_inputs):
        return pair[1]


@pytest.mark.parametrize("cache_len", [1, 3])
@pytest.mark.parametrize("stack", [None, {"blocks": 1}, {"blocks": 2}])
def test_cache_with_size_one_axes_matches_numpy(cache_len, stack):
    # Size-1 axes (a batch of one, one head, a one-layer stack, a one-slot
    # cache) are dropped for the write and put back; the values must land
    # where numpy puts them, under jit too.
    ident = sk.nn.Identity()
    layer = sk.nn.KVCachingAttention.from_uncached(
        sk.nn.Attention(ident, ident, ident, _Second(), _Second()),
        sequence_axis="seq",
        cache_len=cache_len,
        cached_axes={"batch": 1, "heads": 1, "features": 2},
        cache_end_index_key="end",
        layerstack_axes=stack,
    )
    row = stack["blocks"] - 1 if stack else 0  # the last layer of the stack
    index = {"layerstack_index": {"blocks": jnp.int32(row)}} if stack else {}
    new = np.array([[[[5.0, 6.0]]]])
    x = sk.nx.wrap(jnp.asarray(new), "batch", "seq", "heads", "features")
    layer, state = sk.unbind_state_vars(layer, freeze=True)
    end = cache_len - 1
    out, (cache,) = jax.jit(lambda s, x: layer.stateless_call(s, x, end=jnp.int32(end), **index))(
        state, x
    )
    names = ("batch", "heads", "seq", "features")
    expected = np.zeros((1, 1, cache_len, 2))
    expected[:, :, end] = new[:, 0]
    got = [np.asarray(c.unwrap(*(["blocks"] if stack else []), *names)) for c in cache.value]
    if stack:
        full = np.zeros((stack["blocks"], *expected.shape))
        full[row] = expected
        expected = full
    np.testing.assert_array_equal(got[0], expected)
    np.testing.assert_array_equal(got[1], expected)
    np.testing.assert_array_equal(out.unwrap(*names), expected[row] if stack else expected)


def test_stacked_cache_outside_its_layerstack_is_an_error():
    layer = _cached_layer("causal", layerstack_axes={"blocks": 3})
    with pytest.raises(ValueError, match=r"must run inside that LayerStack.*\['blocks'\]"):
        _run_cached(layer, _inputs(), chunks=[2])


def test_stacked_cache_index_out_of_range_is_an_error_or_nan_under_jit():
    layer = _cached_layer("causal", layerstack_axes={"blocks": 3})

    def call(layer, x, **side):
        return layer(x, layerstack_index={"blocks": 3}, **side)

    with pytest.raises(ValueError, match=r"layerstack_index\['blocks'\] is 3, outside the 3"):
        _run_cached(layer, _inputs(), chunks=[2], call=call)
    state_layer, state = sk.unbind_state_vars(layer, freeze=True)
    step = jax.jit(
        lambda state, x, index, side: state_layer.stateless_call(
            state, x, layerstack_index={"blocks": index}, **side
        )
    )
    outputs = {}
    for index in (2, 3):

        def jitted(_, x, index=index, **side):
            out, _ = step(state, x, jnp.int32(index), side)
            return out

        outputs[index] = _run_cached(layer, _inputs(), chunks=[2], call=jitted)
    assert np.isfinite(outputs[2]).all() and np.isnan(outputs[3]).all()


def test_cache_overflow_is_an_error_when_index_is_concrete():
    layer = _cached_layer("causal", cache_len=4)
    with pytest.raises(ValueError, match="cannot write 2 new entries at index 3"):
        layer(
            sk.nx.ones({"batch": BATCH, "seq": 2, "embedding": EMBED}),
            token_positions=sk.nx.wrap(np.array([[3, 4]] * BATCH), "batch", "seq"),
            kv_token_positions=sk.nx.wrap(np.zeros((BATCH, 4), np.int32), "batch", "seq"),
            cache_end_index=3,
        )


def test_cache_overflow_under_jit_returns_nan():
    layer, state = sk.unbind_state_vars(_cached_layer("causal", cache_len=4), freeze=True)

    @jax.jit
    def run(state, end_index):
        return layer.stateless_call(
            state,
            sk.nx.ones({"batch": BATCH, "seq": 2, "embedding": EMBED}),
            token_positions=sk.nx.wrap(np.array([[0, 1]] * BATCH), "batch", "seq"),
            kv_token_positions=sk.nx.wrap(np.array([[0, 1, -1, -1]] * BATCH), "batch", "seq"),
            cache_end_index=end_index,
        )[0]

    ok = run(state, jnp.array(2))
    bad = run(state, jnp.array(3))
    assert np.isfinite(np.asarray(ok.unwrap("batch", "seq", "embedding"))).all()
    assert np.isnan(np.asarray(bad.unwrap("batch", "seq", "embedding"))).all()


def test_cache_missing_end_index_side_input():
    layer = _cached_layer("causal")
    with pytest.raises(KeyError, match="cache_end_index"):
        layer(sk.nx.ones({"batch": BATCH, "seq": 1, "embedding": EMBED}))


def test_cache_end_index_must_be_scalar_int():
    layer = _cached_layer("causal")
    with pytest.raises(TypeError, match="scalar int"):
        layer(sk.nx.ones({"batch": BATCH, "seq": 1, "embedding": EMBED}), cache_end_index=1.0)


def test_cache_with_mismatched_axes_names_the_cache():
    layer = _cached_layer("causal", cache_label="cache_0")
    with pytest.raises(ValueError, match=r"cache_0.*'batch': 2"):
        layer(
            sk.nx.ones({"batch": 2, "seq": 1, "embedding": EMBED}),
            token_positions=sk.nx.arange("seq", 1),
            cache_end_index=0,
        )


def test_from_uncached_label_dtype_and_shape():
    layer = _cached_layer("causal", cache_label="cache_0", cache_dtype=jnp.bfloat16)
    keys, values = layer.kv_cache.value
    assert layer.kv_cache.label == "cache_0"
    assert layer.kv_cache.metadata == {}
    assert keys.dtype == values.dtype == jnp.bfloat16
    assert keys.named_shape == {
        "batch": BATCH,
        "heads": HEADS,
        "projection": PROJ,
        "seq": CACHE_LEN,
    }
    assert layer.sequence_axis == "seq"
    assert layer.kv_cache_end_index_key == "cache_end_index"


def test_from_uncached_with_layerstack_axes():
    layer = _cached_layer("causal", layerstack_axes={"blocks": 5})
    # One cache for all layers, carried through the stack; each layer finds its slice.
    assert layer.kv_cache.metadata == {
        "layerstack_axes": {"blocks": sk.nn.LayerStackVarBehavior.SHARED}
    }
    assert layer.layerstack_axes == ("blocks",)
    assert layer.kv_cache.value[0].named_shape["blocks"] == 5
    assert isinstance(layer.kv_cache.label, sk.AutoStateVarLabel)


def test_from_uncached_keeps_the_sublayers():
    original = _build_attention(_weights(), sk.nn.ApplyCausalAttentionMask(-1e9))
    cached = sk.nn.KVCachingAttention.from_uncached(original, "seq", 4, {"batch": 1}, "idx")
    for name in ("input_to_query", "input_to_key", "input_to_value"):
        assert getattr(cached, name) is getattr(original, name)


def test_from_uncached_rejects_sequence_axis_in_cached_axes():
    original = sk.nn.Attention(*[sk.nn.Identity()] * 5)
    with pytest.raises(ValueError, match="seq"):
        sk.nn.KVCachingAttention.from_uncached(original, "seq", 4, {"seq": 4}, "idx")


def test_from_uncached_rejects_non_attention():
    with pytest.raises(TypeError, match="Attention"):
        sk.nn.KVCachingAttention.from_uncached(sk.nn.Identity(), "seq", 4, {}, "idx")


def test_from_uncached_rejects_bad_cache_len():
    original = sk.nn.Attention(*[sk.nn.Identity()] * 5)
    with pytest.raises(ValueError, match="positive"):
        sk.nn.KVCachingAttention.from_uncached(original, "seq", 0, {}, "idx")


def test_caching_attention_renders_with_treescope():
    text = treescope.render_to_text(_cached_layer("sliding", cache_label="cache_0"))
    assert "KVCachingAttention" in text and "cache_0" in text


# ---------------------------------------------------------------- GQA from sk.nn layers

GROUPS, QUERY_HEADS = 2, 2


def _gqa_attention(kv_positions_input_name="token_positions", window=None):
    key = jax.random.key(7)
    proj = {"projection": PROJ}

    def linear(name, out_axes, in_axes=None):
        return sk.nn.Linear.from_config(
            f"attn/{name}", key, input_axes=in_axes or {"embedding": EMBED}, output_axes=out_axes
        )

    rope = sk.nn.ApplyRoPE("projection", max_wavelength=BASE)
    if window is None:
        mask = sk.nn.ApplyCausalAttentionMask(
            jnp.array(-2.38e38), kv_positions_input_name=kv_positions_input_name
        )
    else:
        mask = sk.nn.ApplyCausalSlidingWindowAttentionMask(
            jnp.array(-2.38e38), window, kv_positions_input_name=kv_positions_input_name
        )
    heads = {"head_groups": GROUPS, "query_heads": QUERY_HEADS}
    return sk.nn.Attention(
        input_to_query=sk.nn.Sequential(
            [linear("query", {**heads, **proj}), rope, sk.nn.ConstantRescale(PROJ**-0.5)]
        ),
        input_to_key=sk.nn.Sequential([linear("key", {"head_groups": GROUPS, **proj}), rope]),
        input_to_value=linear("value", {"head_groups": GROUPS, **proj}),
        query_key_to_attn=sk.nn.Sequential(
            [
                sk.nn.NamedEinsum(
                    (
                        {"seq": "tq", "head_groups": "g", "query_heads": "h", "projection": "p"},
                        {"seq": "tk", "head_groups": "g", "projection": "p"},
                    ),
                    {"seq": "tq", "head_groups": "g", "query_heads": "h", "kv_seq": "tk"},
                ),
                mask,
                sk.nn.Softmax("kv_seq"),
            ]
        ),
        attn_value_to_output=sk.nn.Sequential(
            [
                sk.nn.NamedEinsum(
                    (
                        {"seq": "tq", "head_groups": "g", "query_heads": "h", "kv_seq": "tk"},
                        {"seq": "tk", "head_groups": "g", "projection": "p"},
                    ),
                    {"seq": "tq", "head_groups": "g", "query_heads": "h", "projection": "p"},
                ),
                linear("output", {"embedding": EMBED}, {**heads, **proj}),
            ]
        ),
    )


def _gqa_numpy(layer, x, positions, visible):
    params = {p.label: p.value for p in sk.unbind_params(layer)[1]}
    wq = np.asarray(
        params["attn/query.weights"].unwrap("embedding", "head_groups", "query_heads", "projection")
    )
    wk = np.asarray(params["attn/key.weights"].unwrap("embedding", "head_groups", "projection"))
    wv = np.asarray(params["attn/value.weights"].unwrap("embedding", "head_groups", "projection"))
    wo = np.asarray(
        params["attn/output.weights"].unwrap(
            "head_groups", "query_heads", "projection", "embedding"
        )
    )
    x = x.astype(np.float64)
    b, s = positions.shape
    q = np.einsum("bse,eghp->bsghp", x, wq).reshape(b, s, GROUPS * QUERY_HEADS, PROJ)
    q = _rope_np(q, positions).reshape(b, s, GROUPS, QUERY_HEADS, PROJ) / np.sqrt(PROJ)
    k = _rope_np(np.einsum("bse,egp->bsgp", x, wk), positions)
    v = np.einsum("bse,egp->bsgp", x, wv)
    logits = np.einsum("bsghp,btgp->bghst", q, k)
    logits = np.where(visible[:, None, None], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bghst,btgp->bsghp", weights, v)
    return np.einsum("bsghp,ghpe->bse", out, wo)


@pytest.mark.parametrize("window", [None, 2])
def test_gqa_attention_from_linear_layers_matches_numpy(window):
    layer = _gqa_attention(window=window)
    x = _inputs(6)
    out = layer(
        sk.nx.wrap(x, "batch", "seq", "embedding"),
        token_positions=sk.nx.wrap(POSITIONS, "batch", "seq"),
    )
    got = np.asarray(out.unwrap("batch", "seq", "embedding"))
    real = POSITIONS >= 0
    visible = _causal_reference(POSITIONS, POSITIONS, window) | ~real[:, :, None]
    expected = _gqa_numpy(layer, x, np.where(real, POSITIONS, 0), visible)
    np.testing.assert_allclose(got[real], expected[real], atol=1e-5)


@pytest.mark.parametrize("window", [None, 2])
def test_gqa_cached_decoding_matches_uncached(window):
    x = _inputs(8)
    full = _gqa_attention(window=window)(
        sk.nx.wrap(x, "batch", "seq", "embedding"),
        token_positions=sk.nx.wrap(POSITIONS, "batch", "seq"),
    )
    cached = sk.nn.KVCachingAttention.from_uncached(
        _gqa_attention("kv_token_positions", window),
        sequence_axis="seq",
        cache_len=CACHE_LEN,
        cached_axes={"batch": BATCH, "head_groups": GROUPS, "projection": PROJ},
        cache_end_index_key="cache_end_index",
    )
    got = _run_cached(cached, x, chunks=[2, 1, 1, 1, 1])
    real = POSITIONS >= 0
    expected = np.asarray(full.unwrap("batch", "seq", "embedding"))
    np.testing.assert_allclose(got[real], expected[real], atol=1e-5)
