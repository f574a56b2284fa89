"""LoRA adapters: unchanged outputs at init, training touches only adapter weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.models import simple_mlp
from saikei.toolshed import lora


def _mlp():
    return simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[3, 5, 2]
    )


def _stacked_model():
    def block(init_base_rng):
        return sk.nn.Residual(
            sk.nn.Sequential(
                [
                    sk.nn.Linear.from_config(
                        name="block/up",
                        init_base_rng=init_base_rng,
                        input_axes={"features": 4},
                        output_axes={"hidden": 6},
                    ),
                    sk.nn.Elementwise(jnp.tanh),
                    sk.nn.Linear.from_config(
                        name="block/down",
                        init_base_rng=init_base_rng,
                        input_axes={"hidden": 6},
                        output_axes={"features": 4},
                    ),
                ]
            )
        )

    return sk.nn.LayerStack.from_sublayer_builder(block, "layers", 3, jax.random.key(0), {})


def _out(named, *names):
    return np.asarray(named.unwrap(*names))


def _x(shape, seed=1):
    names = tuple(shape)
    data = jax.random.normal(jax.random.key(seed), tuple(shape.values()))
    return sk.nx.wrap(data, *names)


def _all_params(model):
    return {p.label: np.asarray(p.value.data_array) for p in sk.unbind_params(model)[1]}


def _train(model, x, target, names, steps=5, lr=0.1):
    slots, lora_params = sk.unbind_params(model, predicate=lora.is_lora_parameter, freeze=True)

    def loss(values):
        out = sk.bind_variables(slots, values)(x)
        return jnp.mean((out.unwrap(*names) - target) ** 2)

    values = list(lora_params)
    losses = []
    for _ in range(steps):
        value, grads = jax.value_and_grad(loss)(values)
        losses.append(float(value))
        values = jax.tree_util.tree_map(lambda p, g: p - lr * g, values, grads)
    trained = [
        sk.Parameter(label=v.label, value=v.value, metadata=dict(v.metadata)) for v in values
    ]
    return sk.bind_variables(slots, trained), losses


def test_from_linear_output_unchanged_at_init():
    linear = sk.nn.Linear.from_config(
        name="p",
        init_base_rng=jax.random.key(0),
        input_axes={"a": 3},
        output_axes={"b": 4},
        parallel_axes={"heads": 2},
    )
    adapted = lora.LowRankAdapter.from_linear(linear, "p", jax.random.key(1), rank=2)
    x = _x({"batch": 5, "heads": 2, "a": 3})
    np.testing.assert_array_equal(
        _out(adapted(x), "batch", "heads", "b"), _out(linear(x), "batch", "heads", "b")
    )


def test_from_linear_weight_shapes_labels_and_metadata():
    linear = sk.nn.Linear.from_config(
        name="p",
        init_base_rng=jax.random.key(0),
        input_axes={"a": 3},
        output_axes={"b": 4},
        parallel_axes={"heads": 2},
    )
    adapted = lora.LowRankAdapter.from_linear(
        linear, "x", jax.random.key(1), rank=2, lowrank_axis="r"
    )
    a, b = adapted.input_to_bottleneck.weights, adapted.bottleneck_to_output.weights
    assert (a.label, b.label) == ("x/LoRA_A.weights", "x/LoRA_B.weights")
    assert set(a.value.named_shape.items()) == {("a", 3), ("r", 2), ("heads", 2)}
    assert set(b.value.named_shape.items()) == {("r", 2), ("b", 4), ("heads", 2)}
    assert np.all(np.asarray(b.value.data_array) == 0)
    assert np.any(np.asarray(a.value.data_array) != 0)
    assert lora.is_lora_parameter(a) and lora.is_lora_parameter(b)
    assert not lora.is_lora_parameter(linear.weights)


def test_adapter_computes_linear_plus_low_rank_product():
    linear = sk.nn.Linear.from_config(
        name="p", init_base_rng=jax.random.key(0), input_axes={"a": 3}, output_axes={"b": 4}
    )
    adapted = lora.LowRankAdapter.from_linear(linear, "p", jax.random.key(1), rank=2)
    w_b = np.asarray(jax.random.normal(jax.random.key(5), (2, 4)))
    adapted.bottleneck_to_output.weights.value = sk.nx.wrap(jnp.asarray(w_b), "lowrank", "b")
    x = _x({"batch": 5, "a": 3})
    w = np.asarray(linear.weights.value.unwrap("a", "b"))
    w_a = np.asarray(adapted.input_to_bottleneck.weights.value.unwrap("a", "lowrank"))
    xs = _out(x, "batch", "a")
    expected = xs @ w + xs @ w_a @ w_b
    np.testing.assert_allclose(_out(adapted(x), "batch", "b"), expected, rtol=1e-5, atol=1e-5)


def test_loraify_mlp_unchanged_at_init_and_names_from_keypaths():
    model = _mlp()
    adapted = lora.loraify_linears_in_selection(
        sk.select(model).at_instances_of(sk.nn.Linear), rank=2, init_base_rng=jax.random.key(7)
    )
    assert sk.select(adapted).at_instances_of(lora.LowRankAdapter).count() == 2
    labels = [p.label for p in sk.unbind_params(adapted, predicate=lora.is_lora_parameter)[1]]
    assert len(labels) == len(set(labels)) == 4
    x = _x({"batch": 4, "features": 3})
    np.testing.assert_array_equal(
        _out(adapted(x), "batch", "features"), _out(model(x), "batch", "features")
    )


def test_training_mlp_changes_only_lora_params():
    model = _mlp()
    adapted = lora.loraify_linears_in_selection(
        sk.select(model).at_instances_of(sk.nn.Linear), rank=2, init_base_rng=jax.random.key(7)
    )
    before = _all_params(adapted)
    x = _x({"batch": 8, "features": 3})
    target = jnp.ones((8, 2))
    trained, losses = _train(adapted, x, target, ("batch", "features"))
    assert losses[-1] < losses[0]
    after = _all_params(trained)
    assert before.keys() == after.keys()
    changed = {label for label in before if not np.array_equal(before[label], after[label])}
    lora_labels = {label for label in before if "LoRA" in label}
    # B starts at zero, so A's first gradient is zero; after a few steps both move.
    assert changed == lora_labels
    assert len(lora_labels) == 4


def test_layerstack_adapters_are_per_layer_and_unchanged_at_init():
    model = _stacked_model()
    adapted = lora.loraify_linears_in_selection(
        sk.select(model).at_instances_of(sk.nn.Linear), rank=2, init_base_rng=jax.random.key(3)
    )
    params = {p.label: p for p in sk.unbind_params(adapted, predicate=lora.is_lora_parameter)[1]}
    assert len(params) == 4
    for param in params.values():
        assert param.value.named_shape["layers"] == 3
    x = _x({"batch": 2, "features": 4})
    # B is zero, so only XLA's fusion of the scanned step may move the last bit.
    np.testing.assert_allclose(
        _out(adapted(x), "batch", "features"), _out(model(x), "batch", "features"), rtol=1e-6
    )


def test_layerstack_training_changes_only_lora_params_and_matches_unrolled_oracle():
    model = _stacked_model()
    adapted = lora.loraify_linears_in_selection(
        sk.select(model).at_instances_of(sk.nn.Linear), rank=2, init_base_rng=jax.random.key(3)
    )
    before = _all_params(adapted)
    x = _x({"batch": 6, "features": 4})
    target = jnp.zeros((6, 4))
    trained, losses = _train(adapted, x, target, ("batch", "features"), steps=4)
    assert losses[-1] < losses[0]
    after = _all_params(trained)
    changed = {label for label in before if not np.array_equal(before[label], after[label])}
    assert changed == {label for label in before if "LoRA" in label}
    # Independent numpy oracle: run the three layers one by one with the
    # trained per-layer weights.
    up, _, down = trained.stacked_sublayers.delta.sublayers
    h = _out(x, "batch", "features")

    def weights(linear, *names):
        return np.asarray(linear.weights.value.unwrap("layers", *names))

    for i in range(3):
        w_up = weights(up.original_linear, "features", "hidden")[i]
        w_upa = weights(up.input_to_bottleneck, "features", "lowrank")[i]
        w_upb = weights(up.bottleneck_to_output, "lowrank", "hidden")[i]
        w_dn = weights(down.original_linear, "hidden", "features")[i]
        w_dna = weights(down.input_to_bottleneck, "hidden", "lowrank")[i]
        w_dnb = weights(down.bottleneck_to_output, "lowrank", "features")[i]
        hidden = np.tanh(h @ w_up + h @ w_upa @ w_upb)
        h = h + hidden @ w_dn + hidden @ w_dna @ w_dnb
    np.testing.assert_allclose(_out(trained(x), "batch", "features"), h, rtol=1e-4, atol=1e-5)


def test_loraify_adapts_only_the_linears_inside_a_wider_selection():
    model = _mlp()
    every_layer = sk.select(model).at_instances_of(sk.nn.Layer)
    adapted = lora.loraify_linears_in_selection(
        every_layer, rank=2, init_base_rng=jax.random.key(3)
    )
    only_linears = lora.loraify_linears_in_selection(
        sk.select(model).at_instances_of(sk.nn.Linear), rank=2, init_base_rng=jax.random.key(3)
    )
    unbound, params = sk.unbind_params(adapted)
    unbound_linears, params_linears = sk.unbind_params(only_linears)
    assert unbound == unbound_linears
    assert [p.label for p in params] == [p.label for p in params_linears]
    assert sk.select(adapted).at_instances_of(lora.LowRankAdapter).count() == 2
    # Non-Linear layers (biases, activations) are kept.
    assert (
        sk.select(adapted).at_instances_of(sk.nn.AddBias).count()
        == sk.select(model).at_instances_of(sk.nn.AddBias).count()
    )


def test_adapter_structure_groups_the_pretrained_and_update_paths():
    linear = sk.nn.Linear.from_config("p", jax.random.key(0), {"a": 4}, {"b": 3})
    adapted = lora.LowRankAdapter.from_linear(linear, "p", jax.random.key(1), rank=2)
    assert isinstance(adapted, sk.nn.Sequential)
    [branch] = adapted.sublayers
    assert isinstance(branch, sk.nn.BranchAndAddTogether)
    pretrained, update = branch.branches
    assert (pretrained.name, update.name) == ("Pretrained", "Update")
    assert pretrained.sublayers == [linear]
    assert [layer.weights.label for layer in update.sublayers] == [
        "p/LoRA_A.weights",
        "p/LoRA_B.weights",
    ]


def test_adapter_labels_and_structure_match_penzai():
    pz = pytest.importorskip("penzai.pz")
    penzai_lora = pytest.importorskip("penzai.toolshed.lora")
    key = jax.random.key(0)
    ours = sk.nn.Sequential([sk.nn.Linear.from_config("p", key, {"a": 4}, {"b": 3})])
    theirs = pz.nn.Sequential([pz.nn.Linear.from_config("p", key, {"a": 4}, {"b": 3})])
    ours = lora.loraify_linears_in_selection(sk.select(ours).at_instances_of(sk.nn.Linear), 2, key)
    theirs = penzai_lora.loraify_linears_in_selection(
        pz.select(theirs).at_instances_of(pz.nn.Linear), 2, key
    )
    our_params = {p.label: p.value for p in sk.unbind_params(ours)[1]}
    their_params = {p.label: p.value for p in pz.unbind_params(theirs)[1]}
    assert sorted(our_params) == sorted(their_params)
    [adapter] = ours.sublayers
    [their_adapter] = theirs.sublayers
    assert [g.name for g in adapter.sublayers[0].branches] == [
        g.name for g in their_adapter.sublayers[0].branches
    ]


def test_from_linear_rejects_bad_rank_and_clashing_axis():
    linear = sk.nn.Linear.from_config(
        name="p", init_base_rng=jax.random.key(0), input_axes={"a": 3}, output_axes={"b": 4}
    )
    with pytest.raises(ValueError, match="rank must be a positive int"):
        lora.LowRankAdapter.from_linear(linear, "p", jax.random.key(1), rank=0)
    with pytest.raises(ValueError, match="lowrank_axis 'a'"):
        lora.LowRankAdapter.from_linear(linear, "p", jax.random.key(1), rank=2, lowrank_axis="a")


def test_from_linear_without_key_leaves_slots():
    linear = sk.nn.Linear.from_config(
        name="p", init_base_rng=jax.random.key(0), input_axes={"a": 3}, output_axes={"b": 4}
    )
    adapted = lora.LowRankAdapter.from_linear(linear, "p", None, rank=2)
    assert adapted.input_to_bottleneck.weights == sk.ParameterSlot("p/LoRA_A.weights")
