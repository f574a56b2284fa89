"""Tests for StochasticDropout, DisabledDropout and maybe_dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope

from saikei import sk


def _stream(seed=0):
    return sk.RandomStream.from_base_key(jax.random.key(seed))


def _np(array, *names):
    return np.asarray(array.unwrap(*names), dtype=np.float64)


def test_kept_values_are_rescaled_and_the_rest_are_zero():
    x = sk.nx.wrap(jnp.arange(1.0, 2001.0), "f")
    out = _np(sk.nn.StochasticDropout(0.25)(x, random_stream=_stream()), "f")
    kept = out != 0
    np.testing.assert_allclose(out[kept], np.arange(1.0, 2001.0)[kept] / 0.75, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.75, abs=0.04)


def test_missing_random_stream_is_a_clear_error():
    with pytest.raises(ValueError, match="no side input 'random_stream'"):
        sk.nn.StochasticDropout(0.5)(sk.nx.ones({"f": 2}), token_positions=None)


def test_custom_side_input_name():
    layer = sk.nn.StochasticDropout(0.5, random_stream_input_name="rng")
    assert dict(layer(sk.nx.ones({"f": 4}), rng=_stream()).named_shape) == {"f": 4}


def test_each_call_draws_a_new_key_from_the_stream():
    stream = _stream()
    layer = sk.nn.StochasticDropout(0.5)
    x = sk.nx.ones({"f": 64})
    first = _np(layer(x, random_stream=stream), "f")
    second = _np(layer(x, random_stream=stream), "f")
    assert int(stream.offset.value) == 2
    assert not np.array_equal(first, second)


def test_same_base_key_reproduces_the_mask():
    x = sk.nx.ones({"f": 64})
    layer = sk.nn.StochasticDropout(0.5)
    np.testing.assert_array_equal(
        _np(layer(x, random_stream=_stream(3)), "f"), _np(layer(x, random_stream=_stream(3)), "f")
    )


def test_mask_does_not_depend_on_the_memory_layout():
    x = sk.nx.wrap(jnp.arange(48.0).reshape(6, 8), "a", "b")
    layer = sk.nn.StochasticDropout(0.5)
    out_1 = layer(x, random_stream=_stream())
    out_2 = layer(x.order_as("b", "a"), random_stream=_stream())
    np.testing.assert_array_equal(_np(out_1, "a", "b"), _np(out_2, "a", "b"))


def test_shared_axes_drop_whole_slices():
    x = sk.nx.ones({"batch": 16, "seq": 5, "f": 3})
    out = _np(
        sk.nn.StochasticDropout(0.5, share_across_axes=("seq",))(x, random_stream=_stream()),
        "batch",
        "f",
        "seq",
    )
    assert (out == out[..., :1]).all()
    assert 0 < (out == 0).mean() < 1


def test_shared_axis_missing_from_input_is_an_error():
    with pytest.raises(ValueError, match=r"share_across_axes \['seq'\]"):
        sk.nn.StochasticDropout(0.5, share_across_axes=("seq",))(
            sk.nx.ones({"f": 2}), random_stream=_stream()
        )


def test_plain_arrays_and_positional_axes_get_independent_masks():
    out = sk.nn.StochasticDropout(0.5)(jnp.ones((40, 40)), random_stream=_stream())
    assert 0.3 < float((out == 0).mean()) < 0.7
    named = sk.nx.wrap(jnp.ones((40, 40))).tag_prefix("a")
    out = sk.nn.StochasticDropout(0.5)(named, random_stream=_stream())
    assert out.positional_shape == (40,)
    column = np.asarray(out.untag_prefix("a").unwrap())[:, 0]
    assert 0 < (column == 0).mean() < 1


def test_dtype_is_preserved():
    x = sk.nx.ones({"f": 8}, dtype=jnp.bfloat16)
    assert sk.nn.StochasticDropout(0.5)(x, random_stream=_stream()).dtype == jnp.bfloat16


def test_drop_rate_can_be_traced_under_jit():
    layer, values = sk.unbind_state_vars(_stream(), freeze=True)

    @jax.jit
    def run(dropout, values, x):
        stream = sk.bind_variables(layer, values, unfreeze_as_copy=True)
        return dropout(x, random_stream=stream)

    x = sk.nx.ones({"f": 1000})
    low = _np(run(sk.nn.StochasticDropout(0.1), values, x), "f")
    high = _np(run(sk.nn.StochasticDropout(0.9), values, x), "f")
    assert (low == 0).mean() < 0.2 < 0.8 < (high == 0).mean()


def test_disable_and_enable_round_trip():
    layer = sk.nn.StochasticDropout(0.3, share_across_axes=("seq",), random_stream_input_name="r")
    disabled = layer.disable()
    assert isinstance(disabled, sk.nn.DisabledDropout)
    assert isinstance(disabled, sk.nn.Identity)
    assert disabled.enable() == layer
    x = sk.nx.ones({"seq": 2})
    assert disabled(x) is x


def test_disable_every_dropout_with_a_selector():
    model = sk.nn.Sequential([sk.nn.StochasticDropout(0.5), sk.nn.Elementwise(jnp.exp)])
    quiet = sk.select(model).at_instances_of(sk.nn.StochasticDropout).apply(lambda d: d.disable())
    np.testing.assert_allclose(_np(quiet(sk.nx.zeros({"f": 3})), "f"), np.ones(3))


def test_maybe_dropout():
    assert sk.nn.maybe_dropout(None) == sk.nn.DisabledDropout(
        drop_rate=0.0, share_across_axes=(), random_stream_input_name="random_stream"
    )
    assert sk.nn.maybe_dropout(0.2, ("a",), "r") == sk.nn.StochasticDropout(0.2, ("a",), "r")


def test_dropout_renders_with_treescope():
    text = treescope.render_to_text(sk.nn.Sequential([sk.nn.maybe_dropout(0.1)]))
    assert "StochasticDropout" in text
    assert "DisabledDropout" in treescope.render_to_text(sk.nn.maybe_dropout(None))
