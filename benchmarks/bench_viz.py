"""Visualization: treescope's `render_to_html` on a 32-block transformer-sized model.

Both libraries build the same decoder-shaped model from their own nn layers:
an embedding lookup, then 32 blocks, each a `NamedGroup` holding two
`Residual`s, an attention group (`RMSLayerNorm`, `Attention` with query, key
and value `Linear`s, a scaled `NamedEinsum`, `ApplyCausalAttentionMask`,
`Softmax` and an output `Linear`) and an MLP group (`RMSLayerNorm`, `Affine`,
gelu `Elementwise`, `Linear`), then a final `RMSLayerNorm` and an embedding
decode. Embedding 64, 4 heads of 16, MLP hidden 256, vocabulary 256: 290
Parameters in both.

Cases:

- `treescope.render_to_html(model)` with its defaults (compressed HTML, the
  default expansion strategy), as a notebook cell displaying the model does.
  The note gives the HTML sizes, compressed and not, and their ratio, and
  what the previews of the parameter values take by themselves: numpy's
  text of each array's edge values. Digits hardly compress, so these
  previews are most of the page: penzai prints them with numpy's defaults
  (8 decimals, 3 edge items per axis: 33,160 numbers here), saikei with
  `sk.ts.array_preview_options` (by default 4 decimals, 2 edge items).

Each factory checks, before timing, that its model has the expected
Parameters (count, labels and element total, the same on both sides) and that
the HTML mentions the layer types it should.

Run alone with `python benchmarks/bench_viz.py [--quick]`, or with every other
bench via `python benchmarks/run.py`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import _harness  # first: pins XLA threads before jax starts
from _harness import check as _check
from _harness import penzai_namespace as _penzai
from _harness import saikei_namespace as _saikei

# isort: split
import base64
import re
import zlib

import jax
import numpy as np
import treescope

BLOCKS = 32
EMBEDDING = 64
HEADS = 4
PROJECTION = 16
HIDDEN = 256
VOCAB = 256
# Per block: 2 norms, query/key/value/output weights, MLP up weights + bias, down weights.
PARAMS_PER_BLOCK = 9
N_PARAMETERS = 1 + BLOCKS * PARAMS_PER_BLOCK + 1
N_ELEMENTS = (
    VOCAB * EMBEDDING
    + BLOCKS
    * (
        2 * EMBEDDING
        + 4 * EMBEDDING * HEADS * PROJECTION
        + EMBEDDING * HIDDEN
        + HIDDEN
        + HIDDEN * EMBEDDING
    )
    + EMBEDDING
)


def _attention(lib: ModuleType, name: str, rng: jax.Array) -> Any:
    nn = lib.nn
    heads = {"heads": HEADS, "projection": PROJECTION}

    def project(part: str, rename_to_kv: bool) -> Any:
        layers = [
            nn.Linear.from_config(
                name=f"{name}/{part}",
                init_base_rng=rng,
                input_axes={"embedding": EMBEDDING},
                output_axes=heads,
            )
        ]
        if rename_to_kv:
            layers.append(nn.RenameAxes(old="seq", new="kv_seq"))
        return nn.Sequential(layers)

    return nn.Attention(
        input_to_query=nn.Sequential(
            [*project("query", False).sublayers, nn.ConstantRescale(by=PROJECTION**-0.5)]
        ),
        input_to_key=project("key", True),
        input_to_value=project("value", True),
        query_key_to_attn=nn.Sequential(
            [
                nn.NamedEinsum(
                    (("seq", "heads", "projection"), ("kv_seq", "heads", "projection")),
                    ("seq", "heads", "kv_seq"),
                ),
                nn.ApplyCausalAttentionMask(
                    masked_out_value=-1e9,
                    query_positions_input_name="token_positions",
                    kv_positions_input_name="token_positions",
                    seq_axis="seq",
                    kv_seq_axis="kv_seq",
                ),
                nn.Softmax("kv_seq"),
            ]
        ),
        attn_value_to_output=nn.Sequential(
            [
                nn.NamedEinsum(
                    (("seq", "heads", "kv_seq"), ("kv_seq", "heads", "projection")),
                    ("seq", "heads", "projection"),
                ),
                nn.Linear.from_config(
                    name=f"{name}/output",
                    init_base_rng=rng,
                    input_axes=heads,
                    output_axes={"embedding": EMBEDDING},
                ),
            ]
        ),
    )


def _block(lib: ModuleType, index: int, rng: jax.Array) -> Any:
    nn = lib.nn
    name = f"block_{index}"

    def norm(part: str) -> Any:
        return nn.RMSLayerNorm.from_config(
            name=f"{name}/{part}", init_base_rng=rng, across_axes={"embedding": EMBEDDING}
        )

    attention = nn.NamedGroup(
        "attention", [norm("attention_norm"), _attention(lib, f"{name}/attention", rng)]
    )
    mlp = nn.NamedGroup(
        "mlp",
        [
            norm("mlp_norm"),
            nn.Affine.from_config(
                name=f"{name}/mlp/up",
                init_base_rng=rng,
                input_axes={"embedding": EMBEDDING},
                output_axes={"hidden": HIDDEN},
            ),
            nn.Elementwise(jax.nn.gelu),
            nn.Linear.from_config(
                name=f"{name}/mlp/down",
                init_base_rng=rng,
                input_axes={"hidden": HIDDEN},
                output_axes={"embedding": EMBEDDING},
            ),
        ],
    )
    return nn.NamedGroup(name, [nn.Residual(attention), nn.Residual(mlp)])


def _build(lib: ModuleType) -> Any:
    nn = lib.nn
    rng = jax.random.key(0)
    table = nn.EmbeddingTable.from_config(
        name="embedding",
        init_base_rng=rng,
        vocab_size=VOCAB,
        embedding_axes={"embedding": EMBEDDING},
    )
    keys = jax.random.split(jax.random.key(1), BLOCKS)
    return nn.Sequential(
        [
            nn.EmbeddingLookup(table),
            *[_block(lib, i, keys[i]) for i in range(BLOCKS)],
            nn.RMSLayerNorm.from_config(
                name="final_norm", init_base_rng=rng, across_axes={"embedding": EMBEDDING}
            ),
            nn.EmbeddingDecode(table),
        ]
    )


def _check_model(lib: ModuleType, model: Any) -> None:
    params = lib.unbind_params(model)[1]
    _check(len(params) == N_PARAMETERS, f"{lib.__name__}: {len(params)} != {N_PARAMETERS} params")
    elements = sum(int(np.prod(p.value.data_array.shape)) for p in params)
    _check(elements == N_ELEMENTS, f"{lib.__name__}: {elements} != {N_ELEMENTS} parameter values")
    labels = {p.label for p in params}
    _check(
        "block_31/attention/query.weights" in labels and "embedding.embeddings" in labels,
        f"{lib.__name__}: parameter labels as named",
    )


sizes: dict[str, dict[str, int]] = {}

# numpy's text of an array's values, as treescope shows it in an expanded jax.Array.
_ARRAY_PREVIEW = re.compile(r"Array\(\[.*?dtype=\w+\)", re.DOTALL)


def _compressed_size(text: str) -> int:
    """Size of `text` compressed as treescope compresses its HTML (zlib, base64)."""
    return len(base64.b64encode(zlib.compress(text.encode("utf-8"), zlib.Z_BEST_COMPRESSION)))


def _render_case(lib: ModuleType, side: str) -> Callable[[], str]:
    model = _build(lib)
    _check_model(lib, model)
    uncompressed = treescope.render_to_html(model, compressed=False)
    for expected in ("Attention", "RMSLayerNorm", "NamedEinsum", "block_31"):
        _check(expected in uncompressed, f"{lib.__name__}: HTML mentions {expected}")

    def step() -> str:
        return treescope.render_to_html(model)

    previews = "".join(_ARRAY_PREVIEW.findall(uncompressed))
    sizes[side] = {
        "compressed": len(step()),
        "uncompressed": len(uncompressed),
        "previews compressed": _compressed_size(previews),
    }
    return step


def _size_note() -> str:
    if set(sizes) != {"saikei", "penzai"}:
        return "HTML sizes: n/a (a side failed)"
    parts = []
    for kind in ("compressed", "uncompressed"):
        ours, theirs = sizes["saikei"][kind], sizes["penzai"][kind]
        parts.append(
            f"{kind} saikei {ours / 1024:.0f} KiB vs penzai {theirs / 1024:.0f} KiB"
            f" ({ours / theirs:.2f}x)"
        )
    ours, theirs = (sizes[side]["previews compressed"] for side in ("saikei", "penzai"))
    parts.append(
        f"the parameter value previews alone compress to {ours / 1024:.0f} KiB in saikei's page"
        f" (4 decimals, 2 edge items) and {theirs / 1024:.0f} KiB in penzai's (8 decimals, 3 edge"
        " items)"
    )
    return "HTML size " + "; ".join(parts)


def run() -> list[_harness.Result]:
    """Measures the render_to_html case; see the module docstring."""
    sizes.clear()
    name = (
        f"treescope.render_to_html ({BLOCKS}-block transformer-shaped model, "
        f"{N_PARAMETERS} Parameters)"
    )
    result = _harness.compare(
        name,
        saikei=lambda: _render_case(_saikei(), "saikei"),
        peer=lambda: _render_case(_penzai(), "penzai"),
        target_ratio=0.5,
    )
    note = f"default compressed HTML, default expansion; {_size_note()}"
    result = _harness.Result(**{**result.__dict__, "note": note})
    print(
        f"  {name}: saikei {_harness.format_seconds(result.saikei_s)}, "
        f"penzai {_harness.format_seconds(result.peer_s)}; {_size_note()}",
        flush=True,
    )
    return [result, _size_result()]


def _size_result() -> _harness.Result:
    """The compressed HTML's size as a row of its own (KiB in the time columns)."""
    name = f"render_to_html output size ({BLOCKS}-block model, compressed HTML)"
    if set(sizes) != {"saikei", "penzai"}:
        return _harness.Result(name, None, None, target_ratio=0.5, error="a side failed")
    kib = 1024.0
    return _harness.Result(
        name,
        saikei_s=sizes["saikei"]["compressed"] / kib,
        peer_s=sizes["penzai"]["compressed"] / kib,
        target_ratio=0.5,
        note="the render_to_html row's note splits the size up",
        method="the size of one rendering per side (deterministic)",
        unit="KiB",
    )


if __name__ == "__main__":
    sys.exit(_harness.main_single(run))
