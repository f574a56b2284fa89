"""Tests for saikei.toolshed.basic_training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from saikei import sk
from saikei.models import simple_mlp
from saikei.toolshed import basic_training


def _xor_data():
    x = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = jnp.array([0.0, 1.0, 1.0, 0.0])
    return sk.nx.wrap(x, "batch", "features"), y


def _mse_loss(model, state, rng, x, y):
    pred = model(x).unwrap("batch", "features")[:, 0]
    loss = jnp.mean((pred - y) ** 2)
    return loss, state, {"loss": loss}


def _mlp(seed=0):
    return simple_mlp.MLP.from_config(
        name="mlp",
        init_base_rng=jax.random.key(seed),
        feature_sizes=[2, 16, 1],
        activation_fn=jnp.tanh,
    )


def test_trainer_learns_xor():
    x, y = _xor_data()
    model = _mlp()
    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(1), model, optax.adam(0.05), _mse_loss
    )
    first = float(trainer.step(x=x, y=y)["loss"])
    for _ in range(300):
        last = float(trainer.step(x=x, y=y)["loss"])
    assert last < 0.01 < first
    np.testing.assert_allclose(model(x).unwrap("batch", "features")[:, 0], y, atol=0.2)


def _freeze_first_layer(model):
    return (
        model.select()
        .at_instances_of(sk.Parameter)
        .where(lambda p: "Affine_0" in p.label)
        .apply(
            lambda p: sk.Parameter(
                value=p.value, label=p.label, metadata={**p.metadata, "trainable": False}
            )
        )
    )


def test_non_trainable_parameters_untouched_and_without_optimizer_state():
    x, y = _xor_data()
    model = _freeze_first_layer(_mlp())
    frozen = [p for p in sk.unbind_params(model)[1] if "Affine_0" in p.label]
    assert len(frozen) == 2
    before = [np.asarray(p.value.data_array) for p in frozen]
    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(1), model, optax.adam(0.05), _mse_loss
    )
    for _ in range(5):
        trainer.step(x=x, y=y)
    for p, b in zip(frozen, before):
        np.testing.assert_array_equal(np.asarray(p.value.data_array), b)
    mu = trainer.state.value.opt_state[0].mu
    assert sorted(mu) == ["mlp/Affine_1/AddBias.bias", "mlp/Affine_1/Linear.weights"]


def test_trainable_parameters_change():
    x, y = _xor_data()
    model = _mlp()
    param = sk.unbind_params(model)[1][0]
    before = np.asarray(param.value.data_array)
    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(1), model, optax.sgd(0.1), _mse_loss
    )
    trainer.step(x=x, y=y)
    assert not np.array_equal(np.asarray(param.value.data_array), before)


def test_sgd_step_matches_manual_gradient():
    w = sk.Parameter(value=jnp.array([1.0, -2.0]), label="w")
    target = jnp.array([0.5, 0.5])

    def loss_fn(model, state, rng, t):
        return jnp.sum((model.value - t) ** 2), state, None

    trainer = basic_training.StatefulTrainer.build(jax.random.key(0), w, optax.sgd(0.25), loss_fn)
    trainer.step(t=target)
    expected = np.array([1.0, -2.0]) - 0.25 * 2 * (np.array([1.0, -2.0]) - 0.5)
    np.testing.assert_allclose(w.value, expected, rtol=1e-6)


@pytest.mark.parametrize("jit", [True, False])
def test_loss_fn_state_rng_and_step_counter(jit):
    w = sk.Parameter(value=jnp.array(1.0), label="w")
    seen = []

    def loss_fn(model, state, rng, scale):
        return model.value * scale, state + 1, rng

    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(3), w, optax.sgd(0.1), loss_fn, initial_loss_fn_state=10, jit=jit
    )
    for _ in range(3):
        seen.append(trainer.step(scale=2.0))
    assert int(trainer.state.value.loss_fn_state) == 13
    assert int(trainer.state.value.step) == 3
    keys = [jax.random.key_data(k) for k in seen]
    assert not np.array_equal(keys[0], keys[1])
    np.testing.assert_array_equal(
        keys[1], jax.random.key_data(jax.random.fold_in(jax.random.key(3), 1))
    )


def test_model_state_variables_are_updated():
    w = sk.Parameter(value=jnp.array(1.0), label="w")
    calls = sk.StateVariable(jnp.array(0), label="calls")
    model = {"w": w, "calls": calls}

    def loss_fn(model, state, rng):
        model["calls"].value = model["calls"].value + 1
        return model["w"].value ** 2, state, None

    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(0), model, optax.sgd(0.1), loss_fn, donate_states=True
    )
    trainer.step()
    trainer.step()
    assert int(calls.value) == 2


def test_build_rejects_model_without_trainable_parameters():
    w = sk.Parameter(value=jnp.array(1.0), label="w", metadata={"trainable": False})
    with pytest.raises(ValueError, match="no trainable"):
        basic_training.StatefulTrainer.build(
            jax.random.key(0), w, optax.sgd(0.1), lambda model, state, rng: (0.0, state, None)
        )


def test_build_rejects_slots():
    model = {"w": sk.Parameter(value=1.0, label="w"), "s": sk.ParameterSlot("v")}
    with pytest.raises(ValueError, match="slot"):
        basic_training.StatefulTrainer.build(
            jax.random.key(0), model, optax.sgd(0.1), lambda model, state, rng: (0.0, state, None)
        )
