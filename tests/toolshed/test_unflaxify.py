"""Tests for saikei.toolshed.unflaxify on small flax.linen models."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.toolshed import unflaxify

AK = unflaxify.ArgsAndKwargs


class _Block(fnn.Module):
    @fnn.compact
    def __call__(self, x, train: bool):
        x = fnn.Dense(6)(x)
        x = fnn.BatchNorm(use_running_average=not train)(x)
        x = fnn.relu(x)
        return fnn.Dropout(0.3, deterministic=not train)(x)


class _Net(fnn.Module):
    @fnn.compact
    def __call__(self, x, train: bool = True):
        x = _Block()(x, train)
        return fnn.Dense(2)(x)


def _setup():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
    variables = _Net().init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    return x, variables


def test_outputs_and_batch_stats_match_flax_with_dropout():
    x, variables = _setup()
    rngs = {"dropout": jax.random.key(7)}
    expected, expected_state = _Net().apply(
        variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
    )
    layer = unflaxify.unflaxify_apply(
        _Net(), variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
    )
    got = layer(AK.capture(x, train=True), rngs=rngs)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    stats = layer.submodule_calls["_Block_0"].submodule_calls["BatchNorm_0"].variables
    np.testing.assert_array_equal(
        np.asarray(stats["batch_stats"]["mean"].value),
        np.asarray(expected_state["batch_stats"]["_Block_0"]["BatchNorm_0"]["mean"]),
    )


def test_variable_kinds_follow_collections():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(
        _Net(), variables, x, train=True, rngs={"dropout": jax.random.key(0)}, mutable="batch_stats"
    )
    _, params = sk.unbind_params(layer)
    _, states = sk.unbind_state_vars(layer)
    assert len(params) == 6  # two Dense (kernel, bias) + BatchNorm (scale, bias)
    assert {s.label for s in states} == {
        unflaxify.FlaxVarLabel("batch_stats", "_Block_0.BatchNorm_0.mean"),
        unflaxify.FlaxVarLabel("batch_stats", "_Block_0.BatchNorm_0.var"),
    }
    assert all(isinstance(p, sk.Parameter) for p in params)
    assert "_Block_0.Dense_0.kernel" in {p.label for p in params}


def test_eval_mode_matches_flax_under_variable_jit():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(_Net(), variables, x, train=False)
    got = sk.variable_jit(lambda m, v: m(AK.capture(v, train=False)))(layer, x)
    expected = _Net().apply(variables, x, train=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_changing_a_parameter_changes_the_flax_computation():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(_Net(), variables, x, train=False)
    bias = layer.submodule_calls["Dense_0"].variables["params"]["bias"]
    bias.value = bias.value + 1.0
    got = layer(AK.capture(x, train=False))
    expected = _Net().apply(variables, x, train=False) + 1.0
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_submodule_call_can_be_patched_with_a_saikei_layer():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(_Net(), variables, x, train=False)
    saved = sk.StateVariable(None, label="saved")

    @sk.pytree_dataclass
    class Save(sk.nn.Layer):
        slot: sk.StateVariable

        def __call__(self, arg, /, **side_inputs):
            self.slot.value = arg.args[0]
            return arg

    patched = (
        sk.select(layer)
        .at(lambda m: m.submodule_calls["Dense_0"])
        .apply(lambda c: sk.nn.Sequential([Save(saved), c]))
    )
    got = patched(AK.capture(x, train=False))
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(_Net().apply(variables, x, train=False)), rtol=1e-6
    )
    block_out = _Block().apply(
        {
            "params": variables["params"]["_Block_0"],
            "batch_stats": variables["batch_stats"]["_Block_0"],
        },
        x,
        False,
    )
    np.testing.assert_allclose(np.asarray(saved.value), np.asarray(block_out), rtol=1e-6)


def test_child_layer_alone_is_a_clear_error():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(_Net(), variables, x, train=False)
    with pytest.raises(ValueError, match="root"):
        layer.submodule_calls["Dense_0"](AK.capture(x))


def test_rejects_non_flax_module():
    with pytest.raises(TypeError, match=r"flax\.linen\.Module"):
        unflaxify.unflaxify_apply(object(), {})


def test_batch_stats_state_is_carried_across_calls_like_flax():
    x, variables = _setup()
    rngs = [{"dropout": jax.random.key(3)}, {"dropout": jax.random.key(4)}]
    layer = unflaxify.unflaxify_apply(
        _Net(), variables, x, train=True, rngs=rngs[0], mutable=["batch_stats"]
    )
    flax_vars = variables
    for r in rngs:
        expected, upd = _Net().apply(flax_vars, x * 2, train=True, rngs=r, mutable=["batch_stats"])
        flax_vars = {"params": variables["params"], **upd}
        got = layer(AK.capture(x * 2, train=True), rngs=r)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    bn = layer.submodule_calls["_Block_0"].submodule_calls["BatchNorm_0"].variables
    np.testing.assert_array_equal(
        np.asarray(bn["batch_stats"]["var"].value),
        np.asarray(flax_vars["batch_stats"]["_Block_0"]["BatchNorm_0"]["var"]),
    )


class _WithSetup(fnn.Module):
    def setup(self):
        self.enc = fnn.Dense(3)
        self.dec = fnn.Dense(4)

    def encode(self, x):
        return self.enc(x)

    def __call__(self, x):
        return self.dec(self.encode(x))


def test_setup_submodules_and_named_method():
    x = jnp.ones((2, 4))
    variables = _WithSetup().init(jax.random.key(0), x)
    layer = unflaxify.unflaxify_apply(_WithSetup(), variables, x, method="encode")
    assert list(layer.submodule_calls) == ["enc"]
    np.testing.assert_allclose(
        np.asarray(layer(AK.capture(x))),
        np.asarray(_WithSetup().apply(variables, x, method="encode")),
        rtol=1e-6,
    )
    full = unflaxify.unflaxify_apply(_WithSetup(), variables, x)
    # `encode` is a method of the module itself, so it is not a separate child.
    assert list(full.submodule_calls) == ["enc", "dec"]
    np.testing.assert_allclose(
        np.asarray(full(AK.capture(x))), np.asarray(_WithSetup().apply(variables, x)), rtol=1e-6
    )


def test_shared_module_called_twice_shares_parameters():
    class Twice(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            d = fnn.Dense(4)
            return d(d(x))

    x = jnp.ones((2, 4))
    variables = Twice().init(jax.random.key(0), x)
    layer = unflaxify.unflaxify_apply(Twice(), variables, x)
    assert list(layer.submodule_calls) == ["Dense_0", "Dense_0#2"]
    first = layer.submodule_calls["Dense_0"].variables["params"]["kernel"]
    assert layer.submodule_calls["Dense_0#2"].variables["params"]["kernel"] is first
    np.testing.assert_allclose(
        np.asarray(layer(AK.capture(x))), np.asarray(Twice().apply(variables, x)), rtol=1e-6
    )


def test_another_unflaxified_root_can_run_inside_a_patch():
    x, variables = _setup()
    inner_module = fnn.Dense(6)
    inner_vars = inner_module.init(jax.random.key(5), x)
    inner = unflaxify.unflaxify_apply(inner_module, inner_vars, x)
    layer = unflaxify.unflaxify_apply(_Net(), variables, x, train=False)
    patched = sk.select(layer).at(lambda m: m.submodule_calls["_Block_0"]).set(inner)

    @sk.pytree_dataclass
    class ArgsOnly(sk.nn.Layer):
        def __call__(self, arg, /, **side_inputs):
            return AK.capture(arg.args[0])

    patched = (
        sk.select(patched)
        .at(lambda m: m.submodule_calls["_Block_0"])
        .apply(lambda c: sk.nn.Sequential([ArgsOnly(), c]))
    )
    got = patched(AK.capture(x, train=False))
    h = inner_module.apply(inner_vars, x)
    expected = fnn.Dense(2).apply({"params": variables["params"]["Dense_0"]}, h)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)


def _dense_layer():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4)), jnp.float32)
    module = fnn.Dense(3)
    variables = module.init(jax.random.key(0), x)
    return module, variables, x, unflaxify.unflaxify_apply(module, variables, x)


def test_frozen_params_still_reach_flax():
    module, variables, x, layer = _dense_layer()
    got = sk.freeze_params(layer)(AK.capture(x))
    np.testing.assert_allclose(np.asarray(got), np.asarray(module.apply(variables, x)), rtol=1e-6)


def test_stateless_call_runs_flax_with_the_given_values():
    x, variables = _setup()
    rngs = {"dropout": jax.random.key(2)}
    layer = unflaxify.unflaxify_apply(
        _Net(), variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
    )
    unbound, state = sk.unbind_state_vars(sk.freeze_params(layer), freeze=True)
    out, new_state = unbound.stateless_call(state, AK.capture(x, train=True), rngs=rngs)
    expected, upd = _Net().apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    by_label = {v.label.name: v.value for v in new_state}
    np.testing.assert_array_equal(
        np.asarray(by_label["_Block_0.BatchNorm_0.mean"]),
        np.asarray(upd["batch_stats"]["_Block_0"]["BatchNorm_0"]["mean"]),
    )


def test_unbound_parameter_slot_is_a_clear_error():
    _, _, x, layer = _dense_layer()
    unbound, _ = sk.unbind_params(layer)
    with pytest.raises(sk.UnboundVariableError, match=r"params/(kernel|bias).*unbound slot"):
        unbound(AK.capture(x))


def test_immutable_collections_stay_plain_arrays():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(_Net(), variables, x, train=False)
    stats = layer.submodule_calls["_Block_0"].submodule_calls["BatchNorm_0"].variables
    assert isinstance(stats["batch_stats"]["mean"], jax.Array)
    assert sk.unbind_state_vars(layer)[1] == ()
    assert len(sk.unbind_params(layer)[1]) == 6


def test_random_streams_side_input_feeds_dropout():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(
        _Net(), variables, x, train=True, rngs={"dropout": jax.random.key(0)}, mutable=True
    )
    base = jax.random.key(11)
    stream = sk.RandomStream.from_base_key(base)
    got = [layer(AK.capture(x, train=True), random_streams={"dropout": stream}) for _ in range(2)]
    # Each call draws the stream's next key: fold_in(base, 0), then fold_in(base, 1).
    flax_vars = variables
    for i in range(2):
        expected, upd = _Net().apply(
            flax_vars,
            x,
            train=True,
            rngs={"dropout": jax.random.fold_in(base, i)},
            mutable=["batch_stats"],
        )
        flax_vars = {"params": variables["params"], **upd}
        np.testing.assert_array_equal(np.asarray(got[i]), np.asarray(expected))
    assert not np.array_equal(np.asarray(got[0]), np.asarray(got[1]))


def test_missing_random_stream_is_a_clear_error():
    x, variables = _setup()
    layer = unflaxify.unflaxify_apply(
        _Net(), variables, x, train=True, rngs={"dropout": jax.random.key(0)}, mutable=True
    )
    with pytest.raises(ValueError, match="random_streams"):
        layer(AK.capture(x, train=True))


def test_flax_var_labels_order_after_strings():
    labels = [unflaxify.FlaxVarLabel("b", "y"), "z", unflaxify.FlaxVarLabel("a", "x")]
    assert sorted(labels) == [
        "z",
        unflaxify.FlaxVarLabel("a", "x"),
        unflaxify.FlaxVarLabel("b", "y"),
    ]


def test_labels_match_penzai():
    penzai_unflaxify = pytest.importorskip("penzai.toolshed.unflaxify")
    pz = pytest.importorskip("penzai.pz")
    x, variables = _setup()
    kwargs = dict(train=True, rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
    ours = unflaxify.unflaxify_apply(_Net(), variables, x, **kwargs)
    theirs = penzai_unflaxify.unflaxify_apply(_Net(), variables, x, **kwargs)
    our_labels = {v.label for v in sk.unbind_variables(ours)[1]}
    their_labels = {
        v.label if isinstance(v.label, str) else (v.label.collection, v.label.name)
        for v in pz.unbind_variables(theirs)[1]
    }
    our_labels = {lbl if isinstance(lbl, str) else (lbl.collection, lbl.name) for lbl in our_labels}
    assert our_labels == their_labels
