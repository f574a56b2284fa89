"""Tests for the named linear-operator weight initializers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saikei import sk

KEY = jax.random.key(0)


def _init(initializer, inputs, outputs, parallel=None, spatial=None, dtype=jnp.float32, **kw):
    return initializer(
        KEY,
        input_axes=inputs,
        output_axes=outputs,
        parallel_axes=parallel or {},
        convolution_spatial_axes=spatial or {},
        dtype=dtype,
        **kw,
    )


def _values(array):
    return np.asarray(array.unwrap(*array.named_shape), dtype=np.float64)


@pytest.mark.parametrize(
    ("mode", "expected_fan"),
    [("fan_in", 300), ("fan_out", 200), ("fan_avg", 250)],
)
@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
def test_variance_scaling_variance_is_scale_over_fan(mode, expected_fan, distribution):
    w = _init(
        sk.nn.variance_scaling_initializer,
        {"a": 30, "b": 10},
        {"c": 200},
        scale=2.0,
        mode=mode,
        distribution=distribution,
    )
    assert np.var(_values(w)) == pytest.approx(2.0 / expected_fan, rel=0.05)
    assert np.mean(_values(w)) == pytest.approx(0.0, abs=0.01)


def test_parallel_axes_count_toward_neither_fan():
    kwargs = {"scale": 1.0, "mode": "fan_in", "distribution": "normal"}
    w = _init(sk.nn.variance_scaling_initializer, {"a": 64}, {"b": 64}, {"heads": 16}, **kwargs)
    assert np.var(_values(w)) == pytest.approx(1.0 / 64, rel=0.05)


def test_spatial_axes_count_toward_both_fans():
    kwargs = {"scale": 1.0, "mode": "fan_out", "distribution": "normal"}
    w = _init(sk.nn.variance_scaling_initializer, {"a": 16}, {"b": 32}, spatial={"kw": 3}, **kwargs)
    assert np.var(_values(w)) == pytest.approx(1.0 / (32 * 3), rel=0.05)


def test_truncated_normal_stays_within_two_stddevs():
    w = _init(
        sk.nn.variance_scaling_initializer,
        {"a": 100},
        {"b": 100},
        scale=1.0,
        mode="fan_in",
        distribution="truncated_normal",
    )
    # The untruncated stddev is inflated by 1/0.8796 so the truncated one is 1/sqrt(fan).
    bound = 2 * math.sqrt(1.0 / 100) / 0.87962566103423978
    assert np.abs(_values(w)).max() <= bound + 1e-6


def test_xavier_uniform_bound_and_variance():
    w = _init(sk.nn.xavier_uniform_initializer, {"a": 40}, {"b": 60})
    limit = math.sqrt(6 / (40 + 60))
    assert np.abs(_values(w)).max() <= limit
    assert np.var(_values(w)) == pytest.approx(2 / (40 + 60), rel=0.1)


def test_xavier_normal_variance():
    w = _init(sk.nn.xavier_normal_initializer, {"a": 100}, {"b": 100})
    assert np.var(_values(w)) == pytest.approx(2 / 200, rel=0.05)


def test_result_has_every_axis_by_name_and_the_dtype():
    w = _init(
        sk.nn.xavier_uniform_initializer,
        {"a": 2},
        {"b": 3},
        {"p": 4},
        {"s": 5},
        dtype=jnp.bfloat16,
    )
    assert dict(w.named_shape) == {"a": 2, "b": 3, "p": 4, "s": 5}
    assert w.positional_shape == ()
    assert w.dtype == jnp.bfloat16


def test_different_keys_give_different_weights():
    kwargs = {"input_axes": {"a": 4}, "output_axes": {"b": 4}, "parallel_axes": {}}
    kwargs |= {"convolution_spatial_axes": {}, "dtype": jnp.float32}
    a = sk.nn.xavier_normal_initializer(jax.random.key(0), **kwargs)
    b = sk.nn.xavier_normal_initializer(jax.random.key(1), **kwargs)
    assert not np.allclose(_values(a), _values(b))


def test_constant_and_zero_initializers():
    ones = _init(sk.nn.constant_initializer(1.5), {"a": 2}, {"b": 3}, {"p": 2})
    zeros = _init(sk.nn.zero_initializer, {}, {"b": 3})
    np.testing.assert_array_equal(_values(ones), np.full((2, 2, 3), 1.5))
    assert dict(ones.named_shape) == {"a": 2, "b": 3, "p": 2}
    np.testing.assert_array_equal(zeros.unwrap("b"), np.zeros(3))


def test_constant_initializer_rejects_arrays():
    with pytest.raises(ValueError, match="scalar"):
        sk.nn.constant_initializer(jnp.ones(3))


def test_repeated_axis_names_are_rejected():
    with pytest.raises(ValueError, match=r"\['a'\]"):
        _init(sk.nn.xavier_uniform_initializer, {"a": 2}, {"b": 3}, {"a": 2})
    with pytest.raises(ValueError, match="more than one group"):
        sk.nn.check_unique_axis_names_for_initializer({}, {"x": 1}, {}, {"x": 1})


def test_bad_mode_or_distribution_is_rejected():
    with pytest.raises(ValueError, match="mode 'fan_xx'"):
        _init(
            sk.nn.variance_scaling_initializer,
            {"a": 2},
            {"b": 2},
            scale=1.0,
            mode="fan_xx",
            distribution="normal",
        )
    with pytest.raises(ValueError, match="distribution 'cauchy'"):
        _init(
            sk.nn.variance_scaling_initializer,
            {"a": 2},
            {"b": 2},
            scale=1.0,
            mode="fan_in",
            distribution="cauchy",
        )


def test_initializers_satisfy_the_protocol():
    init: sk.nn.LinearOperatorWeightInitializer = sk.nn.constant_initializer(0.0)
    assert callable(init)


_axis_sizes = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.integers(1, 4), max_size=3
)


@settings(max_examples=30, deadline=None)
@given(inputs=_axis_sizes, outputs=_axis_sizes, parallel=_axis_sizes)
def test_uniform_values_lie_within_the_fan_bound(inputs, outputs, parallel):
    outputs = {f"out_{k}": v for k, v in outputs.items()}
    parallel = {f"par_{k}": v for k, v in parallel.items()}
    w = _init(
        sk.nn.variance_scaling_initializer,
        inputs,
        outputs,
        parallel,
        scale=3.0,
        mode="fan_in",
        distribution="uniform",
    )
    fan_in = math.prod(inputs.values())
    assert dict(w.named_shape) == {**inputs, **outputs, **parallel}
    assert np.abs(_values(w)).max() <= math.sqrt(3 * 3.0 / fan_in) + 1e-6


# Parameter keys: penzai's name hash, so `from_config` models start from penzai's weights.


def _key_data(key):
    return np.asarray(jax.random.key_data(key))


def test_derive_param_key_folds_in_big_endian_sha1_prefix():
    import hashlib

    name = "mlp/Affine_0/Linear.weights"
    offset = int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big")
    np.testing.assert_array_equal(
        _key_data(sk.nn.derive_param_key(KEY, name)), _key_data(jax.random.fold_in(KEY, offset))
    )


@pytest.mark.parametrize("name", ["w", "transformer/block_0/attention/query.weights", "ü/名前"])
def test_derive_param_key_equals_penzai(name):
    penzai_nn = pytest.importorskip("penzai.pz").nn
    base = jax.random.key(42)
    np.testing.assert_array_equal(
        _key_data(sk.nn.derive_param_key(base, name)),
        _key_data(penzai_nn.derive_param_key(base, name)),
    )


def _param_arrays(params):
    return {p.label: np.asarray(p.value.unwrap(*sorted(p.value.named_shape))) for p in params}


def test_linear_and_mlp_start_from_penzai_weights():
    pz = pytest.importorskip("penzai.pz")
    penzai_mlp = pytest.importorskip("penzai.models.simple_mlp")
    from saikei.models import simple_mlp

    key = jax.random.key(7)
    ours = sk.nn.Linear.from_config("lin", key, {"a": 3, "b": 2}, {"c": 5})
    theirs = pz.nn.Linear.from_config("lin", key, {"a": 3, "b": 2}, {"c": 5})
    np.testing.assert_array_equal(
        _param_arrays(sk.unbind_params(ours)[1])["lin.weights"],
        _param_arrays(pz.unbind_params(theirs)[1])["lin.weights"],
    )
    sizes = [4, 16, 16, 3]
    kwargs = dict(name="mlp", init_base_rng=key, feature_sizes=sizes)
    ours = _param_arrays(sk.unbind_params(simple_mlp.MLP.from_config(**kwargs))[1])
    theirs = _param_arrays(pz.unbind_params(penzai_mlp.MLP.from_config(**kwargs))[1])
    assert sorted(ours) == sorted(theirs)
    for label, value in theirs.items():
        np.testing.assert_array_equal(ours[label], value, err_msg=label)
