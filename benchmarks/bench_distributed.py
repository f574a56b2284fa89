"""Data-parallel training throughput and sharded-load memory across processes.

Model: `llama-512` as in bench_transformer (d_model 512, 8 layers, 8 query / 2
key-value heads of width 64, SwiGLU 1408, vocabulary 32000, float32), built
with saikei's llama-like builder (seed 0) and saved with `save_pretrained`.

Cases:

- training: `StatefulTrainer` steps (SGD, next-token cross-entropy) on a
  per-process batch of `--batch` x `--seq` tokens; 1 process x 1 core against
  2 processes x 1 core (each pinned to its own CPU, one XLA thread, Gloo
  all-reduce of the gradients), both started by `python -m saikei.launch`.
  Reported: global tokens/s of each (fastest of `--repeats` alternating
  runs) and their ratio (target >= 1.7, i.e. scaling efficiency >= 85%).
- load: peak RSS growth of `load_pretrained` (VmHWM minus RSS after JAX
  starts) in one process without a mesh, against each of 2 processes loading
  onto a `{"model": 2}` mesh with the tensor-parallel rules (the weights split
  across the processes). Target: per-process growth <= 0.6x the single load.

Run with `python benchmarks/bench_distributed.py [--steps N] [--batch B] [--seq S]`;
it rewrites benchmarks/RESULTS-distributed.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile

_ROOT = pathlib.Path(__file__).resolve().parent
_CONFIG = {
    "num_kv_heads": 2,
    "query_head_multiplier": 4,
    "embedding_dim": 512,
    "projection_dim": 64,
    "mlp_hidden_dim": 1408,
    "num_decoder_blocks": 8,
    "vocab_size": 32000,
}
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _pin() -> int:
    """Pins this process to one CPU (by rank) and one XLA thread; returns the rank."""
    rank = int(os.environ.get("SAIKEI_PROCESS_ID", "0"))
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[rank % len(cpus)]})
    os.environ["XLA_FLAGS"] = _XLA_ONE_THREAD
    os.environ["JAX_PLATFORMS"] = "cpu"
    return rank


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _loss_fn(model, state, rng, tokens):
    import jax
    import jax.numpy as jnp

    inputs = tokens[{"seq": slice(None, -1)}]
    targets = tokens[{"seq": slice(1, None)}].unwrap("batch", "seq")
    logits = model(inputs).unwrap("batch", "seq", "vocabulary")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1)), state, {}


def child_train(out: str, steps: int, batch: int, seq: int) -> None:
    rank = _pin()
    from saikei import distributed

    distributed.initialize()
    import time

    import jax
    import numpy as np
    import optax

    from saikei import sk
    from saikei.models.transformer.variants import llamalike
    from saikei.toolshed import basic_training, sharding_util

    mesh = sharding_util.make_global_mesh({"data": -1})
    rules = {"batch": "data"}
    model = llamalike.build_llamalike_transformer(
        llamalike.LlamalikeTransformerConfig(**_CONFIG), jax.random.key(0)
    )
    model = sharding_util.name_to_name_device_put(model, mesh, rules)
    local = np.random.default_rng(rank).integers(0, _CONFIG["vocab_size"], (batch, seq + 1))
    tokens = sharding_util.global_from_process_local(
        sk.nx.wrap(local.astype(np.int32), "batch", "seq"), mesh, rules
    )
    trainer = basic_training.StatefulTrainer.build(
        jax.random.key(0), model, optax.sgd(1e-3), _loss_fn
    )
    trainer.step(tokens=tokens)  # compile
    jax.block_until_ready(trainer.state.value)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step(tokens=tokens)
        jax.block_until_ready(trainer.state.value)
        times.append(time.perf_counter() - start)
    if rank == 0:
        median = float(np.median(times))
        global_tokens = batch * seq * jax.process_count()
        with open(out, "w") as f:
            json.dump({"step_s": median, "tokens_per_s": global_tokens / median}, f)


def child_load(out: str, path: str, sharded: bool) -> None:
    rank = _pin()
    if sharded:
        from saikei import distributed

        distributed.initialize()
    import jax

    from saikei.models.transformer import loading
    from saikei.toolshed import sharding_util

    jax.numpy.zeros(1).block_until_ready()
    mesh = sharding_util.make_global_mesh({"model": -1}) if sharded else None
    rules = sharding_util.tensor_parallel_rules(data=None) if sharded else None
    base = _rss()
    model = loading.load_pretrained(path, progress=False, mesh=mesh, sharding_rules=rules)
    jax.block_until_ready(jax.tree_util.tree_leaves(model))
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"growth": _peak_rss() - base}, f)


def _launch(n: int, args: list[str]) -> None:
    command = [sys.executable, "-m", "saikei.launch", "-n", str(n), "--devices-per-process", "1"]
    command += ["--timeout", "1500", __file__, *args]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout[-5000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", default=str(_ROOT / "RESULTS-distributed.md"))
    args = parser.parse_args()
    import jax

    from saikei.models.transformer import loading
    from saikei.models.transformer.variants import llamalike

    work = pathlib.Path(tempfile.mkdtemp(prefix="saikei-bench-distributed-"))
    model_dir = work / "llama-512"
    lm = llamalike.build_llamalike_transformer(
        llamalike.LlamalikeTransformerConfig(**_CONFIG), jax.random.key(0)
    )
    loading.save_pretrained(lm, model_dir)
    del lm
    train = [str(args.steps), str(args.batch), str(args.seq)]
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for repeat in range(args.repeats):  # alternating, so that load on the machine hits both
        for n in (1, 2):
            out = work / f"train{n}.{repeat}.json"
            _launch(n, ["train", str(out), *train])
            runs[n].append(json.loads(out.read_text()))
    one, two = (min(runs[n], key=lambda r: r["step_s"]) for n in (1, 2))
    subprocess.run(
        [sys.executable, __file__, "load", str(work / "load1"), str(model_dir), "0"], check=True
    )
    _launch(2, ["load", str(work / "load2"), str(model_dir), "1"])
    single = json.loads((work / "load1.0").read_text())["growth"]
    per_process = [json.loads((work / f"load2.{r}").read_text())["growth"] for r in range(2)]
    speedup = two["tokens_per_s"] / one["tokens_per_s"]
    memory = max(per_process) / single
    mib = 1 << 20
    rows = [
        (
            f"training tokens/s, 2 processes x 1 core vs 1 x 1 (per-process batch"
            f" {args.batch}x{args.seq})",
            f"{two['tokens_per_s']:.0f} vs {one['tokens_per_s']:.0f}"
            f" (step {two['step_s']:.2f} s vs {one['step_s']:.2f} s)",
            f"{speedup:.2f}",
            ">= 1.7",
            "yes" if speedup >= 1.7 else "no",
        ),
        (
            "load peak RSS growth per process, 2 processes {model: 2} vs 1 process",
            f"{max(per_process) / mib:.0f} MiB vs {single / mib:.0f} MiB",
            f"{memory:.2f}",
            "<= 0.6",
            "yes" if memory <= 0.6 else "no",
        ),
    ]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "# Distributed benchmark results",
        "",
        f"Written by `python benchmarks/bench_distributed.py --steps {args.steps} --batch"
        f" {args.batch} --seq {args.seq} --repeats {args.repeats}` on {now}; do not edit by"
        " hand, rerun the command.",
        "",
        f"- Machine: {os.cpu_count()} CPUs; each process pinned to one CPU with"
        f" XLA_FLAGS='{_XLA_ONE_THREAD}'; CPU collectives: Gloo on localhost.",
        "- Model: llama-512 (d_model 512, 8 layers, 8/2 heads, SwiGLU 1408, vocabulary"
        " 32000, float32, ~55M parameters); training: SGD; each run reports its median"
        f" step time over {args.steps} steps after one compile step; 1- and 2-process runs"
        f" alternate {args.repeats} times and the fastest run of each counts. Absolute"
        " times on this shared machine are noisy.",
        "",
        "| case | measured | ratio | target | meets |",
        "| --- | --- | ---: | ---: | :---: |",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
    ]
    pathlib.Path(args.results).write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        child_train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        child_load(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        sys.exit(main())
