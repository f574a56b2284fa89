"""Tests for sk.nn embeddings: EmbeddingTable/Lookup/Decode and rotary position embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk

# ---------------------------------------------------------------- embedding tables


def _table(vocab=7, dim=4, seed=0):
    return sk.nn.EmbeddingTable.from_config("emb", jax.random.key(seed), vocab, {"embedding": dim})


def _table_data(table):
    return np.asarray(table.embeddings.value.unwrap("vocabulary", "embedding"))


def test_table_from_config_label_and_shape():
    table = _table()
    assert table.embeddings.label == "emb.embeddings"
    assert table.embeddings.value.named_shape == {"vocabulary": 7, "embedding": 4}
    assert table.vocabulary_axis == "vocabulary"


def test_table_without_rng_has_a_slot():
    table = sk.nn.EmbeddingTable.from_config("emb", None, 7, {"embedding": 4})
    assert table.embeddings == sk.ParameterSlot("emb.embeddings")


def test_table_default_init_has_fan_out_variance():
    table = sk.nn.EmbeddingTable.from_config("emb", jax.random.key(1), 2000, {"embedding": 64})
    std = float(np.std(_table_data(table)))
    assert abs(std - 1 / 8) < 0.01


def test_table_init_depends_on_name_only():
    a = _table_data(_table(seed=3))
    b = _table_data(_table(seed=3))
    np.testing.assert_array_equal(a, b)


def test_table_custom_initializer_and_dtype():
    def init(key, *, input_axes, output_axes, parallel_axes, convolution_spatial_axes, dtype):
        return sk.nx.ones({**parallel_axes, **output_axes}, dtype)

    table = sk.nn.EmbeddingTable.from_config(
        "emb", jax.random.key(0), 3, {"embedding": 2}, initializer=init, dtype=jnp.bfloat16
    )
    assert table.embeddings.value.dtype == jnp.bfloat16
    assert float(table.embeddings.value.unwrap("vocabulary", "embedding").sum()) == 6.0


def test_table_rejects_vocabulary_axis_among_embedding_axes():
    with pytest.raises(ValueError, match="vocabulary"):
        sk.nn.EmbeddingTable.from_config("emb", None, 3, {"vocabulary": 2})


def test_table_rejects_bad_vocab_size():
    with pytest.raises(ValueError, match="positive"):
        sk.nn.EmbeddingTable.from_config("emb", None, 0, {"embedding": 2})


def test_lookup_matches_numpy_indexing():
    table = _table()
    ids = np.array([[0, 6, 3], [2, 2, 5]])
    out = sk.nn.EmbeddingLookup(table)(sk.nx.wrap(ids, "batch", "seq"))
    assert out.named_shape == {"batch": 2, "seq": 3, "embedding": 4}
    np.testing.assert_array_equal(
        np.asarray(out.unwrap("batch", "seq", "embedding")), _table_data(table)[ids]
    )


def test_lookup_with_vocabulary_axis_last():
    data = np.arange(12.0).reshape(3, 4)  # embedding x vocabulary
    table = sk.nn.EmbeddingTable(
        sk.Parameter(label="t", value=sk.nx.wrap(data, "embedding", "vocab")), "vocab"
    )
    out = sk.nn.EmbeddingLookup(table)(sk.nx.wrap(np.array([3, 0]), "seq"))
    np.testing.assert_array_equal(np.asarray(out.unwrap("seq", "embedding")), data.T[[3, 0]])


def test_lookup_rejects_out_of_range_ids():
    lookup = sk.nn.EmbeddingLookup(_table())
    with pytest.raises(ValueError, match=r"\[0, 7\).*\[7\]"):
        lookup(sk.nx.wrap(np.array([1, 7]), "seq"))


def test_lookup_rejects_negative_ids():
    lookup = sk.nn.EmbeddingLookup(_table())
    with pytest.raises(ValueError, match=r"\[-1\]"):
        lookup(sk.nx.wrap(np.array([-1, 2]), "seq"))


def test_lookup_out_of_range_under_jit_gives_nan_not_another_token():
    lookup = sk.nn.EmbeddingLookup(_table())
    out = jax.jit(lambda ids: lookup(ids))(sk.nx.wrap(jnp.array([-1, 7, 2]), "seq"))
    rows = np.asarray(out.unwrap("seq", "embedding"))
    assert np.isnan(rows[:2]).all()
    assert np.isfinite(rows[2]).all()


def test_lookup_rejects_float_ids():
    with pytest.raises(TypeError, match="integer"):
        sk.nn.EmbeddingLookup(_table())(sk.nx.wrap(np.array([1.0]), "seq"))


def test_lookup_rejects_axis_clash():
    with pytest.raises(ValueError, match="embedding"):
        sk.nn.EmbeddingLookup(_table())(sk.nx.wrap(np.array([1]), "embedding"))


def test_lookup_rejects_plain_arrays():
    with pytest.raises(TypeError, match="NamedArray"):
        sk.nn.EmbeddingLookup(_table())(jnp.array([1]))


def test_decode_matches_numpy_contraction():
    table = _table()
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    out = sk.nn.EmbeddingDecode(table)(sk.nx.wrap(x, "batch", "embedding", "seq"))
    assert out.named_shape == {"batch": 2, "seq": 3, "vocabulary": 7}
    expected = np.einsum("bes,ve->bsv", x, _table_data(table))
    np.testing.assert_allclose(
        np.asarray(out.unwrap("batch", "seq", "vocabulary")), expected, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("batch", [1, 8, 100])
def test_decode_matches_numpy_for_one_a_few_and_many_rows(batch):
    # Greedy decoding multiplies 1 or a few rows by the table, prefill many;
    # each row count takes its own form of the product.
    table = _table(vocab=50, dim=16)
    x = np.random.default_rng(batch).normal(size=(batch, 1, 16)).astype(np.float32)
    out = jax.jit(sk.nn.EmbeddingDecode(table))(sk.nx.wrap(x, "batch", "seq", "embedding"))
    assert out.axis_names == ("batch", "seq", "vocabulary")
    expected = np.einsum("bse,ve->bsv", x.astype(np.float64), _table_data(table))
    np.testing.assert_allclose(np.asarray(out.data_array), expected, rtol=1e-5, atol=1e-5)


def test_decode_with_two_embedding_axes():
    w = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)  # heads, vocab, proj
    table = sk.nn.EmbeddingTable(
        sk.Parameter(label="t", value=sk.nx.wrap(w, "heads", "vocabulary", "projection")),
        "vocabulary",
    )
    x = np.random.default_rng(2).normal(size=(4, 3, 2)).astype(np.float32)
    out = sk.nn.EmbeddingDecode(table)(sk.nx.wrap(x, "seq", "projection", "heads"))
    expected = np.einsum("sph,hvp->sv", x, w)
    np.testing.assert_allclose(
        np.asarray(out.unwrap("seq", "vocabulary")), expected, rtol=1e-5, atol=1e-5
    )


def test_decode_shape_mismatch_names_the_parameter():
    with pytest.raises(ValueError, match=r"emb\.embeddings.*'embedding': 4.*'embedding': 5"):
        sk.nn.EmbeddingDecode(_table())(sk.nx.ones({"seq": 2, "embedding": 5}))


def test_decode_rejects_missing_embedding_axis():
    with pytest.raises(ValueError, match="embedding"):
        sk.nn.EmbeddingDecode(_table())(sk.nx.ones({"seq": 2, "features": 4}))


def test_tied_lookup_and_decode_share_one_parameter():
    table = _table()
    model = sk.nn.Sequential([sk.nn.EmbeddingLookup(table), sk.nn.EmbeddingDecode(table)])
    unbound, params = sk.unbind_params(model)
    assert [p.label for p in params] == ["emb.embeddings"]
    logits = model(sk.nx.wrap(np.array([1, 2]), "seq"))
    data = _table_data(table)
    np.testing.assert_allclose(
        np.asarray(logits.unwrap("seq", "vocabulary")), data[[1, 2]] @ data.T, rtol=1e-5
    )
    rebound = sk.bind_variables(unbound, params)
    assert rebound.sublayers[0].table.embeddings is rebound.sublayers[1].table.embeddings


def test_unbound_table_lookup_raises_unbound_error():
    table = sk.nn.EmbeddingTable.from_config("emb", None, 3, {"embedding": 2})
    with pytest.raises(sk.UnboundVariableError):
        sk.nn.EmbeddingLookup(table)(sk.nx.wrap(np.array([1]), "seq"))


def test_embedding_layers_render_with_treescope():
    table = _table()
    text = treescope.render_to_text(
        sk.nn.Sequential([sk.nn.EmbeddingLookup(table), sk.nn.EmbeddingDecode(table)])
    )
    assert "EmbeddingLookup" in text and "emb.embeddings" in text


# ---------------------------------------------------------------- RoPE references


def _rope_reference(x, positions, base, rotary_dims=None, scale=1.0):
    """HF-style RoPE on the last axis of `x` (rotate_half), in float64 numpy."""
    x = np.asarray(x, np.float64)
    d = x.shape[-1] if rotary_dims is None else rotary_dims
    inv_freq = 1.0 / (base ** (np.arange(0, d, 2) / d)) / scale
    freqs = np.asarray(positions, np.float64)[..., None] * inv_freq
    emb = np.concatenate([freqs, freqs], axis=-1)
    rot, rest = x[..., :d], x[..., d:]
    half = d // 2
    rotated_half = np.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    return np.concatenate([rot * np.cos(emb) + rotated_half * np.sin(emb), rest], axis=-1)


def _random(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def test_rope_matches_hf_formula():
    x = _random((2, 5, 3, 8))  # batch, seq, heads, projection
    positions = np.array([[0, 1, 2, 3, 4], [-1, 0, 1, 2, 40]])
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    out = rope(
        sk.nx.wrap(x, "batch", "seq", "heads", "projection"),
        token_positions=sk.nx.wrap(positions, "batch", "seq"),
    )
    expected = _rope_reference(x, positions[:, :, None], 10_000)
    np.testing.assert_allclose(
        np.asarray(out.unwrap("batch", "seq", "heads", "projection")), expected, atol=1e-5
    )


def test_rope_with_embedding_axis_not_last_and_positions_on_seq_only():
    x = _random((8, 4, 2), seed=1)  # projection, seq, heads
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=500.0, positions_input_name="pos")
    out = rope(sk.nx.wrap(x, "projection", "seq", "heads"), pos=sk.nx.arange("seq", 4))
    assert out.named_shape == {"projection": 8, "seq": 4, "heads": 2}
    xt = np.transpose(x, (1, 2, 0))
    expected = _rope_reference(xt, np.arange(4)[:, None], 500.0)
    np.testing.assert_allclose(
        np.asarray(out.unwrap("seq", "heads", "projection")), expected, atol=1e-5
    )


def test_rope_scale_factor_divides_positions():
    x = _random((6, 4), seed=2)
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000, scale_factor=8.0)
    out = rope(sk.nx.wrap(x, "seq", "projection"), token_positions=sk.nx.arange("seq", 6) * 3)
    expected = _rope_reference(x, np.arange(6) * 3, 10_000, scale=8.0)
    np.testing.assert_allclose(np.asarray(out.unwrap("seq", "projection")), expected, atol=1e-5)


def test_rope_keeps_bfloat16_and_computes_in_float32():
    x = _random((5, 8), seed=3)
    positions = sk.nx.arange("seq", 5) * 300
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    out = rope(
        sk.nx.wrap(jnp.asarray(x, jnp.bfloat16), "seq", "projection"), token_positions=positions
    )
    assert out.dtype == jnp.bfloat16
    x_rounded = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    expected = _rope_reference(x_rounded, np.arange(5) * 300, 10_000)
    np.testing.assert_allclose(
        np.asarray(out.unwrap("seq", "projection").astype(jnp.float32)),
        expected,
        rtol=1e-2,
        atol=1e-2,
    )


def test_rope_to_subset_matches_neox_formula():
    x = _random((2, 6, 10), seed=4)  # heads, seq, projection
    positions = np.arange(6) + 5
    rope = sk.nn.ApplyRoPEToSubset("projection", 10_000, rope_subset_size=4)
    out = rope(
        sk.nx.wrap(x, "heads", "seq", "projection"),
        token_positions=sk.nx.wrap(positions, "seq"),
    )
    expected = _rope_reference(x, positions, 10_000, rotary_dims=4)
    got = np.asarray(out.unwrap("heads", "seq", "projection"))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got[..., 4:], x[..., 4:])


def test_rope_same_under_jit():
    x = sk.nx.wrap(_random((3, 4), seed=5), "seq", "projection")
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    positions = sk.nx.arange("seq", 3)
    eager = rope(x, token_positions=positions)
    jitted = jax.jit(lambda x, p: rope(x, token_positions=p))(x, positions)
    np.testing.assert_allclose(
        np.asarray(eager.unwrap("seq", "projection")),
        np.asarray(jitted.unwrap("seq", "projection")),
        atol=1e-6,
    )


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(0, 2000),
    n=st.integers(0, 2000),
    shift=st.integers(0, 500),
    seed=st.integers(0, 2**16),
)
def test_rope_dot_products_depend_only_on_relative_position(m, n, shift, seed):
    # The defining property of RoPE: <R(m) q, R(n) k> = <R(m + s) q, R(n + s) k>.
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    q, k = _random((2, 8), seed=seed)

    def dot(pq, pk):
        rq = rope(sk.nx.wrap(q, "projection"), token_positions=sk.nx.wrap(np.int32(pq)))
        rk = rope(sk.nx.wrap(k, "projection"), token_positions=sk.nx.wrap(np.int32(pk)))
        return float(
            np.dot(np.asarray(rq.unwrap("projection")), np.asarray(rk.unwrap("projection")))
        )

    np.testing.assert_allclose(dot(m, n), dot(m + shift, n + shift), atol=2e-3)
    np.testing.assert_allclose(dot(m, m), float(q @ k), rtol=1e-4, atol=1e-4)


def test_rope_missing_positions_side_input():
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    with pytest.raises(KeyError, match="token_positions"):
        rope(sk.nx.ones({"seq": 2, "projection": 4}))


def test_rope_positions_with_foreign_axis():
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    with pytest.raises(ValueError, match="subset"):
        rope(sk.nx.ones({"seq": 2, "projection": 4}), token_positions=sk.nx.arange("batch", 2))


def test_rope_positions_must_not_include_embedding_axis():
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    with pytest.raises(ValueError, match="subset"):
        rope(sk.nx.ones({"projection": 4}), token_positions=sk.nx.arange("projection", 4))


def test_rope_rejects_odd_size():
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    with pytest.raises(ValueError, match="even"):
        rope(sk.nx.ones({"seq": 2, "projection": 5}), token_positions=sk.nx.arange("seq", 2))


def test_rope_to_subset_rejects_too_large_subset():
    rope = sk.nn.ApplyRoPEToSubset("projection", 10_000, rope_subset_size=6)
    with pytest.raises(ValueError, match="between 2 and"):
        rope(sk.nx.ones({"seq": 2, "projection": 4}), token_positions=sk.nx.arange("seq", 2))


@pytest.mark.parametrize("size", [0, 3, 2.0])
def test_rope_to_subset_rejects_bad_subset_size(size):
    with pytest.raises(ValueError, match="rope_subset_size"):
        sk.nn.ApplyRoPEToSubset("projection", 10_000, rope_subset_size=size)


def test_rope_rejects_missing_embedding_axis():
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    with pytest.raises(ValueError, match="no axis 'projection'"):
        rope(sk.nx.ones({"seq": 2, "embedding": 4}), token_positions=sk.nx.arange("seq", 2))


def test_rope_rejects_float_positions():
    rope = sk.nn.ApplyRoPE("projection", max_wavelength=10_000)
    with pytest.raises(TypeError, match="integers"):
        rope(sk.nx.ones({"seq": 2, "projection": 4}), token_positions=sk.nx.ones({"seq": 2}))


def test_rope_rejects_nonpositive_wavelength():
    with pytest.raises(ValueError, match="positive"):
        sk.nn.ApplyRoPE("projection", max_wavelength=0)


def test_rope_renders_with_treescope():
    text = treescope.render_to_text(sk.nn.ApplyRoPEToSubset("projection", 10_000, 4))
    assert "ApplyRoPEToSubset" in text and "rope_subset_size" in text


def test_rope_llama3_scaling_is_validated():
    with pytest.raises(ValueError, match="llama3_scaling"):
        sk.nn.ApplyRoPE("projection", 10_000, llama3_scaling=(8.0, 4.0, 1.0, 16))


def test_rope_llama3_scaling_leaves_short_wavelengths_unchanged():
    # With a huge original context every wavelength counts as "short", so the
    # llama3 rule keeps the plain frequencies and the rotation is unchanged.
    x = sk.nx.wrap(
        jnp.asarray(np.random.default_rng(0).normal(size=(5, 8)), jnp.float32), "seq", "projection"
    )
    positions = sk.nx.arange("seq", 5)
    plain = sk.nn.ApplyRoPE("projection", 10_000)(x, token_positions=positions)
    scaled = sk.nn.ApplyRoPE("projection", 10_000, llama3_scaling=(8.0, 1.0, 4.0, 1e12))(
        x, token_positions=positions
    )
    np.testing.assert_allclose(
        scaled.unwrap("seq", "projection"), plain.unwrap("seq", "projection"), atol=1e-6
    )
