"""The `saikei inspect` report: one self-contained HTML page laid out from an `Inspection`.

Everything is inline: the page's CSS, treescope's own scripts (each treescope
rendering carries its runtime) and the data of its figures. The page loads
nothing from the network, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import treescope

from saikei import viz
from saikei.cli._inspection import Inspection
from saikei.core import named_axes as nx

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330;
  background: #f6f7f9; }
header { background: #1f3a2e; color: #f1f5f2; padding: 18px 28px; }
header h1 { margin: 0 0 6px; font-size: 22px; font-weight: 600; }
header .sub { opacity: 0.85; font-size: 14px; }
nav { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid #dde1e6;
  padding: 8px 28px; font-size: 14px; }
nav a { margin-right: 18px; color: #1f5c46; text-decoration: none; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; margin: 18px 0; overflow-x: auto;
  padding: 14px 20px; }
section h2 { font-size: 18px; margin: 4px 0 10px; }
p.note { color: #555e6b; font-size: 13px; margin: 4px 0 10px; }
.facts-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr));
  gap: 0 28px; align-items: start; }
table.facts td { padding: 3px 14px 3px 0; font-size: 14px; vertical-align: top; }
table.facts td:first-child { color: #555e6b; white-space: nowrap; }
.tokens { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 15px;
  line-height: 2.0; white-space: pre-wrap; word-break: break-word; }
.tok { border-radius: 3px; padding: 1px 0; margin: 0 1px; }
.tok.prompt { border-bottom: 2px dotted #7b8794; }
.tok.new { border-bottom: 2px solid #1f5c46; }
.legend { display: inline-block; width: 220px; height: 12px; vertical-align: middle;
  border: 1px solid #ccc; margin: 0 6px; }
.scroll { overflow-x: auto; }
table.lens { border-collapse: collapse; font-family: ui-monospace, Menlo, monospace;
  font-size: 11px; }
table.lens th, table.lens td { border: 1px solid #eceff2; padding: 2px 4px; white-space: pre;
  max-width: 90px; overflow: hidden; text-overflow: ellipsis; }
table.lens th { background: #f1f3f5; position: sticky; top: 0; }
table.lens th.row { position: sticky; left: 0; text-align: right; max-width: none; }
table.lens td.hit { font-weight: 700; outline: 1px solid #1f5c46; }
.heads { display: flex; flex-wrap: wrap; gap: 28px; }
table.top { border-collapse: collapse; font-size: 14px; }
table.top th, table.top td { padding: 3px 12px; border-bottom: 1px solid #eceff2; text-align: left; }
.bar { display: inline-block; height: 10px; background: #2f7d5d; vertical-align: middle; }
footer { color: #555e6b; font-size: 12px; padding: 0 28px 28px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _visible(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")


def _mix(low: tuple[int, int, int], high: tuple[int, int, int], t: float) -> str:
    r, g, b = (round(a + (c - a) * t) for a, c in zip(low, high))
    return f"#{r:02x}{g:02x}{b:02x}"


def surprise_color(logprob: float) -> str:
    """Background colour of a token: white when expected (log p near 0), red when surprising.

    Example:
      >>> from saikei.cli import surprise_color
      >>> surprise_color(0.0), surprise_color(-20.0)
      ('#f2fbf4', '#e0533d')
    """
    if math.isnan(logprob):
        return "#eef0f3"
    t = min(1.0, max(0.0, -logprob / 8.0))
    if t < 0.5:
        return _mix((242, 251, 244), (253, 212, 158), t / 0.5)
    return _mix((253, 212, 158), (224, 83, 61), (t - 0.5) / 0.5)


def _continuation(result: Inspection) -> str:
    spans = []
    for i, (text, logprob) in enumerate(zip(result.token_texts, result.logprobs)):
        kind = "prompt" if i < result.num_prompt else "new"
        top = ", ".join(f"{_visible(t)!r} {p:.2f}" for t, p in result.top_next[i])
        if math.isnan(logprob):
            about = "first token (no prediction)"
        else:
            about = f"log p = {logprob:.2f} (p = {math.exp(logprob):.3f})"
        title = f"#{i} {_visible(text)!r} id {result.token_ids[i]}, {kind}: {about}; next: {top}"
        shown = text.replace("\n", "⏎\n") or "∅"
        spans.append(
            f'<span class="tok {kind}" style="background:{surprise_color(float(logprob))}"'
            f' title="{_e(title)}">{_e(shown)}</span>'
        )
    legend = (
        '<span class="legend" style="background:linear-gradient(90deg,'
        f'{surprise_color(0)},{surprise_color(-4)},{surprise_color(-8)})"></span>'
    )
    new = len(result.token_ids) - result.num_prompt
    return (
        f'<p class="note">The prompt (dotted underline) and {new} greedily generated tokens'
        " (solid underline). Each token is coloured by the log-probability the model gave it"
        f" before seeing it: log p = 0 {legend} log p &le; -8. Hover a token for its"
        " probability and the model's top guesses for the next one.</p>"
        f'<div class="tokens">{"".join(spans)}</div>'
    )


def _labels(result: Inspection) -> list[str]:
    return [f"{i} {_visible(t)!r}" for i, t in enumerate(result.token_texts)]


def _attention(result: Inspection) -> str:
    layers, heads, _, _ = result.patterns.shape
    patterns = nx.wrap(result.patterns, "layer", "heads", "seq", "kv_seq")
    figure = viz.attention_pattern(patterns, _labels(result), title=None)
    return (
        f'<p class="note">Attention weights of every layer ({layers}) and head ({heads}) on the'
        " prompt and its continuation (<code>sk.ts.attention_pattern</code>): row = the token"
        " attending, column = the token attended to. Move the sliders to change layer and"
        " head; hover a cell for its tokens and weight. The top heads below are good places"
        " to start.</p>" + viz.render_to_html(figure)
    )


def _lens_label(name: str) -> str:
    # "blocks.3.resid_pre" -> "block 3 in", "blocks.29.resid_post" -> "block 29 out"
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] in ("resid_pre", "resid_post"):
        return f"block {parts[1]} {'in' if parts[2] == 'resid_pre' else 'out'}"
    return name


def _lens(result: Inspection) -> str:
    seq = len(result.token_ids)
    head = "".join(f"<th title='{_e(t)}'>{_e(_visible(t))}</th>" for t in result.token_texts)
    rows = []
    for label, ids, probs, texts in zip(
        result.lens_labels, result.lens_ids, result.lens_probs, result.lens_texts
    ):
        cells = []
        for pos in range(seq):
            p = float(probs[pos])
            hit = pos + 1 < seq and int(ids[pos]) == result.token_ids[pos + 1]
            color = _mix((255, 255, 255), (110, 160, 220), min(1.0, p))
            title = f"{label} at #{pos}: top token {_visible(texts[pos])!r} p={p:.3f}"
            cells.append(
                f'<td{" class=hit" if hit else ""} style="background:{color}"'
                f' title="{_e(title)}">{_e(_visible(texts[pos]))}</td>'
            )
        rows.append(
            f'<tr><th class="row" title="{_e(label)}">{_e(_lens_label(label))}</th>'
            f"{''.join(cells)}</tr>"
        )
    return (
        '<p class="note">The logit lens: the residual stream entering each block (and leaving'
        " the last), put through the final norm and the unembedding, shows what the model"
        " would predict if it stopped there. Each cell is the top token for the position in"
        " the column header; blue is its probability; a bold outline marks the token that"
        " actually comes next.</p>"
        f'<div class="scroll"><table class="lens"><tr><th class="row">residual</th>{head}</tr>'
        f"{''.join(rows)}</table></div>"
    )


def top_heads(scores: np.ndarray, count: int) -> list[tuple[int, int, float]]:
    """The `count` highest `(layer, head, score)` of a `[layer, heads]` grid, best first.

    Example:
      >>> import numpy as np
      >>> from saikei.cli import top_heads
      >>> top_heads(np.array([[0.1, 0.9], [0.5, 0.2]]), 2)
      [(0, 1, 0.9), (1, 0, 0.5)]
    """
    order = np.argsort(-scores, axis=None, kind="stable")[:count]
    return [
        (int(i // scores.shape[1]), int(i % scores.shape[1]), float(scores.flat[i])) for i in order
    ]


def _head_table(title: str, scores: np.ndarray, count: int) -> str:
    rows = "".join(
        f"<tr><td>{layer}</td><td>{head}</td><td>{score:.3f}</td>"
        f'<td><span class="bar" style="width:{round(120 * max(0.0, score))}px"></span></td></tr>'
        for layer, head, score in top_heads(scores, count)
    )
    return (
        f'<div><h3>{_e(title)}</h3><table class="top"><tr><th>layer</th><th>head</th>'
        f"<th>score</th><th></th></tr>{rows}</table></div>"
    )


def _score_grid(scores: np.ndarray, title: str) -> str:
    layers, heads = scores.shape
    figure = viz.heatmap(
        nx.wrap(scores.astype(np.float32), "layer", "heads"),
        row_labels=[f"layer {i}" for i in range(layers)],
        col_labels=[f"head {i}" for i in range(heads)],
        vmin=0.0,
        title=title,
    )
    return viz.render_to_html(figure)


def _heads(result: Inspection, count: int) -> str:
    return (
        '<p class="note">Previous-token score: mean attention from each token of the prompt'
        " and continuation to the token just before it. Induction score: on a random token"
        f" sequence repeated twice (period {result.induction_period}), mean attention from"
        " each token of the second copy to the token after its first occurrence (the"
        " signature of induction heads, which continue patterns seen earlier in the"
        ' context).</p><div class="heads">'
        + _head_table("Top induction heads", result.induction_scores, count)
        + _head_table("Top previous-token heads", result.previous_token_scores, count)
        + "</div><div class='heads'><div>"
        + _score_grid(result.induction_scores, "Induction score (layer x head)")
        + "</div><div>"
        + _score_grid(result.previous_token_scores, "Previous-token score (layer x head)")
        + "</div></div>"
    )


def _model_tree(lm: Any) -> str:
    # Collapsed to the root; a click on the ▶ marker unfolds one level.
    with (
        treescope.using_expansion_strategy(max_height=1, relax_for_only_child=False),
        treescope.abbreviation_threshold.set_scoped(1),
    ):
        tree = treescope.render_to_html(lm, compressed=True)
    return (
        '<p class="note">The model itself, as the saikei data structure it is (the same'
        " rendering as <code>sk.ts.show(lm)</code> in a notebook). Click a &#9654; marker to"
        " unfold a node.</p>" + tree
    )


def report_html(
    result: Inspection,
    lm: Any,
    facts: Mapping[str, str],
    *,
    prompt: str,
    title: str,
    top: int = 10,
    footer: str = "",
) -> str:
    """The whole report page as one HTML string (self-contained; no network).

    Args:
      result: What `inspect_model` measured.
      lm: The model, rendered as a collapsed treescope tree.
      facts: Label -> text, for the facts table (see `model_facts`).
      prompt: The prompt text, shown in the header.
      title: The page's title (e.g. the model's name).
      top: How many heads each top-heads table lists.
      footer: A line for the page's foot (e.g. timings).

    Example:
      >>> import jax, tokenizers
      >>> from pathlib import Path
      >>> from saikei.cli import inspect_model, model_facts, report_html
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
      ...     {f"w{i}": i for i in range(11)}, "w0"))
      >>> result = inspect_model(lm, tok, [1, 2, 3], max_new_tokens=3)
      >>> page = report_html(result, lm, model_facts(lm, {"model_type": "llama"}, Path("t")),
      ...     prompt="w1 w2 w3", title="tiny")
      >>> page.startswith("<!DOCTYPE html>") and "Logit lens" in page
      True
    """
    items = list(facts.items())
    half = (len(items) + 1) // 2
    facts_html = "".join(
        '<table class="facts">'
        + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in part)
        + "</table>"
        for part in (items[:half], items[half:])
    )
    sections = [
        ("facts", "Model facts", f'<div class="facts-grid">{facts_html}</div>'),
        ("continuation", "Greedy continuation", _continuation(result)),
        ("attention", "Attention patterns", _attention(result)),
        ("logit-lens", "Logit lens", _lens(result)),
        ("heads", "Induction and previous-token heads", _heads(result, top)),
        ("model", "The model", _model_tree(lm)),
    ]
    nav = "".join(f'<a href="#{key}">{_e(name)}</a>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{_e(name)}</h2>{content}</section>'
        for key, name, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>saikei inspect: {_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>saikei inspect: {_e(title)}</h1>"
        f'<div class="sub">prompt: {_e(repr(prompt))}</div></header>'
        f"<nav>{nav}</nav><main>{body}</main><footer>{_e(footer)}</footer></body></html>\n"
    )


def write_report(page: str, path: str | os.PathLike[str]) -> Path:
    """Writes `page` to `path` atomically (creating its folder); returns the path.

    Example:
      >>> import os, tempfile
      >>> from saikei.cli import write_report
      >>> path = write_report("<p>hi</p>", os.path.join(tempfile.mkdtemp(), "a", "r.html"))
      >>> path.read_text()
      '<p>hi</p>'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
