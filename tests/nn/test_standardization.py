"""Tests for Standardize, RMSStandardize, LayerNorm and RMSLayerNorm."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import treescope
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk

KEY = jax.random.key(0)


def _random(names_sizes, seed=0, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    data = (rng.normal(size=tuple(names_sizes.values())) * scale + offset).astype(np.float32)
    return data, sk.nx.wrap(data, *names_sizes)


def _np(array, *names):
    return np.asarray(array.unwrap(*names), dtype=np.float64)


def _standardize(x, axes, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _rms(x, axes, eps):
    x = x.astype(np.float64)
    return x / np.sqrt((x**2).mean(axis=axes, keepdims=True) + eps)


def test_standardize_matches_numpy():
    data, x = _random({"batch": 3, "features": 8}, scale=2.0, offset=1.0)
    out = sk.nn.Standardize("features", epsilon=1e-3)(x)
    np.testing.assert_allclose(
        _np(out, "batch", "features"), _standardize(data, -1, 1e-3), rtol=1e-5, atol=1e-5
    )


def test_standardize_over_several_axes_in_any_layout():
    data, x = _random({"a": 2, "b": 3, "c": 4})
    out = sk.nn.Standardize(("c", "a"))(x.order_as("c", "b", "a"))
    np.testing.assert_allclose(
        _np(out, "a", "b", "c"), _standardize(data, (0, 2), 1e-6), rtol=1e-4, atol=1e-5
    )


def test_rms_standardize_matches_numpy():
    data, x = _random({"seq": 5, "embedding": 6}, scale=3.0)
    out = sk.nn.RMSStandardize("embedding", epsilon=1e-2)(x)
    np.testing.assert_allclose(
        _np(out, "seq", "embedding"), _rms(data, -1, 1e-2), rtol=1e-5, atol=1e-6
    )


def test_positional_axes_are_carried_through():
    data, x = _random({"a": 2, "features": 4})
    out = sk.nn.Standardize("features")(x.untag("a"))
    assert out.positional_shape == (2,)
    np.testing.assert_allclose(
        _np(out.tag("a"), "a", "features"), _standardize(data, -1, 1e-6), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("layer", [sk.nn.Standardize, sk.nn.RMSStandardize])
def test_bfloat16_inputs_are_normalized_in_float32(layer):
    # A large offset makes bfloat16 statistics visibly wrong; float32 ones are fine.
    data, _ = _random({"seq": 4, "embedding": 64}, scale=1.0, offset=30.0)
    low = data.astype(ml_dtypes.bfloat16)
    out = layer("embedding")(sk.nx.wrap(jnp.asarray(low), "seq", "embedding"))
    assert out.dtype == jnp.bfloat16
    reference = _standardize if layer is sk.nn.Standardize else _rms
    expected = reference(low.astype(np.float32), -1, 1e-6).astype(ml_dtypes.bfloat16)
    np.testing.assert_allclose(
        np.asarray(out.unwrap("seq", "embedding"), np.float32),
        expected.astype(np.float32),
        rtol=1e-2,
        atol=1e-2,
    )


def test_integer_inputs_give_float_outputs():
    x = sk.nx.wrap(jnp.array([1, 2, 3]), "f")
    out = sk.nn.Standardize("f")(x)
    assert out.dtype == jnp.float32


def test_epsilon_is_a_pytree_child():
    _, x = _random({"f": 4})
    f = jax.jit(lambda layer, x: layer(x))
    small = f(sk.nn.RMSStandardize("f", epsilon=1e-6), x)
    large = f(sk.nn.RMSStandardize("f", epsilon=100.0), x)
    assert float(jnp.abs(large.data_array).max()) < float(jnp.abs(small.data_array).max())


def test_errors_name_the_missing_axis():
    with pytest.raises(ValueError, match=r"no axis \['q'\]"):
        sk.nn.Standardize("q")(sk.nx.ones({"f": 2}))
    with pytest.raises(TypeError, match="NamedArray"):
        sk.nn.RMSStandardize("f")(jnp.ones(2))


def test_layer_norm_structure_labels_and_slots():
    norm = sk.nn.LayerNorm.from_config(
        name="ln", init_base_rng=KEY, across_axes={"embedding": 4}, epsilon=1e-5
    )
    assert [type(s).__name__ for s in norm.sublayers] == ["Standardize", "Linear", "AddBias"]
    assert norm.sublayers[0].across == ("embedding",)
    assert norm.sublayers[0].epsilon == 1e-5
    assert [p.label for p in sk.unbind_params(norm)[1]] == ["ln/scale.weights", "ln/shift.bias"]
    np.testing.assert_array_equal(_np(norm.sublayers[1].weights.value, "embedding"), np.ones(4))
    slots = sk.nn.LayerNorm.from_config(
        name="ln", init_base_rng=None, across_axes={"embedding": 4}, epsilon=1e-5
    )
    assert slots == sk.unbind_params(norm)[0]


def test_layer_norm_matches_numpy_with_learned_scale_and_shift():
    norm = sk.nn.LayerNorm.from_config(name="ln", init_base_rng=None, across_axes={"e": 3})
    scale, shift = np.array([1.0, 2.0, -1.0]), np.array([0.5, 0.0, 1.0])
    norm = norm.bind_variables(
        [
            sk.Parameter(label="ln/scale.weights", value=sk.nx.wrap(jnp.asarray(scale), "e")),
            sk.Parameter(label="ln/shift.bias", value=sk.nx.wrap(jnp.asarray(shift), "e")),
        ]
    )
    data, x = _random({"n": 4, "e": 3}, offset=2.0)
    expected = _standardize(data, -1, 1e-6) * scale + shift
    np.testing.assert_allclose(_np(norm(x), "n", "e"), expected, rtol=1e-4, atol=1e-4)


def test_rms_layer_norm_matches_numpy():
    norm = sk.nn.RMSLayerNorm.from_config(
        name="norm", init_base_rng=KEY, across_axes={"e": 3}, epsilon=1e-5
    )
    assert [type(s).__name__ for s in norm.sublayers] == ["RMSStandardize", "Linear"]
    assert [p.label for p in sk.unbind_params(norm)[1]] == ["norm/scale.weights"]
    data, x = _random({"n": 4, "e": 3})
    np.testing.assert_allclose(_np(norm(x), "n", "e"), _rms(data, -1, 1e-5), rtol=1e-5, atol=1e-6)


def test_norm_parameters_use_the_requested_dtype():
    norm = sk.nn.RMSLayerNorm.from_config(
        name="n", init_base_rng=KEY, across_axes={"e": 3}, dtype=jnp.bfloat16
    )
    assert norm.sublayers[1].weights.value.dtype == jnp.bfloat16


def test_norms_render_with_treescope():
    norm = sk.nn.LayerNorm.from_config(name="ln", init_base_rng=KEY, across_axes={"e": 3})
    text = treescope.render_to_text(norm)
    assert "Standardize" in text and "ln/shift.bias" in text


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 3),
    cols=st.integers(2, 6),
    scale=st.floats(0.1, 10.0),
    offset=st.floats(-5.0, 5.0),
    seed=st.integers(0, 2**16),
)
def test_standardize_property(rows, cols, scale, offset, seed):
    data, x = _random({"r": rows, "c": cols}, seed=seed, scale=scale, offset=offset)
    out = sk.nn.Standardize("c", epsilon=1e-3)(x)
    np.testing.assert_allclose(
        _np(out, "r", "c"), _standardize(data, -1, 1e-3), rtol=1e-3, atol=1e-3
    )
