"""save_intermediates: savers record exactly what a manual forward pass computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.toolshed import save_intermediates as si
from saikei.toolshed.jit_wrapper import Jitted


def _model():
    up = sk.nn.Linear.from_config(
        name="up", init_base_rng=jax.random.key(1), input_axes={"x": 3}, output_axes={"h": 4}
    )
    down = sk.nn.Linear.from_config(
        name="down", init_base_rng=jax.random.key(2), input_axes={"h": 4}, output_axes={"x": 3}
    )
    return (
        sk.nn.Sequential(
            [
                sk.nn.Residual(sk.nn.Sequential([up, sk.nn.Elementwise(jnp.tanh), down])),
                sk.nn.Elementwise(jax.nn.relu),
            ]
        ),
        up,
        down,
    )


def _savers(model):
    return sk.select(model).at_instances_of(si.SaveIntermediate).get_sequence()


def _manual(x, w_up, w_down):
    h = x @ w_up
    t = np.tanh(h)
    d = t @ w_down
    r = x + d
    # Order in which savers run: outer start, inner start, after up, after tanh,
    # after down (inner end), after residual, after relu.
    return [x, x, h, t, d, r, np.maximum(r, 0)]


def test_saved_values_equal_manual_forward_pass():
    model, up, down = _model()
    x = np.asarray(jax.random.normal(jax.random.key(3), (3,)), dtype=np.float32)
    saving = si.saving_all_intermediates(model)
    saving(sk.nx.wrap(jnp.asarray(x)).tag("x"))
    expected = _manual(
        x,
        np.asarray(up.weights.value.unwrap("x", "h")),
        np.asarray(down.weights.value.unwrap("h", "x")),
    )
    savers = _savers(saving)
    assert len(savers) == len(expected)
    for saver, want in zip(savers, expected):
        got = saver.saved.value
        got = (
            np.asarray(got.unwrap(*got.named_shape.keys())) if hasattr(got, "named_shape") else got
        )
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_labels_are_deterministic_and_ordered():
    model, _, _ = _model()
    first = [s.saved.label for s in _savers(si.saving_all_intermediates(model, group="g"))]
    second = [s.saved.label for s in _savers(si.saving_all_intermediates(model, group="g"))]
    assert first == second
    assert first == [sk.ScopedStateVarLabel(group="g", index=i) for i in range(7)]


def test_input_model_is_not_modified():
    model, _, _ = _model()
    si.saving_all_intermediates(model)
    assert _savers(model) == ()


def test_shapes_only_records_array_specs():
    model, _, _ = _model()
    saving = si.saving_all_intermediates(model, shapes_only=True)
    saving(sk.nx.ones({"x": 3, "batch": 2}))
    savers = sk.select(saving).at_instances_of(si.SaveIntermediateShape).get_sequence()
    specs = [s.saved.value for s in savers]
    assert all(isinstance(spec, sk.chk.ArraySpec) for spec in specs)
    assert dict(specs[2].named_shape) == {"batch": 2, "h": 4}
    assert dict(specs[0].named_shape) == {"x": 3, "batch": 2}


def test_savers_work_under_jit():
    model, _, _ = _model()
    x = sk.nx.ones({"x": 3})
    eager = si.saving_all_intermediates(model)
    eager(x)
    jitted = si.saving_all_intermediates(model)
    Jitted(jitted)(x)
    for a, b in zip(_savers(eager), _savers(jitted)):
        np.testing.assert_allclose(
            np.asarray(a.saved.value.data_array), np.asarray(b.saved.value.data_array), rtol=1e-6
        )


def test_same_group_twice_is_an_error():
    model, _, _ = _model()
    once = si.saving_all_intermediates(model, group="g")
    with pytest.raises(ValueError, match="clash"):
        si.saving_all_intermediates(once, group="g")
    twice = si.saving_all_intermediates(once, group="other")
    assert len(sk.select(twice).at_instances_of(si.SaveIntermediate).get_sequence()) > 7
