"""One rank of the multi-process checks in test_multiprocess.py.

Run by `python -m saikei.launch -n 2 --devices-per-process 2 _worker.py MODEL_DIR OUT_DIR`.
Every rank loads the saved tiny model sharded over a {"data": 2, "model": 2}
mesh, generates greedily, runs one training step on its own half of the batch,
saves a checkpoint and restores it onto a {"data": 1, "model": 4} mesh; rank 0
writes the gathered results to OUT_DIR/results.npz for the test to compare with
a single-process run. The shared pieces (model config, batch, loss) are
imported by the test too.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

CONFIG = {
    "num_kv_heads": 4,
    "query_head_multiplier": 2,
    "embedding_dim": 16,
    "projection_dim": 4,
    "mlp_hidden_dim": 32,
    "num_decoder_blocks": 1,
    "vocab_size": 64,
}
PROMPT = np.array([[5, 9, 2, 17, 33, 8], [0, 0, 41, 3, 12, 60]], np.int32)
MAX_NEW = 6
BATCH = (np.arange(4 * 9).reshape(4, 9) * 7 + 3) % 64
LEARNING_RATE = 0.5


def loss_fn(model, state, rng, tokens):
    """Mean next-token cross-entropy of `tokens` (named `batch`, `seq`)."""
    import jax
    import jax.numpy as jnp

    inputs = tokens[{"seq": slice(None, -1)}]
    targets = tokens[{"seq": slice(1, None)}].unwrap("batch", "seq")
    logits = model(inputs).unwrap("batch", "seq", "vocabulary")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    loss = -jnp.mean(picked)
    return loss, state, {"loss": loss}


def params_of(model) -> dict[str, np.ndarray]:
    """Every parameter as a host array, gathered from all processes."""
    from saikei import sk
    from saikei.toolshed import sharding_util

    _, params = sk.unbind_params(model, freeze=True)
    gathered = sharding_util.gather_to_host({p.label: p.value for p in params})
    return {label: value.data_array for label, value in gathered.items()}


_START = time.monotonic()


def log(what: str) -> None:
    print(f"{what} done at {time.monotonic() - _START:.1f} s", flush=True)


def main(model_dir: str, out_dir: str) -> None:
    from saikei import distributed

    distributed.initialize()
    log("initialize")

    import jax
    import optax

    from saikei import sk
    from saikei.models.transformer import _sharded_loading, loading, sampling
    from saikei.toolshed import basic_training, checkpointing, sharding_util

    rank = jax.process_index()
    assert jax.process_count() == 2 and len(jax.local_devices()) == 2, jax.devices()
    mesh = sharding_util.make_global_mesh({"data": 2, "model": 2})
    rules = sharding_util.tensor_parallel_rules()
    results: dict[str, np.ndarray] = {}

    # Sharded loading: each process reads about half of the weights.
    model = loading.load_pretrained(model_dir, progress=False, mesh=mesh, sharding_rules=rules)
    results["read_bytes"] = np.array(_sharded_loading.bytes_read)
    log("load")
    _, params = sk.unbind_params(model)
    for p in params:
        array = p.value.data_array
        assert not array.is_fully_addressable, p.label
        expected = sharding_util.name_to_name_sharding(p.value, mesh, rules).data_array
        assert array.sharding.is_equivalent_to(expected, array.ndim), (p.label, array.sharding)
    results.update({f"loaded/{k}": v for k, v in params_of(model).items()})

    # Greedy generation, batch over `data`, heads over `model`.
    prompt = sharding_util.global_from_process_local(
        sk.nx.wrap(PROMPT[rank : rank + 1], "batch", "seq"), mesh, rules
    )
    tokens = sampling.generate(model, prompt, max_new_tokens=MAX_NEW, temperature=0.0)
    results["generated"] = sharding_util.gather_to_host(tokens).unwrap("batch", "seq")
    log("generate")

    # One data- and tensor-parallel training step; each process feeds its half.
    half = BATCH.shape[0] // 2
    batch = sharding_util.global_from_process_local(
        sk.nx.wrap(BATCH[rank * half : (rank + 1) * half], "batch", "seq"), mesh, rules
    )
    # A first save of the untrained weights: the later save must replace it whole.
    checkpointing.save_variables(model, os.path.join(out_dir, "ckpt.safetensors"))
    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(0), model, optax.sgd(LEARNING_RATE), loss_fn
    )
    aux = trainer.step(tokens=batch)
    results["loss"] = np.asarray(sharding_util.gather_to_host(aux["loss"]))
    trained = params_of(model)
    results.update({f"trained/{k}": v for k, v in trained.items()})
    log("train")

    # Checkpoint saved from the 2x2 mesh, restored onto 1x4: into a model of zeros
    # laid out on the 1x4 mesh, and into bare slots placed by name.
    ckpt = os.path.join(out_dir, "ckpt.safetensors")
    checkpointing.save_variables(model, ckpt)
    mesh14 = sharding_util.make_global_mesh({"data": 1, "model": 4})
    tree, frozen = sk.unbind_params(model, freeze=True)
    zeros = [
        sk.Parameter(
            label=v.label,
            value=sk.nx.wrap(np.zeros(v.value.data_array.shape, np.float32), *v.value.axis_names),
        )
        for v in frozen
    ]
    fresh = sharding_util.name_to_name_device_put(sk.bind_variables(tree, zeros), mesh14, rules)
    restored = checkpointing.restore_variables(fresh, ckpt)
    _, params14 = sk.unbind_params(restored)
    for p in params14:
        assert p.value.data_array.sharding.mesh.shape_tuple == mesh14.shape_tuple, p.label
    results.update({f"restored/{k}": v for k, v in params_of(restored).items()})
    slots = checkpointing.restore_variables(tree, ckpt, mesh=mesh14, axis_name_to_mesh_name=rules)
    _, params14 = sk.unbind_params(slots)
    for p in params14:
        assert p.value.data_array.sharding.mesh.shape_tuple == mesh14.shape_tuple, p.label
    results.update({f"restored_slots/{k}": v for k, v in params_of(slots).items()})
    log("checkpoint")

    if rank == 0:
        np.savez(os.path.join(out_dir, "results.npz"), **results)
    np.save(os.path.join(out_dir, f"read_bytes_{rank}.npy"), results["read_bytes"])
    print("worker done", rank)


if __name__ == "__main__":
    main(*sys.argv[1:])
