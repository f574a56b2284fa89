"""Tests for saikei.toolshed.checkpointing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saikei import sk
from saikei.models import simple_mlp
from saikei.toolshed import checkpointing


def _mlp(rng):
    return simple_mlp.MLP.from_config(name="mlp", init_base_rng=rng, feature_sizes=[3, 5, 2])


def _assert_same(a, b):
    if isinstance(a, sk.nx.NamedArray):
        assert isinstance(b, sk.nx.NamedArray)
        assert a.axis_names == b.axis_names
        a, b = a.data_array, b.data_array
    assert type(a) is type(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(
        np.asarray(a).reshape(-1).view(np.uint8), np.asarray(b).reshape(-1).view(np.uint8)
    )


def test_mlp_round_trip_into_fresh_model(tmp_path):
    path = tmp_path / "mlp.safetensors"
    model = _mlp(jax.random.key(0))
    checkpointing.save_variables(model, path)
    other = _mlp(jax.random.key(1))
    restored = checkpointing.restore_variables(other, path)
    originals = {p.label: p.value for p in sk.unbind_params(model)[1]}
    for param in sk.unbind_params(restored)[1]:
        _assert_same(param.value, originals[param.label])
    x = sk.nx.wrap(jnp.ones((4, 3)), "batch", "features")
    np.testing.assert_array_equal(restored(x).data_array, model(x).data_array)


def test_restore_into_slots_recovers_axis_names_and_metadata(tmp_path):
    path = tmp_path / "mlp.safetensors"
    model = _mlp(jax.random.key(0))
    checkpointing.save_variables(model, path)
    restored = checkpointing.restore_variables(_mlp(None), path)
    originals = {p.label: p for p in sk.unbind_params(model)[1]}
    params = sk.unbind_params(restored)[1]
    assert len(params) == len(originals)
    for param in params:
        _assert_same(param.value, originals[param.label].value)
        assert param.metadata == originals[param.label].metadata


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "int8", "uint32", "bool"])
def test_dtypes_round_trip_bit_exact(tmp_path, dtype):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 4)).astype(np.float32)
    data[0, 0] = np.nan
    value = jnp.asarray(data).astype(dtype)
    path = tmp_path / "x.safetensors"
    checkpointing.save_variables({"x": sk.Parameter(value=value, label="x")}, path)
    restored = checkpointing.restore_variables({"x": sk.ParameterSlot("x")}, path)
    _assert_same(restored["x"].value, value)


def test_state_variables_and_nested_values_round_trip(tmp_path):
    path = tmp_path / "s.safetensors"
    with sk.scoped_auto_state_var_labels("g"):
        counter = sk.StateVariable(jnp.array(7, dtype=jnp.int32))
    stats = sk.StateVariable(
        {
            "mean": sk.nx.wrap(jnp.arange(4, dtype=jnp.bfloat16), "features"),
            "n": (jnp.array(3, dtype=jnp.int8), jnp.zeros((0, 2)), None),
            "key": jax.random.key(5),
        },
        label="stats",
    )
    model = [counter, stats, sk.Parameter(value=jnp.ones(2), label="w")]
    checkpointing.save_variables(model, path)
    restored = checkpointing.restore_variables(
        [counter.get_slot(), sk.StateVariableSlot("stats"), sk.ParameterSlot("w")], path
    )
    assert restored[0].label == counter.label
    _assert_same(restored[0].value, counter.value)
    value = restored[1].value
    _assert_same(value["mean"], stats.value["mean"])
    assert isinstance(value["n"], tuple) and value["n"][2] is None
    _assert_same(value["n"][0], stats.value["n"][0])
    _assert_same(value["n"][1], stats.value["n"][1])
    np.testing.assert_array_equal(
        jax.random.key_data(value["key"]), jax.random.key_data(jax.random.key(5))
    )


def test_restore_updates_bound_variables_in_place(tmp_path):
    path = tmp_path / "w.safetensors"
    checkpointing.save_variables({"w": sk.Parameter(value=jnp.arange(3.0), label="w")}, path)
    target = sk.Parameter(value=jnp.zeros(3), label="w")
    shared = {"a": target, "b": target}
    restored = checkpointing.restore_variables(shared, path)
    assert restored["a"] is target and restored["b"] is target
    np.testing.assert_array_equal(target.value, np.arange(3.0))


def test_shared_variable_saved_once(tmp_path):
    path = tmp_path / "w.safetensors"
    w = sk.Parameter(value=jnp.ones(2), label="w")
    checkpointing.save_variables([w, w], path)
    assert checkpointing.read_variable_labels(path) == {"w": "parameter"}


def test_mismatch_names_every_label(tmp_path):
    path = tmp_path / "m.safetensors"
    saved = {
        "a": sk.Parameter(value=jnp.zeros((2, 3)), label="a"),
        "b": sk.Parameter(value=jnp.zeros(2, dtype=jnp.float32), label="b"),
        "extra": sk.Parameter(value=jnp.zeros(1), label="extra"),
        "s": sk.StateVariable(jnp.zeros(1), label="s"),
        "n": sk.Parameter(value=sk.nx.wrap(jnp.zeros(2), "x"), label="n"),
    }
    checkpointing.save_variables(saved, path)
    target = {
        "a": sk.Parameter(value=jnp.zeros((4, 3)), label="a"),
        "b": sk.Parameter(value=jnp.zeros(2, dtype=jnp.bfloat16), label="b"),
        "missing": sk.ParameterSlot("missing"),
        "s": sk.ParameterSlot("s"),
        "n": sk.Parameter(value=sk.nx.wrap(jnp.zeros(2), "y"), label="n"),
    }
    with pytest.raises(checkpointing.CheckpointMismatchError) as info:
        checkpointing.restore_variables(target, path)
    message = str(info.value)
    assert "'a': checkpoint has float32(2, 3), model has float32(4, 3)" in message
    assert "'b': checkpoint has float32(2,), model has bfloat16(2,)" in message
    assert "'missing': missing from the checkpoint" in message
    assert "'extra': extra in the checkpoint" in message
    assert "'s': a state in the checkpoint but a parameter in the model" in message
    assert "('x',)" in message and "('y',)" in message
    np.testing.assert_array_equal(target["a"].value, np.zeros((4, 3)))


def test_save_rejects_unbound_slots(tmp_path):
    with pytest.raises(ValueError, match="slot"):
        checkpointing.save_variables({"w": sk.ParameterSlot("w")}, tmp_path / "x.safetensors")


def test_save_rejects_automatic_labels(tmp_path):
    with pytest.raises(ValueError, match="automatic label"):
        checkpointing.save_variables([sk.StateVariable(1)], tmp_path / "x.safetensors")


def test_save_rejects_unsupported_values(tmp_path):
    value = jax.tree_util.Partial(jnp.add, jnp.ones(2))
    with pytest.raises(ValueError, match=r"'w'.*Partial"):
        checkpointing.save_variables([sk.Parameter(value=value, label="w")], tmp_path / "x")


def test_restore_rejects_foreign_safetensors(tmp_path):
    from safetensors.numpy import save_file

    path = str(tmp_path / "f.safetensors")
    save_file({"a": np.zeros(2, np.float32)}, path)
    with pytest.raises(ValueError, match="not a saikei checkpoint"):
        checkpointing.restore_variables({}, path)


def test_restore_onto_another_mesh_layout_reads_regions_exactly(tmp_path):
    """Saved from a {"data": 2, "model": 4} layout, restored onto {"data": 1, "model": 8}."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from saikei import sk
        from saikei.toolshed import checkpointing, sharding_util
        path = {str(tmp_path / "ckpt.safetensors")!r}
        rules = {{"rows": "model", "cols": "data"}}
        values = {{
            "w": sk.nx.wrap(np.arange(64 * 6, dtype=np.float32).reshape(64, 6), "rows", "cols"),
            "b": sk.nx.wrap(np.arange(16).astype(jax.numpy.bfloat16), "rows"),
        }}
        def model(vals):
            return {{k: sk.Parameter(label=k, value=v) for k, v in vals.items()}}
        saved = sharding_util.name_to_name_device_put(
            model(values), sharding_util.make_global_mesh({{"data": 2, "model": 4}}), rules)
        checkpointing.save_variables(saved, path)
        mesh18 = sharding_util.make_global_mesh({{"data": 1, "model": 8}})
        zeros = {{k: sk.nx.wrap(np.zeros(v.data_array.shape, v.dtype), *v.axis_names)
                  for k, v in values.items()}}
        target = sharding_util.name_to_name_device_put(model(zeros), mesh18, rules)
        restored = checkpointing.restore_variables(target, path)
        slots = checkpointing.restore_variables(
            {{k: sk.ParameterSlot(k) for k in values}}, path, mesh=mesh18,
            axis_name_to_mesh_name=rules)
        for tree in (restored, slots):
            for k, v in values.items():
                got = tree[k].value
                assert got.data_array.sharding.mesh.shape_tuple == mesh18.shape_tuple, k
                assert got.data_array.dtype == v.dtype, (k, got.dtype)
                assert len(got.data_array.sharding.device_set) == 8
                np.testing.assert_array_equal(
                    np.asarray(got.data_array).view(np.uint8),
                    np.asarray(v.data_array).view(np.uint8))
        print("OK")
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]
