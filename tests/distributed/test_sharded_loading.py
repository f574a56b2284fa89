"""Sharded `load_pretrained(..., mesh=)` in one process with 4 host devices.

(The multi-process behaviour is in test_multiprocess.py and test_mesh_layouts.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from saikei.models.transformer import loading
from saikei.models.transformer.variants import llamalike

_CONFIG = llamalike.LlamalikeTransformerConfig(
    num_kv_heads=4,
    query_head_multiplier=2,
    embedding_dim=16,
    projection_dim=4,
    mlp_hidden_dim=32,
    num_decoder_blocks=2,
    vocab_size=32,
)


def _run_on_4_devices(body: str) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    base = tmp_path_factory.mktemp("sharded_loading")
    lm = llamalike.build_llamalike_transformer(_CONFIG, jax.random.key(0))
    loading.save_pretrained(lm, base / "f32")
    loading.save_pretrained(
        loading.load_pretrained(base / "f32", dtype="bfloat16", progress=False), base / "bf16"
    )
    return base


def test_sharded_load_equals_plain_load_bit_for_bit(saved):
    _run_on_4_devices(
        f"""
        import numpy as np
        from saikei import sk
        from saikei.models.transformer import _sharded_loading, loading
        from saikei.toolshed import sharding_util
        rules = sharding_util.tensor_parallel_rules()
        cases = [({{"data": 1, "model": 4}}, "f32", False), ({{"data": 1, "model": 4}}, "bf16", True),
                 ({{"data": 2, "model": 2}}, "f32", True)]
        for mesh_axes, stored, stack in cases:
            mesh = sharding_util.make_global_mesh(mesh_axes)
            path = {str(saved)!r} + "/" + stored
            plain = loading.load_pretrained(path, progress=False, use_layer_stack=stack)
            sharded = loading.load_pretrained(path, progress=False, use_layer_stack=stack,
                                              mesh=mesh, sharding_rules=rules)
            _, want = sk.unbind_params(plain)
            _, got = sk.unbind_params(sharded)
            for a, b in zip(want, got):
                names = a.value.axis_names
                assert b.value.dtype == a.value.dtype, (a.label, b.value.dtype)
                expected = sharding_util.name_to_name_sharding(b.value, mesh, rules)
                assert b.value.data_array.sharding.is_equivalent_to(
                    expected.data_array, b.value.data_array.ndim), a.label
                np.testing.assert_array_equal(
                    np.asarray(b.value.unwrap(*names)).view(np.uint8),
                    np.asarray(a.value.unwrap(*names)).view(np.uint8))
        print("OK")
        """
    )


def test_sharded_load_reads_each_byte_once_per_process(saved):
    _run_on_4_devices(
        f"""
        from saikei import sk
        from saikei.models.transformer import _sharded_loading, loading
        from saikei.toolshed import sharding_util
        mesh = sharding_util.make_global_mesh({{"data": 2, "model": 2}})
        model = loading.load_pretrained({str(saved / "f32")!r}, progress=False, mesh=mesh,
                                sharding_rules=sharding_util.tensor_parallel_rules())
        total = sum(p.value.data_array.nbytes for p in sk.unbind_params(model)[1])
        # One process holds all 4 devices: it reads every tensor once, in 4 parts.
        assert _sharded_loading.bytes_read == total, (_sharded_loading.bytes_read, total)
        print("OK")
        """
    )


def test_sharded_load_errors_name_the_problem(saved):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        loading.load_pretrained(saved / "f32", progress=False, mesh="model")
    with pytest.raises(ValueError, match="mesh axis 'data', but the mesh only has axes"):
        loading.load_pretrained(
            saved / "f32", progress=False, mesh=mesh, sharding_rules={"neurons": "data"}
        )
    with pytest.raises(ValueError, match="both axis 'vocabulary' and axis 'embedding'"):
        loading.load_pretrained(
            saved / "f32",
            progress=False,
            mesh=mesh,
            sharding_rules={"vocabulary": "model", "embedding": "model"},
        )
