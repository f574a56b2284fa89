"""gradient_checkpointing.Checkpointed: same values and gradients, state threaded."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.models import simple_mlp
from saikei.toolshed.gradient_checkpointing import Checkpointed


@sk.pytree_dataclass
class AssignsParam(sk.nn.Layer):
    w: Any

    def __call__(self, x, /, **side_inputs):
        self.w.value = self.w.value + 1
        return x


def _mlp():
    return simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[3, 5, 2]
    )


def _x():
    return sk.nx.wrap(jax.random.normal(jax.random.key(1), (4, 3))).tag("batch", "features")


def _loss_and_grads(model, x):
    def loss(params):
        bound = sk.bind_variables(unbound, [p.unfreeze_as_copy() for p in params])
        return jnp.sum(bound(x).unwrap("batch", "features") ** 2)

    unbound, params = sk.unbind_params(model, freeze=True)
    return jax.value_and_grad(loss)(params)


def test_values_and_gradients_match_the_body():
    model = _mlp()
    remat = sk.select(model).at_instances_of(sk.nn.Affine).apply(Checkpointed)
    assert sk.select(remat).at_instances_of(Checkpointed).count() == 2
    want_loss, want_grads = _loss_and_grads(model, _x())
    got_loss, got_grads = _loss_and_grads(remat, _x())
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(got_grads), jax.tree_util.tree_leaves(want_grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_random_stream_offset_advances_like_the_body():
    x = jnp.ones(64)
    plain_stream = sk.RandomStream.from_base_key(jax.random.key(3))
    remat_stream = sk.RandomStream.from_base_key(jax.random.key(3))
    dropout = sk.nn.StochasticDropout(drop_rate=0.5)
    layer = Checkpointed(dropout)
    for _ in range(2):
        want = dropout(x, random_stream=plain_stream)
        got = layer(x, random_stream=remat_stream)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int(remat_stream.offset.value) == int(plain_stream.offset.value) == 2


def test_state_threads_through_jit_and_grad():
    stream = sk.RandomStream.from_base_key(jax.random.key(3))
    layer = Checkpointed(sk.nn.StochasticDropout(drop_rate=0.5))

    @sk.variable_jit
    def grad_of_sum(layer, x, stream):
        return jax.grad(lambda x: jnp.sum(layer(x, random_stream=stream)))(x)

    g1 = grad_of_sum(layer, jnp.ones(64), stream)
    g2 = grad_of_sum(layer, jnp.ones(64), stream)
    assert int(stream.offset.value) == 2
    assert set(np.unique(np.asarray(g1)).tolist()) <= {0.0, 2.0}
    assert not np.array_equal(np.asarray(g1), np.asarray(g2))


def test_policy_is_passed_and_static():
    layer = Checkpointed(sk.nn.Elementwise(jnp.sin), policy=jax.checkpoint_policies.dots_saveable)
    assert jax.tree_util.tree_leaves(layer) == []
    np.testing.assert_allclose(float(jax.grad(lambda x: layer(x))(0.5)), np.cos(0.5), rtol=1e-6)


def test_assigning_a_parameter_is_an_error():
    layer = Checkpointed(AssignsParam(sk.Parameter(label="w", value=jnp.zeros(()))))
    with pytest.raises(ValueError, match="Parameter 'w'"):
        layer(jnp.ones(2))
