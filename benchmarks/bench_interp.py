"""Interpretability workflows: saikei.interp against TransformerLens 4 and nnsight 0.8.

Model: a random GPT-2 (`transformers.GPT2LMHeadModel`, 4 blocks, width 256, 8
heads, vocabulary 2048, eager attention, float32), the same weights for all
three: saikei converts it with `from_huggingface_model` (hook points added by
`interp.with_hook_points`); TransformerLens wraps the live HF model in its
`TransformerBridge` (`boot_transformers("gpt2", hf_model=...)` with a local
tokenizer; TransformerLens 4 removed `HookedTransformer`/`HookedTransformerConfig`,
and the bridge is its replacement); nnsight wraps it in `LanguageModel`.

Cases (saikei/peer time, lower is better):

- run_with_cache 1x128, all hook points: saikei `interp.run_with_cache(lm,
  tokens)` (every hook point); TransformerLens `bridge.run_with_cache(ids)`
  (every hook); nnsight saves the output of every block, attention, MLP,
  norm and the unembedding inside one trace. Target <= 1.0.
- residual patching grid (every layer x every position, 1x32): saikei
  `interp.activation_patch(..., names="resid_pre", over=("layer", "seq"))`,
  one compiled batched program; TransformerLens
  `patching.get_act_patch_resid_pre`; nnsight one trace per cell. The grids
  are checked against each other. Target <= 0.25.
- head zero-ablation sweep (every layer x head, 1x32): saikei scales
  `attn.z` by a mask with a `cell` axis (one forward pass broadcast over the
  cells); TransformerLens a hook on `hook_z` per cell; nnsight zeroes the
  head's slice of the `c_proj` input per cell. Target <= 0.5.
- attribution patching (every layer x position, 1x32): saikei
  `interp.attribution_patch` (one forward and one backward pass in `jax.grad`);
  TransformerLens hooks that keep the residual's gradient in one backward
  pass; nnsight the same with its `.grad` in a trace. Target <= 1.0.
- peak memory of a cache of 8 names, 1x128 (the time columns hold MiB
  here): XLA's own accounting of the compiled `run_with_cache` (temporaries
  plus outputs) against the plain compiled forward plus the cached bytes.
  Target <= 1.2.

Threads are pinned to one for both runtimes (see `_harness`). Run alone with
`python benchmarks/bench_interp.py [--quick]`, or via `python benchmarks/run.py
--only interp --results benchmarks/RESULTS-interp.md`.
"""

from __future__ import annotations

import functools
import os
import pathlib
import sys
import tempfile
from typing import Any

import _harness  # first: pins XLA threads before jax starts
from _harness import Result, compare
from _harness import check as _check

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's patching loops

TL = "TransformerLens 4 (TransformerBridge)"
NNSIGHT = "nnsight 0.8"
CONFIG = dict(vocab_size=2048, n_positions=256, n_embd=256, n_layer=4, n_head=8)
LAYERS, HEADS = CONFIG["n_layer"], CONFIG["n_head"]
SEQ_CACHE, SEQ_PATCH = 128, 32
CACHE_NAMES = 8


def _torch() -> Any:
    import torch

    _harness.pin_torch_threads()
    return torch


@functools.cache
def _hf() -> Any:
    torch = _torch()
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(**CONFIG, attn_implementation="eager")
    model = transformers.GPT2LMHeadModel(config).float().eval()
    with torch.no_grad():  # sharper attention and logits than the tiny init gives
        for name, p in model.named_parameters():
            if name.endswith(("c_attn.weight", "lm_head.weight", "wte.weight")):
                p.mul_(4.0)
    return model


@functools.cache
def _tokenizer() -> Any:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(CONFIG["vocab_size"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="t0", pad_token="t0", bos_token="t1", eos_token="t1"
    )
    # TransformerLens reloads the tokenizer by its path, so it must have one.
    path = pathlib.Path(tempfile.mkdtemp(prefix="saikei-bench-interp-")) / "tokenizer"
    fast.save_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path)


@functools.cache
def _tokens() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    long = rng.integers(2, CONFIG["vocab_size"], size=(1, SEQ_CACHE)).astype(np.int32)
    clean = rng.integers(2, CONFIG["vocab_size"], size=(1, SEQ_PATCH)).astype(np.int32)
    corrupted = clean.copy()
    corrupted[0, [3, 11, 17]] = rng.integers(2, CONFIG["vocab_size"], size=3)
    return {"long": long, "clean": clean, "corrupted": corrupted}


@functools.cache
def _answer() -> tuple[int, int]:
    """Correct and wrong next tokens: the clean run's top two at the last position."""
    torch = _torch()
    with torch.no_grad():
        logits = _hf()(torch.tensor(_tokens()["clean"])).logits[0, -1]
    top = torch.topk(logits, 2).indices.tolist()
    return int(top[0]), int(top[1])


# saikei --------------------------------------------------------------------------------


@functools.cache
def _saikei_lm() -> Any:
    from saikei import interp
    from saikei.models.transformer import from_huggingface_model

    return interp.with_hook_points(from_huggingface_model(_hf()))


def _named(ids: np.ndarray) -> Any:
    from saikei import sk

    return sk.nx.wrap(jnp.asarray(ids), "batch", "seq")


def _saikei_metric() -> Any:
    from saikei import interp

    return interp.logit_diff(*_answer())


def _saikei_run_with_cache():
    from saikei import interp

    lm, tokens = _saikei_lm(), _named(_tokens()["long"])
    logits, cache = interp.run_with_cache(lm, tokens)
    torch = _torch()
    with torch.no_grad():
        want = _hf()(torch.tensor(_tokens()["long"])).logits.numpy()
    got = np.asarray(logits.unwrap("batch", "seq", "vocabulary"))
    _check(np.abs(got - want).max() < 1e-3, "saikei logits match HF")
    _check(len(cache) > 10 * LAYERS, f"saikei caches every hook point ({len(cache)} names)")

    def run():
        jax.block_until_ready(interp.run_with_cache(lm, tokens))

    return run


def _saikei_patch_grid():
    from saikei import interp

    lm, metric = _saikei_lm(), _saikei_metric()
    clean, corrupted = _named(_tokens()["clean"]), _named(_tokens()["corrupted"])

    def grid():
        return interp.activation_patch(lm, clean, corrupted, metric, "resid_pre", ("layer", "seq"))

    got = np.asarray(grid().unwrap("layer", "seq"))
    _check(np.allclose(got, _tl_grid(), atol=1e-3), "saikei patching grid matches TransformerLens")

    def run():
        jax.block_until_ready(grid())

    return run


def _saikei_head_sweep():
    from saikei import interp, sk

    lm = _saikei_lm()
    clean = _named(_tokens()["clean"])
    # Every cell runs the same tokens, batched along a `cell` axis; one mask per
    # layer over `cell` and `heads`: cell l*H + h zeroes head h of layer l.
    tokens = clean.broadcast_to((), {"cell": LAYERS * HEADS, **clean.named_shape})
    eye = np.ones((LAYERS, LAYERS * HEADS, HEADS), np.float32)
    for layer in range(LAYERS):
        for head in range(HEADS):
            eye[layer, layer * HEADS + head, head] = 0.0
    masks = {
        f"blocks.{layer}.attn.z": sk.nx.wrap(jnp.asarray(eye[layer]), "cell", "heads")
        for layer in range(LAYERS)
    }
    frozen = sk.freeze_params(lm)

    @jax.jit
    def sweep(model, masks):
        swept = interp.intervene(model, {name: interp.Scale(m) for name, m in masks.items()})
        logits = swept(tokens)
        last = logits[{"seq": -1}]
        a, b = _answer()
        return (last[{"vocabulary": a}] - last[{"vocabulary": b}]).unwrap("cell", "batch")

    got = np.asarray(sweep(frozen, masks))[:, 0].reshape(LAYERS, HEADS)
    _check(np.allclose(got, _tl_head_sweep(), atol=1e-3), "saikei head sweep matches TL")

    def run():
        jax.block_until_ready(sweep(frozen, masks))

    return run


def _saikei_attribution():
    from saikei import interp

    lm, metric = _saikei_lm(), _saikei_metric()
    clean, corrupted = _named(_tokens()["clean"]), _named(_tokens()["corrupted"])

    def grid():
        return interp.attribution_patch(lm, clean, corrupted, metric, "resid_pre", ("layer", "seq"))

    # saikei's grid estimates the patched metric: the attribution plus metric(corrupted).
    base = float(metric(lm(corrupted)))
    got = np.asarray(grid().unwrap("layer", "seq")) - base
    _check(np.allclose(got, _tl_attribution(), atol=1e-3), "saikei attribution matches TL")

    def run():
        jax.block_until_ready(grid())

    return run


def _memory_case() -> Result:
    """XLA's byte counts: run_with_cache of k names against forward + cached bytes."""
    from saikei import interp, sk

    lm = _saikei_lm()
    tokens = _named(_tokens()["long"])
    names = [f"blocks.{i}.{site}" for i in range(LAYERS) for site in ("resid_pre", "attn_out")]
    names = names[:CACHE_NAMES]
    frozen = sk.freeze_params(lm)

    def peak(fn) -> int:
        stats = jax.jit(fn).lower(frozen, tokens).compile().memory_analysis()
        return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)

    cached = peak(lambda m, t: interp.run_with_cache(m, t, names=names))
    plain = peak(lambda m, t: m(t))
    _, cache = interp.run_with_cache(lm, tokens, names=names)
    cached_bytes = sum(int(np.asarray(cache[n].data_array).nbytes) for n in names)
    mib = 2.0**20
    return Result(
        name=f"peak memory, cache of {len(names)} names, 1x{SEQ_CACHE}",
        saikei_s=cached / mib,
        peer_s=(plain + cached_bytes) / mib,
        target_ratio=1.2,
        peer="plain forward + cached bytes",
        note=(
            f"XLA memory_analysis (temporaries + outputs): run_with_cache {cached / mib:.2f} MiB,"
            f" plain forward {plain / mib:.2f} MiB, cached values {cached_bytes / mib:.2f} MiB"
        ),
        method="XLA's memory analysis of the compiled programs (deterministic)",
        unit="MiB",
    )


# TransformerLens ---------------------------------------------------------------------


@functools.cache
def _bridge() -> Any:
    _torch()
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers("gpt2", hf_model=_hf(), tokenizer=_tokenizer())


def _torch_metric(logits: Any) -> Any:
    a, b = _answer()
    return logits[0, -1, a] - logits[0, -1, b]


@functools.cache
def _tl_grid() -> np.ndarray:
    torch = _torch()
    from transformer_lens import patching

    bridge = _bridge()
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(torch.tensor(_tokens()["clean"]))
        grid = patching.get_act_patch_resid_pre(
            bridge, torch.tensor(_tokens()["corrupted"]), clean_cache, _torch_metric
        )
    return grid.numpy()


def _tl_zero_head(layer: int, head: int) -> Any:
    def hook(z: Any, hook: Any) -> Any:
        z[:, :, head] = 0.0
        return z

    return (f"blocks.{layer}.attn.hook_z", hook)


@functools.cache
def _tl_head_sweep() -> np.ndarray:
    return _tl_head_sweep_run()


def _tl_head_sweep_run() -> np.ndarray:
    torch = _torch()
    bridge, ids = _bridge(), torch.tensor(_tokens()["clean"])
    out = np.zeros((LAYERS, HEADS), np.float32)
    with torch.no_grad():
        for layer in range(LAYERS):
            for head in range(HEADS):
                logits = bridge.run_with_hooks(ids, fwd_hooks=[_tl_zero_head(layer, head)])
                out[layer, head] = float(_torch_metric(logits))
    return out


def _tl_attribution_run() -> np.ndarray:
    torch = _torch()
    bridge = _bridge()
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(LAYERS)]
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(torch.tensor(_tokens()["clean"]))
    acts: dict[str, Any] = {}

    def keep(name: str) -> Any:
        # Keyed by the name asked for: the hook may report its alias's name.
        def hook(t: Any, hook: Any) -> Any:
            t.retain_grad()
            acts[name] = t
            return t

        return hook

    logits = bridge.run_with_hooks(
        torch.tensor(_tokens()["corrupted"]), fwd_hooks=[(n, keep(n)) for n in names]
    )
    _torch_metric(logits).backward()
    rows = [((clean_cache[n] - acts[n]) * acts[n].grad).sum(-1)[0] for n in names]
    return torch.stack(rows).detach().numpy()


@functools.cache
def _tl_attribution() -> np.ndarray:
    return _tl_attribution_run()


def _tl_run_with_cache():
    torch = _torch()
    bridge, ids = _bridge(), torch.tensor(_tokens()["long"])

    def run():
        with torch.no_grad():
            bridge.run_with_cache(ids)

    return run


def _tl_patch_grid():
    _tl_grid()
    torch = _torch()
    from transformer_lens import patching

    bridge = _bridge()
    clean, corrupted = torch.tensor(_tokens()["clean"]), torch.tensor(_tokens()["corrupted"])

    def run():
        with torch.no_grad():
            _, clean_cache = bridge.run_with_cache(clean)
            patching.get_act_patch_resid_pre(bridge, corrupted, clean_cache, _torch_metric)

    return run


def _tl_head():
    _tl_head_sweep()
    return _tl_head_sweep_run


def _tl_attr():
    _tl_attribution()
    return _tl_attribution_run


# nnsight -----------------------------------------------------------------------------


@functools.cache
def _nnsight() -> Any:
    _torch()
    from nnsight import LanguageModel

    return LanguageModel(_hf(), tokenizer=_tokenizer())


def _nn_run_with_cache():
    torch = _torch()
    lm, ids = _nnsight(), torch.tensor(_tokens()["long"])

    def run():
        # Names assigned inside a trace do not reach this function's locals in
        # nnsight 0.8, so the saved values go into a list made outside it.
        saved: list[Any] = []
        with torch.no_grad(), lm.trace(ids):
            saved.extend([lm.transformer.wte.output.save(), lm.transformer.wpe.output.save()])
            for block in lm.transformer.h:
                saved.extend(
                    [
                        block.ln_1.output.save(),
                        block.attn.output[0].save(),
                        block.ln_2.output.save(),
                        block.mlp.output.save(),
                        block.output.save(),
                    ]
                )
            saved.extend([lm.transformer.ln_f.output.save(), lm.lm_head.output.save()])
        return saved

    saved = run()
    _check(len(saved) == 2 + 5 * LAYERS + 2, "nnsight saved every module output")
    return run


def _nn_patch_grid():
    torch = _torch()
    lm = _nnsight()
    clean, corrupted = torch.tensor(_tokens()["clean"]), torch.tensor(_tokens()["corrupted"])

    def run():
        box: dict[str, Any] = {}
        with torch.no_grad():
            with lm.trace(clean):
                box["inputs"] = [lm.transformer.h[layer].input.save() for layer in range(LAYERS)]
            out = np.zeros((LAYERS, SEQ_PATCH), np.float32)
            for layer in range(LAYERS):
                for pos in range(SEQ_PATCH):
                    with lm.trace(corrupted):
                        lm.transformer.h[layer].input[:, pos] = box["inputs"][layer][:, pos]
                        box["metric"] = _torch_metric(lm.lm_head.output).save()
                    out[layer, pos] = float(box["metric"])
        return out

    _check(np.allclose(run(), _tl_grid(), atol=1e-3), "nnsight patching grid matches TL")
    return run


def _nn_head_sweep():
    torch = _torch()
    lm, ids = _nnsight(), torch.tensor(_tokens()["clean"])
    width = CONFIG["n_embd"] // HEADS

    def run():
        out = np.zeros((LAYERS, HEADS), np.float32)
        box: dict[str, Any] = {}
        with torch.no_grad():
            for layer in range(LAYERS):
                for head in range(HEADS):
                    with lm.trace(ids):
                        proj = lm.transformer.h[layer].attn.c_proj
                        proj.input[:, :, head * width : (head + 1) * width] = 0.0
                        box["metric"] = _torch_metric(lm.lm_head.output).save()
                    out[layer, head] = float(box["metric"])
        return out

    _check(np.allclose(run(), _tl_head_sweep(), atol=1e-3), "nnsight head sweep matches TL")
    return run


def _nn_attribution():
    torch = _torch()
    lm = _nnsight()
    clean, corrupted = torch.tensor(_tokens()["clean"]), torch.tensor(_tokens()["corrupted"])

    def run():
        box: dict[str, Any] = {}
        with torch.no_grad(), lm.trace(clean):
            box["clean"] = [lm.transformer.h[layer].input.save() for layer in range(LAYERS)]
        with lm.trace(corrupted):
            acts = [lm.transformer.h[layer].input for layer in range(LAYERS)]
            box["acts"] = [a.save() for a in acts]
            metric = _torch_metric(lm.lm_head.output)
            with metric.backward():
                # Gradients arrive from the last layer to the first.
                box["grads"] = [acts[layer].grad.save() for layer in reversed(range(LAYERS))][::-1]
        rows = [
            ((c - a) * g).sum(-1)[0] for c, a, g in zip(box["clean"], box["acts"], box["grads"])
        ]
        return torch.stack(rows).detach().numpy()

    _check(np.allclose(run(), _tl_attribution(), atol=1e-3), "nnsight attribution matches TL")
    return run


# The cases -----------------------------------------------------------------------------------


def run() -> list[Result]:
    """Runs every interpretability case (see the module docstring)."""
    cases = [
        (f"run_with_cache 1x{SEQ_CACHE}, all hook points", 1.0, _saikei_run_with_cache,
         _tl_run_with_cache, _nn_run_with_cache),
        (f"residual patching grid {LAYERS}x{SEQ_PATCH} (layer x pos)", 0.25, _saikei_patch_grid,
         _tl_patch_grid, _nn_patch_grid),
        (f"head zero-ablation sweep {LAYERS}x{HEADS} (layer x head), 1x{SEQ_PATCH}", 0.5,
         _saikei_head_sweep, _tl_head, _nn_head_sweep),
        (f"attribution patching {LAYERS}x{SEQ_PATCH} (layer x pos)", 1.0, _saikei_attribution,
         _tl_attr, _nn_attribution),
    ]  # fmt: skip
    results: list[Result] = []
    for name, target, saikei, tl, nns in cases:
        for peer, peer_name in ((tl, TL), (nns, NNSIGHT)):
            results.append(
                compare(name, saikei=saikei, peer=peer, target_ratio=target, peer_name=peer_name)
            )
    try:
        results.append(_memory_case())
    except Exception as exc:  # reported in the results, never hidden
        results.append(Result("peak memory of a cache", None, None, error=repr(exc)))
    return results


if __name__ == "__main__":
    sys.exit(_harness.main_single(run))
