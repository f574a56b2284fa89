"""Tests for NamedEinsum."""

import jax
import numpy as np
import pytest
import treescope
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk


def _random(names_sizes, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=tuple(names_sizes.values())).astype(np.float32)
    return data, sk.nx.wrap(data, *names_sizes)


def _np(array, *names):
    return np.asarray(array.unwrap(*names), dtype=np.float64)


ATTENTION = sk.nn.NamedEinsum(
    (("tokens", "heads", "projection"), ("kv_tokens", "heads", "projection")),
    ("heads", "tokens", "kv_tokens"),
)


def test_tuple_spec_matches_numpy_einsum():
    q, q_named = _random({"tokens": 3, "heads": 2, "projection": 4}, seed=1)
    k, k_named = _random({"kv_tokens": 5, "heads": 2, "projection": 4}, seed=2)
    out = ATTENTION((q_named, k_named))
    assert dict(out.named_shape) == {"heads": 2, "tokens": 3, "kv_tokens": 5}
    np.testing.assert_allclose(
        _np(out, "heads", "tokens", "kv_tokens"), np.einsum("thp,shp->hts", q, k), rtol=1e-5
    )


def test_dict_spec_with_explicit_indices():
    einsum = sk.nn.NamedEinsum(
        (
            {"tokens": "t", "heads": "h", "projection": "p"},
            {"kv": "s", "heads": "h", "projection": "p"},
        ),
        {"heads": "h", "tokens": "t", "kv": "s"},
    )
    q, q_named = _random({"tokens": 3, "heads": 2, "projection": 4}, seed=1)
    k, k_named = _random({"projection": 4, "kv": 5, "heads": 2}, seed=2)
    out = einsum((q_named, k_named))
    np.testing.assert_allclose(
        _np(out, "heads", "tokens", "kv"), np.einsum("thp,psh->hts", q, k), rtol=1e-5
    )


def test_index_names_may_be_any_labels():
    einsum = sk.nn.NamedEinsum(({"a": "row index", "b": "col"},), {"x": "col", "y": "row index"})
    data, named = _random({"a": 2, "b": 3})
    np.testing.assert_allclose(_np(einsum((named,)), "x", "y"), data.T)


def test_shared_index_on_one_operand_takes_the_diagonal():
    einsum = sk.nn.NamedEinsum(({"a": "i", "b": "i"},), {"c": "i"})
    data, named = _random({"a": 3, "b": 3})
    np.testing.assert_allclose(_np(einsum((named,)), "c"), np.diagonal(data))


def test_full_contraction_gives_a_scalar():
    einsum = sk.nn.NamedEinsum(({"a": "i"}, {"b": "i"}), {})
    x, x_named = _random({"a": 4}, seed=1)
    y, y_named = _random({"b": 4}, seed=2)
    out = einsum((x_named, y_named))
    assert out.named_shape == {}
    np.testing.assert_allclose(float(out.data_array), float(x @ y), rtol=1e-5)


def test_batch_axes_present_everywhere_are_kept():
    q, q_named = _random({"batch": 2, "tokens": 3, "heads": 2, "projection": 4}, seed=1)
    k, k_named = _random({"kv_tokens": 5, "heads": 2, "batch": 2, "projection": 4}, seed=2)
    out = ATTENTION((q_named, k_named))
    assert dict(out.named_shape) == {"batch": 2, "heads": 2, "tokens": 3, "kv_tokens": 5}
    np.testing.assert_allclose(
        _np(out, "batch", "heads", "tokens", "kv_tokens"),
        np.einsum("bthp,shbp->bhts", q, k),
        rtol=1e-5,
    )


def test_lists_of_operands_are_accepted_and_jit_works():
    _, q = _random({"tokens": 3, "heads": 2, "projection": 4}, seed=1)
    _, k = _random({"kv_tokens": 5, "heads": 2, "projection": 4}, seed=2)
    jitted = jax.jit(lambda layer, q, k: layer([q, k]))
    np.testing.assert_allclose(
        _np(jitted(ATTENTION, q, k), "heads", "tokens", "kv_tokens"),
        _np(ATTENTION((q, k)), "heads", "tokens", "kv_tokens"),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            (sk.nx.ones({"batch": 2, "tokens": 3, "heads": 2, "projection": 4}),
             sk.nx.ones({"kv_tokens": 5, "heads": 2, "projection": 4})),
            "operand 1 has batch axes {}",
        ),
        (
            (sk.nx.ones({"tokens": 3, "heads": 2, "projection": 4}),
             sk.nx.ones({"kv_tokens": 5, "heads": 3, "projection": 4})),
            "index 'heads' has size 2 in operand 0 but axis 'heads' of operand 1 has size 3",
        ),
        (
            (sk.nx.ones({"tokens": 3, "heads": 2}),
             sk.nx.ones({"kv_tokens": 5, "heads": 2, "projection": 4})),
            r"operand 0 .* lacks axes \['projection'\]",
        ),
        (
            (sk.nx.ones({"tokens": 3, "heads": 2, "projection": 4}),),
            "expected a tuple of 2 NamedArrays",
        ),
        (
            (sk.nx.ones({"tokens": 3, "heads": 2, "projection": 4}).untag("tokens"),
             sk.nx.ones({"kv_tokens": 5, "heads": 2, "projection": 4})),
            "positional axes",
        ),
    ],
)  # fmt: skip
def test_operand_errors(arrays, message):
    with pytest.raises(ValueError, match=message):
        ATTENTION(arrays)


def test_output_spec_errors():
    x = sk.nx.ones({"a": 2})
    with pytest.raises(ValueError, match=r"indices \['b'\] appear in no input"):
        sk.nn.NamedEinsum((("a",),), ("a", "b"))((x,))
    with pytest.raises(ValueError, match="repeated"):
        sk.nn.NamedEinsum(({"a": "i"},), {"x": "i", "y": "i"})((x,))
    with pytest.raises(ValueError, match="also batch axes"):
        sk.nn.NamedEinsum(({"a": "i"},), {"z": "i"})((sk.nx.ones({"a": 2, "z": 2}),))


def test_non_named_operand_is_a_type_error():
    with pytest.raises(TypeError, match="not a NamedArray"):
        sk.nn.NamedEinsum((("a",),), ("a",))((np.ones(2),))


def test_renders_with_treescope():
    assert "NamedEinsum" in treescope.render_to_text(ATTENTION)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.tuples(*[st.integers(1, 3)] * 4),
    left_order=st.permutations(["b", "i", "j"]),
    right_order=st.permutations(["b", "j", "k"]),
    seed=st.integers(0, 2**16),
)
def test_batched_matmul_matches_numpy_for_any_layout(sizes, left_order, right_order, seed):
    size = dict(zip("bijk", sizes))
    left, left_named = _random({n: size[n] for n in left_order}, seed)
    right, right_named = _random({n: size[n] for n in right_order}, seed + 1)
    out = sk.nn.NamedEinsum((("i", "j"), ("j", "k")), ("i", "k"))((left_named, right_named))
    expected = np.einsum(f"{''.join(left_order)},{''.join(right_order)}->bik", left, right)
    np.testing.assert_allclose(_np(out, "b", "i", "k"), expected, rtol=1e-5, atol=1e-5)
