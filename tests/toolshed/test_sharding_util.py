"""Tests for saikei.toolshed.sharding_util.

The multi-device tests run in a subprocess with 8 fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), because the device
count is fixed when jax starts.
"""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from saikei import sk
from saikei.toolshed import sharding_util

_PRELUDE = """
import jax, numpy as np
from saikei import sk
from saikei.models import simple_mlp
from saikei.toolshed import sharding_util
assert len(jax.devices()) == 8, jax.devices()
mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
mapping = {"batch": "data", "features": "model"}
def make():
    return simple_mlp.MLP.from_config(
        name="mlp", init_base_rng=jax.random.key(1), feature_sizes=[8, 16, 8])
x = sk.nx.wrap(
    np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32), "batch", "features")
"""


def _run_on_8_devices(body: str) -> str:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    script = _PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_sharded_mlp_forward_matches_unsharded_on_2x4_mesh():
    out = _run_on_8_devices(
        """
        expected = np.asarray(make()(x).unwrap("batch", "features"))
        model = sharding_util.name_to_name_device_put(make(), mesh, mapping)
        xs = sharding_util.name_to_name_device_put(x, mesh, mapping)
        w = model.sublayers[0].sublayers[0].weights.value
        assert len(w.data_array.sharding.device_set) == 8
        names = (None,) * (w.data_array.ndim - len(w.axis_names)) + w.axis_names
        spec = tuple(w.data_array.sharding.spec) + (None,) * w.data_array.ndim
        for name, s in zip(names, spec):
            assert s == mapping.get(name), (names, w.data_array.sharding.spec)
        assert tuple(xs.data_array.sharding.spec) == ("data", "model")
        got = sk.variable_jit(lambda m, v: m(v))(model, xs)
        np.testing.assert_allclose(
            np.asarray(got.unwrap("batch", "features")), expected, rtol=1e-5, atol=1e-5)
        text = str(sk.ts.render_array_sharding(xs.data_array))
        print("RENDER_OK", type(text).__name__)
        """
    )
    assert "RENDER_OK" in out


def test_sharded_init_matches_plain_init_and_is_sharded():
    _run_on_8_devices(
        """
        plain = make()
        sharded = sharding_util.sharded_init(
            simple_mlp.MLP.from_config, name="mlp", init_base_rng=jax.random.key(1),
            feature_sizes=[8, 16, 8], mesh=mesh, axis_name_to_mesh_name=mapping)
        _, plain_vals = sk.unbind_params(plain, freeze=True)
        _, sharded_vals = sk.unbind_params(sharded, freeze=True)
        assert [v.label for v in plain_vals] == [v.label for v in sharded_vals]
        for a, b in zip(plain_vals, sharded_vals):
            assert b.value.named_shape == a.value.named_shape
            np.testing.assert_array_equal(
                np.asarray(b.value.data_array), np.asarray(a.value.data_array))
            if "features" in b.value.named_shape:
                assert len(b.value.data_array.sharding.device_set) >= 4
        # Fresh variables: not the plain model's objects.
        assert sharded.sublayers[0].sublayers[0].weights is not plain.sublayers[0].sublayers[0].weights
        np.testing.assert_allclose(
            np.asarray(sharded(x).unwrap("batch", "features")),
            np.asarray(plain(x).unwrap("batch", "features")), rtol=1e-5, atol=1e-5)
        """
    )


def test_constrain_sharding_by_name_inside_jit_sets_output_sharding():
    _run_on_8_devices(
        """
        layer = sharding_util.ConstrainShardingByName(mesh, mapping)
        y = jax.jit(lambda v: layer(v * 2))(x)
        assert tuple(y.data_array.sharding.spec) == ("data", "model"), y.data_array.sharding
        np.testing.assert_array_equal(np.asarray(y.data_array), np.asarray(x.data_array) * 2)
        layer2 = sharding_util.ConstrainSharding(
            sharding_util.name_to_name_sharding(x, mesh, {"features": "model"}))
        y2 = jax.jit(layer2)(x)
        assert tuple(y2.data_array.sharding.spec) in ((None, "model"),), y2.data_array.sharding
        """
    )


def _mesh1(*names):
    return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape((1,) * len(names)), names)


def test_name_to_name_sharding_spec_follows_names_and_positional_axes_replicated():
    mesh = _mesh1("a", "b")
    x = sk.nx.wrap(np.zeros((2, 3, 4))).tag_prefix("a", "b")
    # Names live on the first two data dimensions; the last one is positional.
    s = sharding_util.name_to_name_sharding(x, mesh, {"a": "b", "b": "a"})
    assert tuple(s.data_array.spec) == ("b", "a", None)


def test_name_to_name_sharding_identity_default_and_tuple_targets():
    mesh = _mesh1("x", "y")
    arr = sk.nx.zeros({"x": 2, "z": 3})
    assert tuple(sharding_util.name_to_name_sharding(arr, mesh).data_array.spec) == ("x", None)
    s = sharding_util.name_to_name_sharding(arr, mesh, {"z": ("x", "y")})
    assert tuple(s.data_array.spec) == (None, ("x", "y"))


def test_name_to_name_sharding_rejects_unnamed_leaf_with_path():
    mesh = _mesh1("x")
    with pytest.raises(ValueError, match=r"\['raw'\]"):
        sharding_util.name_to_name_sharding({"raw": np.zeros(3)}, mesh)
    out = sharding_util.name_to_name_sharding(
        {"raw": np.zeros(3)}, mesh, ignore_unnamed_arrays=True
    )
    assert out == {"raw": None}


def test_name_to_name_sharding_rejects_unknown_mesh_axis():
    with pytest.raises(ValueError, match="'nope'"):
        sharding_util.name_to_name_sharding(sk.nx.zeros({"a": 2}), _mesh1("x"), {"a": "nope"})


def test_name_to_name_sharding_as_shape_dtype_struct():
    mesh = _mesh1("a")
    s = sharding_util.name_to_name_sharding(sk.nx.zeros({"a": 2}), mesh, as_shape_dtype_struct=True)
    assert isinstance(s.data_array, jax.ShapeDtypeStruct)
    assert s.data_array.shape == (2,)
    assert tuple(s.data_array.sharding.spec) == ("a",)


def test_device_put_updates_shared_variables_in_place():
    mesh = _mesh1("a")
    p = sk.Parameter(label="p", value=sk.nx.ones({"a": 2}))
    tree = {"x": p, "y": p}
    out = sharding_util.name_to_name_device_put(tree, mesh)
    assert out["x"] is p and out["y"] is p
    assert tuple(p.value.data_array.sharding.spec) == ("a",)


def test_whole_transformer_goes_onto_the_mesh_with_the_tensor_parallel_table():
    _run_on_8_devices(
        """
        from saikei.models.transformer.variants import llamalike
        cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=4, query_head_multiplier=2,
            embedding_dim=16, projection_dim=4, mlp_hidden_dim=32, num_decoder_blocks=1,
            vocab_size=32)
        lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
        tokens = sk.nx.wrap(np.arange(12).reshape(2, 6) % 32, "batch", "seq")
        expected = np.asarray(lm(tokens).unwrap("batch", "seq", "vocabulary"))
        mesh2 = sharding_util.make_global_mesh({"data": 2, "model": 4})
        rules = sharding_util.tensor_parallel_rules()
        placed = sharding_util.name_to_name_device_put(lm, mesh2, rules)
        floats = [x for x in jax.tree_util.tree_leaves(placed) if isinstance(x, float)]
        assert floats, "the model keeps its Python floats (e.g. norm epsilons)"
        _, params = sk.unbind_params(placed)
        for p in params:
            spec = dict(zip(p.value.axis_names, p.value.data_array.sharding.spec))
            for name in p.value.axis_names:
                assert spec.get(name) == rules.get(name), (p.label, spec)
        xs = sharding_util.name_to_name_device_put(tokens, mesh2, rules)
        got = sk.variable_jit(lambda m, t: m(t))(placed, xs)
        np.testing.assert_allclose(
            np.asarray(got.unwrap("batch", "seq", "vocabulary")), expected, rtol=1e-5, atol=1e-5)
        """
    )


def test_several_axes_may_share_a_mesh_axis_unless_one_array_has_two_of_them():
    mesh = _mesh1("model")
    rules = {"heads": "model", "neurons": "model"}
    tree = {"a": sk.nx.zeros({"heads": 2, "e": 3}), "b": sk.nx.zeros({"neurons": 4})}
    out = sharding_util.name_to_name_sharding(tree, mesh, rules)
    assert tuple(out["a"].data_array.spec) == ("model", None)
    assert tuple(out["b"].data_array.spec) == ("model",)
    both = {"w": sk.nx.zeros({"heads": 2, "neurons": 4})}
    with pytest.raises(ValueError, match=r"'heads' and axis 'neurons' of the array at \['w'\]"):
        sharding_util.name_to_name_sharding(both, mesh, rules)
    p = sk.Parameter(label="mix", value=sk.nx.zeros({"heads": 2, "neurons": 4}))
    with pytest.raises(ValueError, match="variable 'mix'"):
        sharding_util.name_to_name_device_put({"p": p}, mesh, rules)


def test_device_put_names_an_axis_the_mesh_axis_does_not_divide():
    _run_on_8_devices(
        """
        mesh2 = sharding_util.make_global_mesh({"model": 8})
        try:
            sharding_util.name_to_name_device_put({"w": sk.nx.zeros({"vocabulary": 12})}, mesh2,
                                                  {"vocabulary": "model"})
        except ValueError as e:
            assert "'vocabulary' (size 12)" in str(e) and "8 does not divide 12" in str(e), e
        else:
            raise AssertionError("no error")
        """
    )


def test_device_put_keeps_python_numbers_and_replicates_plain_arrays():
    mesh = _mesh1("a")
    out = sharding_util.name_to_name_device_put(
        {"eps": 1e-6, "name": "x", "table": jax.numpy.ones(3), "w": sk.nx.ones({"a": 2})}, mesh
    )
    assert out["eps"] == 1e-6 and out["name"] == "x"
    assert tuple(out["table"].sharding.spec) == ()
    assert tuple(out["w"].data_array.sharding.spec) == ("a",)


def test_make_global_mesh_sizes_and_errors():
    n = len(jax.devices())
    mesh = sharding_util.make_global_mesh({"data": -1, "model": 1})
    assert dict(mesh.shape) == {"data": n, "model": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="need"):
        sharding_util.make_global_mesh({"data": n + 1})
    with pytest.raises(ValueError, match="at most one -1"):
        sharding_util.make_global_mesh({"data": -1, "model": -1})


def test_global_from_process_local_and_gather_to_host_round_trip_in_one_process():
    mesh = sharding_util.make_global_mesh({"data": -1})
    local = {"tokens": sk.nx.wrap(np.arange(6).reshape(2, 3), "batch", "seq")}
    batch = sharding_util.global_from_process_local(local, mesh, {"batch": "data"})
    assert tuple(batch["tokens"].data_array.sharding.spec) == ("data", None)
    host = sharding_util.gather_to_host(batch)
    assert isinstance(host["tokens"].data_array, np.ndarray)
    np.testing.assert_array_equal(host["tokens"].unwrap("batch", "seq"), np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="expected NamedArrays"):
        sharding_util.global_from_process_local({"x": np.zeros(2)}, mesh)


def test_tensor_parallel_rules_can_leave_an_axis_out():
    assert sharding_util.tensor_parallel_rules(data=None) == {
        "heads": "model",
        "head_groups": "model",
        "neurons": "model",
        "vocabulary": "model",
    }
    assert sharding_util.tensor_parallel_rules(model=None) == {"batch": "data"}
