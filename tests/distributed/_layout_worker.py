"""The same script on 1 process x 8 devices and on 2 processes x 4 devices (test_mesh_layouts.py).

Loads a safetensors model and a GGUF model sharded over a {"data": 2, "model": 4}
mesh, checks every parameter against an unsharded load in the same process,
runs a forward pass on a batch fed per process, and (rank 0) saves the gathered
logits to OUT_DIR/logits_{process count}.npz.
"""

from __future__ import annotations

import os
import sys

import numpy as np

TOKENS = (np.arange(4 * 5).reshape(4, 5) * 5 + 1) % 64


def main(safetensors_dir: str, gguf_path: str, out_dir: str) -> None:
    from saikei import distributed

    if "SAIKEI_COORDINATOR_ADDRESS" in os.environ:
        distributed.initialize()

    import jax

    from saikei import sk
    from saikei.models.transformer import loading
    from saikei.toolshed import sharding_util

    assert len(jax.devices()) == 8, jax.devices()
    mesh = sharding_util.make_global_mesh({"data": 2, "model": 4})
    rules = sharding_util.tensor_parallel_rules()
    count, rank = jax.process_count(), jax.process_index()
    rows = TOKENS.shape[0] // count
    batch = sharding_util.global_from_process_local(
        sk.nx.wrap(TOKENS[rank * rows : (rank + 1) * rows], "batch", "seq"), mesh, rules
    )
    out = {}
    for name, path, stack in (("safetensors", safetensors_dir, False), ("gguf", gguf_path, True)):
        sharded = loading.load_pretrained(
            path, progress=False, mesh=mesh, sharding_rules=rules, use_layer_stack=stack
        )
        plain = loading.load_pretrained(path, progress=False, use_layer_stack=stack)
        _, got = sk.unbind_params(sharded, freeze=True)
        _, want = sk.unbind_params(plain, freeze=True)
        assert [p.label for p in got] == [p.label for p in want]
        host = sharding_util.gather_to_host([p.value for p in got])
        for p, q, h in zip(got, want, host):
            assert h.named_shape == q.value.named_shape, p.label
            np.testing.assert_array_equal(
                h.unwrap(*q.value.axis_names), np.asarray(q.value.unwrap(*q.value.axis_names))
            )
            if "embedding" in p.value.named_shape and "vocabulary" in p.value.named_shape:
                spec = p.value.data_array.sharding.spec
                assert "model" in tuple(spec), (p.label, spec)
        logits = sk.variable_jit(lambda m, t: m(t))(sharded, batch)
        out[f"{name}/{stack}"] = sharding_util.gather_to_host(logits).unwrap(
            "batch", "seq", "vocabulary"
        )
    if rank == 0:
        np.savez(os.path.join(out_dir, f"logits_{count}.npz"), **out)
    print("layout worker done", count, rank, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
