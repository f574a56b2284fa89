"""One script, unchanged, on 1 process x 8 devices and on 2 processes x 4 devices.

The script (`_layout_worker.py`) loads a safetensors model and a llama GGUF file
(with llama.cpp's query/key row interleave and Q8_0 blocks) sharded over a
{"data": 2, "model": 4} mesh and checks every parameter against an unsharded
load; here the two runs' logits are compared with each other and with a plain
single-device forward pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from saikei import sk

gguf = pytest.importorskip("gguf")

# Minutes of compiling on two shared cores; still part of the default suite.
pytestmark = pytest.mark.slow

_WORKER = Path(__file__).with_name("_layout_worker.py")
_TIMEOUT = 300
_TOKENS = (np.arange(4 * 5).reshape(4, 5) * 5 + 1) % 64


def _llama_gguf(path: Path) -> None:
    """A llama GGUF laid out as llama.cpp writes it (q/k rows interleaved per head)."""
    rng = np.random.default_rng(0)
    emb, heads, kv, head_dim, mlp, vocab = 32, 8, 4, 4, 64, 64
    V, Q = gguf.GGUFValueType, gguf.GGMLQuantizationType
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, vtype, value in [
        ("block_count", V.UINT32, 1),
        ("context_length", V.UINT32, 64),
        ("embedding_length", V.UINT32, emb),
        ("feed_forward_length", V.UINT32, mlp),
        ("attention.head_count", V.UINT32, heads),
        ("attention.head_count_kv", V.UINT32, kv),
        ("attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-5),
        ("rope.dimension_count", V.UINT32, head_dim),
        ("vocab_size", V.UINT32, vocab),
    ]:
        writer.add_key_value(f"llama.{key}", value, vtype)
    shapes = {
        "token_embd.weight": (vocab, emb),
        "blk.0.attn_norm.weight": (emb,),
        "blk.0.attn_q.weight": (heads * head_dim, emb),
        "blk.0.attn_k.weight": (kv * head_dim, emb),
        "blk.0.attn_v.weight": (kv * head_dim, emb),
        "blk.0.attn_output.weight": (emb, heads * head_dim),
        "blk.0.ffn_norm.weight": (emb,),
        "blk.0.ffn_gate.weight": (mlp, emb),
        "blk.0.ffn_up.weight": (mlp, emb),
        "blk.0.ffn_down.weight": (emb, mlp),
        "output_norm.weight": (emb,),
        "output.weight": (vocab, emb),
    }
    for name, shape in shapes.items():
        value = rng.normal(size=shape).astype(np.float32) * 0.3
        # Q8_0 blocks: ffn_down is split by columns (whole blocks), the others by rows.
        if name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output.weight"):
            writer.add_tensor(name, gguf.quants.quantize(value, Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from saikei.models.transformer import loading
    from saikei.models.transformer.variants import llamalike

    base = tmp_path_factory.mktemp("layouts")
    config = llamalike.LlamalikeTransformerConfig(
        num_kv_heads=4,
        query_head_multiplier=2,
        embedding_dim=16,
        projection_dim=4,
        mlp_hidden_dim=32,
        num_decoder_blocks=1,
        vocab_size=64,
    )
    loading.save_pretrained(
        llamalike.build_llamalike_transformer(config, jax.random.key(3)), base / "st"
    )
    _llama_gguf(base / "tiny.gguf")
    return base


def _run(command, env) -> None:
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=_TIMEOUT)
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "Gloo" not in line)
    assert proc.returncode == 0, log[-6000:]


def _args(base: Path) -> list[str]:
    return [str(_WORKER), str(base / "st"), str(base / "tiny.gguf"), str(base)]


def _expected(base: Path, name: str, stack: bool) -> np.ndarray:
    from saikei.models.transformer import loading

    path = base / ("st" if name == "safetensors" else "tiny.gguf")
    model = loading.load_pretrained(path, progress=False, use_layer_stack=stack)
    return np.asarray(
        model(sk.nx.wrap(_TOKENS, "batch", "seq")).unwrap("batch", "seq", "vocabulary")
    )


def test_one_process_with_8_devices_and_two_with_4_give_the_same_logits(files):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    _run([sys.executable, *_args(files)], env)
    env.pop("XLA_FLAGS")
    launch = [sys.executable, "-m", "saikei.launch", "-n", "2", "--devices-per-process", "4"]
    _run([*launch, "--timeout", str(_TIMEOUT - 30), *_args(files)], env)
    one, two = np.load(files / "logits_1.npz"), np.load(files / "logits_2.npz")
    assert sorted(one) == sorted(two) and len(one) == 2
    for key in one:
        name, stack = key.split("/")
        expected = _expected(files, name, stack == "True")
        np.testing.assert_allclose(one[key], expected, rtol=1e-5, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(two[key], expected, rtol=1e-5, atol=1e-5, err_msg=key)
