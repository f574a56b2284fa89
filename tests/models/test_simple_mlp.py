"""Tests for saikei.models.simple_mlp, including the acceptance program of issue 3."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import treescope

from saikei import sk
from saikei.models import simple_mlp

# The acceptance program of issue 3, verbatim.
ACCEPTANCE_PROGRAM = """
import jax
from typing import Any
from saikei import sk
from saikei.models import simple_mlp

mlp = simple_mlp.MLP.from_config(name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[8, 32, 32, 8])

@sk.pytree_dataclass
class AppendIntermediate(sk.nn.Layer):
  saved: sk.StateVariable[list[Any]]
  def __call__(self, x: Any, **unused_side_inputs) -> Any:
    self.saved.value = self.saved.value + [x]
    return x

var = sk.StateVariable(value=[], label="my_intermediates")
saving_model = (
    sk.select(mlp).at_instances_of(sk.nn.Elementwise).insert_after(AppendIntermediate(var))
)
output = saving_model(sk.nx.ones({"features": 8}))
intermediates = var.value
"""


def test_acceptance_program_saves_one_intermediate_per_activation():
    namespace: dict[str, Any] = {"__name__": "acceptance_program"}
    exec(compile(ACCEPTANCE_PROGRAM, "acceptance_program", "exec"), namespace)
    output, intermediates = namespace["output"], namespace["intermediates"]

    assert dict(output.named_shape) == {"features": 8}
    assert len(intermediates) == 2
    assert [dict(x.named_shape) for x in intermediates] == [{"features": 32}, {"features": 32}]
    assert all(float(x.data_array.min()) >= 0 for x in intermediates)  # after relu
    # The saved values are what the activations produced.
    mlp = namespace["mlp"]
    hidden = mlp.sublayers[1](mlp.sublayers[0](sk.nx.ones({"features": 8})))
    np.testing.assert_array_equal(intermediates[0].unwrap("features"), hidden.unwrap("features"))


def _weights(mlp):
    affines = [layer for layer in mlp.sublayers if isinstance(layer, sk.nn.Affine)]
    result = []
    for affine in affines:
        linear, bias = affine.sublayers[0], affine.sublayers[-1]
        w = np.asarray(linear.weights.value.unwrap("features", "features_out"))
        result.append((w, np.asarray(bias.bias.value.unwrap("features"))))
    return result


def test_structure_and_labels_match_penzai_conventions():
    mlp = simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[8, 32, 32, 8]
    )
    assert [type(layer).__name__ for layer in mlp.sublayers] == [
        "Affine",
        "Elementwise",
        "Affine",
        "Elementwise",
        "Affine",
    ]
    assert [type(layer).__name__ for layer in mlp.sublayers[0].sublayers] == [
        "Linear",
        "RenameAxes",
        "AddBias",
    ]
    assert [p.label for p in sk.unbind_params(mlp)[1]] == [
        f"mlp/Affine_{i}/{part}" for i in range(3) for part in ("Linear.weights", "AddBias.bias")
    ]
    assert mlp.sublayers[1].fn is jax.nn.relu


def test_mlp_matches_plain_jax_numpy():
    mlp = simple_mlp.MLP.from_config(
        name="mlp",
        init_base_rng=jax.random.key(0),
        feature_sizes=[3, 5, 4, 2],
        activation_fn=jax.nn.gelu,
        feature_axis="hidden",
    )
    # Non-zero biases so the test sees them.
    mlp = (
        sk.select(mlp)
        .at_instances_of(sk.nn.AddBias)
        .apply(lambda b: sk.nn.AddBias(sk.Parameter(label=b.bias.label, value=b.bias.value + 0.1)))
    )
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    out = mlp(sk.nx.wrap(x, "batch", "hidden")).unwrap("batch", "hidden")

    params = []
    for affine in mlp.sublayers[::2]:
        linear, bias = affine.sublayers[0], affine.sublayers[-1]
        params.append(
            (linear.weights.value.unwrap("hidden", "hidden_out"), bias.bias.value.unwrap("hidden"))
        )
    h = jnp.asarray(x)
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jax.nn.gelu(h)
    np.testing.assert_allclose(np.asarray(out), np.asarray(h), rtol=1e-5, atol=1e-6)


def test_unbound_mlp_equals_the_unbound_initialized_mlp():
    sizes = [4, 6, 2]
    initialized = simple_mlp.MLP.from_config(
        name="m", init_base_rng=jax.random.key(1), feature_sizes=sizes
    )
    slots = simple_mlp.MLP.from_config(name="m", init_base_rng=None, feature_sizes=sizes)
    unbound, params = sk.unbind_params(initialized)
    assert unbound == slots
    rebuilt = slots.bind_variables(params)
    x = sk.nx.ones({"features": 4})
    np.testing.assert_array_equal(rebuilt(x).unwrap("features"), initialized(x).unwrap("features"))


def test_initialization_is_reproducible_and_name_dependent():
    def build(name, seed=0):
        return simple_mlp.MLP.from_config(
            name=name, init_base_rng=jax.random.key(seed), feature_sizes=[4, 4]
        )

    w = _weights(build("a"))[0][0]
    np.testing.assert_array_equal(w, _weights(build("a"))[0][0])
    assert not np.allclose(w, _weights(build("b"))[0][0])
    assert not np.allclose(w, _weights(build("a", seed=1))[0][0])


def test_one_training_step_changes_the_weights():
    mlp = simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[3, 8, 2]
    )
    model, params = sk.unbind_params(mlp, freeze=True)
    x = sk.nx.wrap(jnp.ones((4, 3)), "batch", "features")
    target = sk.nx.wrap(jnp.ones((4, 2)), "batch", "features")

    def loss(params):
        out = model.bind_variables(params)(x)
        return jnp.mean(((out - target) ** 2).data_array)

    before = loss(params)
    grads = jax.jit(jax.grad(loss))(params)
    new_params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    assert [p.label for p in new_params] == [p.label for p in params]
    for old, new in zip(params, new_params):
        assert not np.allclose(old.value.data_array, new.value.data_array)
    assert float(loss(new_params)) < float(before)


def test_mlp_renders_with_treescope():
    mlp = simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[2, 2]
    )
    text = treescope.render_to_text(mlp)
    assert "MLP" in text and "mlp/Affine_0/Linear.weights" in text


def test_dropout_mlp_structure_and_call():
    mlp = simple_mlp.DropoutMLP.from_config(
        name="dmlp", init_base_rng=jax.random.key(0), feature_sizes=[8, 32, 32, 8], drop_rate=0.1
    )
    assert [type(layer).__name__ for layer in mlp.sublayers] == [
        "Affine",
        "StochasticDropout",
        "Elementwise",
        "Affine",
        "StochasticDropout",
        "Elementwise",
        "Affine",
    ]
    assert mlp.sublayers[1].drop_rate == 0.1
    assert sk.unbind_params(mlp)[1][0].label == "dmlp/Affine_0/Linear.weights"
    stream = sk.RandomStream.from_base_key(jax.random.key(0))
    out = mlp(sk.nx.ones({"features": 8}), random_stream=stream)
    assert dict(out.named_shape) == {"features": 8}
    assert int(stream.offset.value) == 2
    assert "DropoutMLP" in treescope.render_to_text(mlp)


@pytest.mark.parametrize("sizes", [[], [8], [8, 0], [8, 2.5]])
def test_bad_feature_sizes_are_rejected(sizes):
    with pytest.raises(ValueError, match="feature_sizes"):
        simple_mlp.MLP.from_config(name="m", init_base_rng=None, feature_sizes=sizes)
