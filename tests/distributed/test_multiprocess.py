"""Two processes x two host devices on localhost (Gloo), started by `python -m saikei.launch`.

One launcher run (module fixture) loads a small saved model sharded over a
{"data": 2, "model": 2} mesh, generates greedily, trains one step and saves a
checkpoint that it restores onto {"data": 1, "model": 4}; each test compares
one of those results with the same computation done here in one process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from saikei import sk

# Minutes of compiling on two shared cores; still part of the default suite.
pytestmark = pytest.mark.slow

_WORKER = Path(__file__).with_name("_worker.py")
_LAUNCH_TIMEOUT = 300


def _import_worker():
    spec = importlib.util.spec_from_file_location("saikei_distributed_worker", _WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _import_worker()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from saikei.models.transformer import loading
    from saikei.models.transformer.variants import llamalike

    base = tmp_path_factory.mktemp("distributed")
    model_dir, out_dir = base / "model", base / "out"
    out_dir.mkdir()
    config = llamalike.LlamalikeTransformerConfig(**worker.CONFIG)
    loading.save_pretrained(
        llamalike.build_llamalike_transformer(config, jax.random.key(1)), model_dir
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "saikei.launch",
            "-n",
            "2",
            "--devices-per-process",
            "2",
            "--timeout",
            str(_LAUNCH_TIMEOUT - 30),
            str(_WORKER),
            str(model_dir),
            str(out_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=_LAUNCH_TIMEOUT,
    )
    log = "\n".join(line for line in proc.stdout.splitlines() if "Gloo" not in line)
    assert proc.returncode == 0, log[-6000:]
    results = dict(np.load(out_dir / "results.npz"))
    reads = [int(np.load(out_dir / f"read_bytes_{r}.npy")) for r in range(2)]
    return model_dir, out_dir, results, reads


def _single_process_model(model_dir):
    from saikei.models.transformer import loading

    return loading.load_pretrained(model_dir, progress=False)


def _params(model):
    _, params = sk.unbind_params(model, freeze=True)
    return {p.label: np.asarray(p.value.data_array) for p in params}


def _prefixed(results, prefix):
    return {k[len(prefix) :]: v for k, v in results.items() if k.startswith(prefix)}


def test_sharded_load_gives_the_single_process_weights(run):
    model_dir, _, results, _ = run
    expected = _params(_single_process_model(model_dir))
    loaded = _prefixed(results, "loaded/")
    assert sorted(loaded) == sorted(expected)
    for label, value in expected.items():
        np.testing.assert_array_equal(loaded[label], value, err_msg=label)


def test_each_process_reads_about_half_of_the_weights(run):
    model_dir, _, _, reads = run
    total = sum(v.nbytes for v in _params(_single_process_model(model_dir)).values())
    for rank, nbytes in enumerate(reads):
        assert 0.45 * total <= nbytes <= 0.55 * total, (rank, nbytes, total)


def test_greedy_generation_matches_one_process(run):
    from saikei.models.transformer import sampling

    model_dir, _, results, _ = run
    prompt = sk.nx.wrap(worker.PROMPT, "batch", "seq")
    tokens = sampling.generate(
        _single_process_model(model_dir), prompt, max_new_tokens=worker.MAX_NEW, temperature=0.0
    )
    np.testing.assert_array_equal(results["generated"], np.asarray(tokens.unwrap("batch", "seq")))


def test_training_step_matches_one_process(run):
    import optax

    from saikei.toolshed import basic_training

    model_dir, _, results, _ = run
    model = _single_process_model(model_dir)
    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(0), model, optax.sgd(worker.LEARNING_RATE), worker.loss_fn
    )
    aux = trainer.step(tokens=sk.nx.wrap(worker.BATCH, "batch", "seq"))
    np.testing.assert_allclose(results["loss"], np.asarray(aux["loss"]), rtol=1e-6, atol=1e-6)
    trained = _prefixed(results, "trained/")
    before = _params(_single_process_model(model_dir))
    for label, value in _params(model).items():
        assert not np.array_equal(value, before[label]) or "norm" in label, label
        np.testing.assert_allclose(trained[label], value, rtol=1e-5, atol=1e-6, err_msg=label)


def test_checkpoint_saved_on_2x2_restores_exactly_on_1x4(run):
    _, out_dir, results, _ = run
    trained = _prefixed(results, "trained/")
    for prefix in ("restored/", "restored_slots/"):
        restored = _prefixed(results, prefix)
        assert sorted(restored) == sorted(trained)
        for label, value in trained.items():
            np.testing.assert_array_equal(restored[label], value, err_msg=prefix + label)
    chunk_files = sorted(p.name for p in out_dir.iterdir() if ".safetensors." in p.name)
    assert len(chunk_files) == 2 and all(f.endswith("-of-00002") for f in chunk_files)
    # Both processes wrote part of the weights (replicated blocks are spread).
    sizes = [(out_dir / f).stat().st_size for f in chunk_files]
    assert min(sizes) > 0.25 * max(sizes), sizes


def test_single_process_checkpoint_restores_in_one_process(run):
    """The sharded checkpoint (index + chunk files) also restores in a plain single process."""
    from saikei.toolshed import checkpointing

    model_dir, out_dir, results, _ = run
    model = _single_process_model(model_dir)
    checkpointing.restore_variables(model, out_dir / "ckpt.safetensors")
    trained = _prefixed(results, "trained/")
    for label, value in _params(model).items():
        np.testing.assert_array_equal(value, trained[label], err_msg=label)
