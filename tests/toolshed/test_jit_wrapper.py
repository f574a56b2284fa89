"""jit_wrapper.Jitted: same results as the body, state written back, structure kept."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei import sk
from saikei.models import simple_mlp
from saikei.toolshed.jit_wrapper import Jitted


@sk.pytree_dataclass
class CountTraces(sk.nn.Layer):
    body: Any
    calls: sk.StateVariable
    traces: Any = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, x, /, **side_inputs):
        self.traces.count += 1
        self.calls.value = self.calls.value + 1
        return self.body(x, **side_inputs)


class _Counter:
    count = 0


def _mlp():
    return simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[3, 5, 2]
    )


def test_body_is_preserved_and_inspectable():
    model = _mlp()
    jitted = Jitted(model)
    assert jitted.body is model
    assert (
        sk.select(jitted).at_instances_of(sk.Parameter).count()
        == sk.select(model).at_instances_of(sk.Parameter).count()
    )


def test_outputs_match_the_body():
    model = _mlp()
    x = sk.nx.wrap(jax.random.normal(jax.random.key(1), (4, 3))).tag("batch", "features")
    want = model(x)
    got = Jitted(model)(x)
    np.testing.assert_allclose(
        np.asarray(got.unwrap("batch", "features")),
        np.asarray(want.unwrap("batch", "features")),
        rtol=1e-6,
        atol=1e-6,
    )


def test_state_is_written_back_and_compiled_once():
    traces = _Counter()
    counted = CountTraces(
        sk.nn.Elementwise(jnp.sin), sk.StateVariable(jnp.array(0), label="n"), traces
    )
    layer = Jitted(counted)
    for _ in range(3):
        layer(jnp.ones(2))
    assert int(layer.body.calls.value) == 3
    assert traces.count == 1


def test_side_inputs_reach_the_body():
    layer = Jitted(sk.nn.StochasticDropout(drop_rate=0.5))
    stream = sk.RandomStream.from_base_key(jax.random.key(0))
    out = layer(jnp.ones(1000), random_stream=stream)
    assert int(stream.offset.value) == 1
    assert set(np.unique(np.asarray(out)).tolist()) == {0.0, 2.0}


def test_edited_body_recompiles():
    layer = Jitted(sk.nn.Elementwise(jnp.sin))
    edited = (
        sk.select(layer)
        .at_instances_of(sk.nn.Elementwise)
        .apply(lambda _: sk.nn.Elementwise(jnp.cos))
    )
    np.testing.assert_allclose(np.asarray(edited(jnp.zeros(2))), [1.0, 1.0])
    np.testing.assert_allclose(np.asarray(layer(jnp.zeros(2))), [0.0, 0.0])
