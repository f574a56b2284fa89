"""variable_jit: how often it traces, and JAX transformations given bound variables."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.core._variables_jit import VariableInTransformError


def _counting_jit():
    traces = []

    @sk.variable_jit
    def run(model, x):
        traces.append(1)
        return model(x)

    return run, traces


def _saving_model():
    return sk.nn.Sequential(
        [
            sk.nn.Elementwise(jnp.exp),
            _Saver(sk.StateVariable(None, label="saved")),
            sk.nn.Elementwise(jnp.log),
        ]
    )


@sk.pytree_dataclass
class _Saver(sk.nn.Layer):
    saved: sk.StateVariable

    def __call__(self, x, /, **side_inputs):
        self.saved.value = x
        return x


def test_fresh_saver_compiles_once_across_calls():
    run, traces = _counting_jit()
    model = _saving_model()
    for step in range(3):
        run(model, jnp.full((2,), float(step)))
    assert len(traces) == 1
    np.testing.assert_allclose(model.sublayers[1].saved.value, np.exp([2.0, 2.0]), rtol=1e-6)


def test_second_fresh_model_reuses_the_compiled_function():
    run, traces = _counting_jit()
    run(_saving_model(), jnp.zeros(2))
    second = _saving_model()
    run(second, jnp.ones(2))
    assert len(traces) == 1
    np.testing.assert_allclose(second.sublayers[1].saved.value, np.exp([1.0, 1.0]), rtol=1e-6)


def test_state_read_before_assigned_still_sees_its_value():
    @sk.variable_jit
    def count(counter):
        counter.value = 0 if counter.value is None else counter.value + 1
        return counter.value

    counter = sk.StateVariable(None, label="n")
    assert [int(count(counter)) for _ in range(4)] == [0, 1, 2, 3]


def test_left_out_value_is_kept_when_function_does_not_assign_it():
    def maybe_write(state, write):
        if write:
            state.value = jnp.ones(2)
        return 0

    maybe_write = sk.variable_jit(maybe_write, static_argnames=("write",))
    state = sk.StateVariable(None, label="s")
    maybe_write(state, write=True)
    maybe_write(state, write=False)  # learned "overwritten", left out, untouched here
    np.testing.assert_array_equal(state.value, np.ones(2))


def test_swallowed_read_of_left_out_value_does_not_change_the_result():
    @sk.variable_jit
    def sneaky(state, x):
        try:
            seen = state.value
        except Exception:
            seen = None
        state.value = x
        return x if seen is None else seen

    state = sk.StateVariable(None, label="s")
    sneaky(state, jnp.ones(2))
    # The value is an array now; a trace that read it must see it.
    np.testing.assert_array_equal(sneaky(state, jnp.zeros(2)), np.ones(2))


def test_nested_variable_jit_with_fresh_saver():
    inner = sk.variable_jit(lambda model, x: model(x))

    @sk.variable_jit
    def outer(model, x):
        return inner(model, x) + 1

    model = _saving_model()
    outer(model, jnp.zeros(2))
    outer(model, jnp.ones(2))
    np.testing.assert_allclose(model.sublayers[1].saved.value, np.exp([1.0, 1.0]), rtol=1e-6)


def _linear():
    return sk.nn.Linear.from_config(
        name="lin", init_base_rng=jax.random.key(0), input_axes={"a": 3}, output_axes={"b": 2}
    )


def _loss(model, x):
    return model(x).untag("b").sum().unwrap()


@pytest.mark.parametrize("transform", [jax.grad, jax.jit, jax.vmap], ids=["grad", "jit", "vmap"])
def test_bound_parameter_in_transform_says_how_to_unbind(transform):
    with pytest.raises(
        VariableInTransformError, match=r"(?s)Parameter .lin\.weights.*unbind_params"
    ):
        transform(_loss)(_linear(), sk.nx.ones({"a": 3}))


def test_bound_state_variable_in_grad_says_how_to_freeze():
    state = {"s": sk.StateVariable(jnp.ones(()), label="s")}
    with pytest.raises(VariableInTransformError, match=r"(?s)StateVariable .s.*freeze_variables"):
        jax.grad(lambda tree: tree["s"].value)(state)


def test_suggested_recipe_gives_gradients():
    model = _linear()
    unbound, params = sk.unbind_params(model, freeze=True)
    grads = jax.grad(lambda p, x: _loss(sk.bind_variables(unbound, p), x))(
        params, sk.nx.ones({"a": 3})
    )
    np.testing.assert_array_equal(grads[0].value.unwrap("a", "b"), np.ones((3, 2)))
