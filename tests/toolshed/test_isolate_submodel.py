"""isolate_submodel: each recorded call replays bit for bit, state included."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.toolshed.isolate_submodel import IsolatedSubmodel, call_and_extract_submodel
from saikei.toolshed.jit_wrapper import Jitted


@sk.pytree_dataclass
class Counted(sk.nn.Layer):
    body: Any
    calls: sk.StateVariable

    def __call__(self, x, /, **side_inputs):
        self.calls.value = self.calls.value + 1
        return self.body(x, **side_inputs) * self.calls.value


@sk.pytree_dataclass
class Twice(sk.nn.Layer):
    body: Any

    def __call__(self, x, /, **side_inputs):
        return self.body(self.body(x, **side_inputs), **side_inputs)


def _shared_linear():
    return sk.nn.Linear.from_config(
        name="shared", init_base_rng=jax.random.key(0), input_axes={"x": 4}, output_axes={"x": 4}
    )


def _model():
    shared = _shared_linear()
    target = sk.nn.Sequential(
        [
            shared,
            sk.nn.StochasticDropout(drop_rate=0.5),
            Counted(shared, sk.StateVariable(0, label="n")),
        ]
    )
    return sk.nn.Sequential([shared, sk.nn.Elementwise(jnp.tanh), Twice(target)]), target


def _replay(iso: IsolatedSubmodel):
    return iso.submodel.stateless_call(
        iso.initial_var_values, iso.saved_arg, **iso.saved_side_inputs
    )


def _assert_bitwise_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _run():
    model, _ = _model()
    stream = sk.RandomStream.from_base_key(jax.random.key(7), "dropout")
    x = sk.nx.wrap(jax.random.normal(jax.random.key(1), (4,))).tag("x")
    selection = sk.select(model).at(lambda m: m.sublayers[2].body)
    return call_and_extract_submodel(selection, x, random_stream=stream), model, stream


def test_every_call_is_recorded_in_order():
    records, _, _ = _run()
    assert len(records) == 2
    _assert_bitwise_equal(records[0].saved_output, records[1].saved_arg)
    _assert_bitwise_equal(records[0].final_var_values, records[1].initial_var_values)


def test_replay_is_bit_for_bit_including_state():
    records, _, _ = _run()
    for iso in records:
        output, final = _replay(iso)
        _assert_bitwise_equal(output, iso.saved_output)
        _assert_bitwise_equal(final, iso.final_var_values)
        assert [v.label for v in final] == [v.label for v in iso.final_var_values]


def test_state_values_capture_random_stream_and_counter():
    records, _, stream = _run()
    values = {v.label: int(v.value) for v in records[1].final_var_values}
    assert values == {"dropout": 2, "n": 2}
    # The model really ran: its variables advanced.
    assert int(stream.offset.value) == 2


def test_parameters_are_frozen_and_state_unbound():
    records, _, _ = _run()
    sub = records[0].submodel
    _, variables = sk.unbind_variables(sub)
    assert variables == ()
    params = sk.select(sub).at_instances_of(sk.ParameterValue).get_sequence()
    assert len(params) == 2 and {p.label for p in params} == {"shared.weights"}
    assert len(sk.select(sub).at_instances_of(sk.StateVariableSlot).get_sequence()) == 1
    assert isinstance(records[0].saved_side_inputs["random_stream"].offset, sk.StateVariableSlot)


def test_replay_from_other_state_differs():
    records, _, _ = _run()
    iso = records[0]
    output, _ = iso.submodel.stateless_call(
        records[1].initial_var_values, iso.saved_arg, **iso.saved_side_inputs
    )
    assert not np.array_equal(
        np.asarray(output.data_array), np.asarray(iso.saved_output.data_array)
    )


def test_selection_of_several_layers_is_an_error():
    model, _ = _model()
    with pytest.raises(ValueError, match="exactly one"):
        call_and_extract_submodel(
            sk.select(model).at_instances_of(sk.nn.Linear), sk.nx.ones({"x": 4})
        )


def test_selection_of_a_non_layer_is_an_error():
    model, _ = _model()
    sel = sk.select(model).at_instances_of(sk.Parameter).pick_nth_selected(0)
    with pytest.raises(ValueError, match=r"not an sk\.nn\.Layer"):
        call_and_extract_submodel(sel, sk.nx.ones({"x": 4}))


def test_layer_under_jit_is_an_error():
    inner = sk.nn.Elementwise(jnp.tanh)
    model = sk.nn.Sequential([Jitted(sk.nn.Sequential([inner]))])
    sel = sk.select(model).at_instances_of(sk.nn.Elementwise)
    with pytest.raises(ValueError, match="traced"):
        call_and_extract_submodel(sel, jnp.ones(2))


def test_a_single_call_returns_the_record_itself():
    model = sk.nn.Sequential([sk.nn.Elementwise(jnp.exp), sk.nn.Elementwise(jnp.sin)])
    iso = call_and_extract_submodel(sk.select(model).at(lambda m: m.sublayers[1]), jnp.zeros(2))
    assert isinstance(iso, IsolatedSubmodel)
    np.testing.assert_allclose(np.asarray(iso.saved_output), np.sin(np.ones(2)), rtol=1e-6)


def test_a_layer_never_called_gives_an_empty_list():
    @sk.pytree_dataclass
    class Skip(sk.nn.Layer):
        unused: sk.nn.Layer

        def __call__(self, x, /, **side_inputs):
            return x

    model = Skip(sk.nn.Elementwise(jnp.exp))
    assert call_and_extract_submodel(sk.select(model).at(lambda m: m.unused), jnp.zeros(2)) == []
