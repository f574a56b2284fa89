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
