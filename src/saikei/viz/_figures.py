"""Figures for interpretability: attention patterns and labelled heatmaps.

`attention_pattern` and `heatmap` return a `Figure`: a self-contained piece of
HTML (its data, styles and script inline, nothing fetched from the network)
that shows a grid of values with labels on both axes, and a slider (or a grid
of panels) for every other axis, e.g. layer and head. A `Figure` displays
itself in notebooks (`_repr_html_`, which treescope also uses), and
`render_to_html` returns its HTML.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import treescope
from treescope import lowering

from saikei.core import named_axes
from saikei.viz._figures_js import RENDERER_JS, STYLE

__all__ = ["Figure", "attention_pattern", "heatmap", "render_to_html"]

_ids = itertools.count()
_LAYOUTS = ("slider", "grid")


class Figure:
    """A self-contained HTML figure made by `attention_pattern` or `heatmap`.

    Attributes:
      spec: What the browser draws (labels, axis names, colour range, values).

    Example:
      >>> import numpy as np
      >>> from saikei import viz
      >>> fig = viz.heatmap(np.eye(2), row_labels=["a", "b"], col_labels=["x", "y"])
      >>> "<canvas" in fig.to_html() or "saikeiFigure" in fig.to_html()
      True
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def to_html(self) -> str:
        """The figure as an HTML fragment (a `<div>`, its style and its script)."""
        spec = dict(self.spec, id=f"saikei-figure-{next(_ids)}-{id(self):x}")
        # "</" is escaped so that no label can close the script element.
        data = json.dumps(spec).replace("</", "<\\/")
        return (
            f"<style>{STYLE}</style>"
            f'<div class="saikei-figure" id="{spec["id"]}"></div>'
            f"<script>{RENDERER_JS}</script>"
            f"<script>window.__saikeiFigure({data});</script>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        dims = [f"{axis['name']}={len(axis['labels'])}" for axis in self.spec["stack"]]
        shape = [
            f"{self.spec['rows']['name']}={len(self.spec['rows']['labels'])}",
            f"{self.spec['cols']['name']}={len(self.spec['cols']['labels'])}",
        ]
        title = self.spec.get("title") or "figure"
        return f"<saikei Figure {title!r}: {', '.join(dims + shape)}>"


def render_to_html(
    value: Any,
    roundtrip_mode: bool = False,
    ignore_exceptions: bool = False,
    compressed: bool = True,
) -> str:
    """Renders a value, or a figure, to self-contained HTML.

    A saikei `Figure` gives its own HTML; a treescope figure (e.g. from
    `render_array`) renders as the figure itself rather than as a tree of
    its attributes; anything else renders as treescope renders it.

    Args:
      value: The value or figure.
      roundtrip_mode: Render values as source that evaluates back to them.
      ignore_exceptions: Fall back to a plain repr when a handler fails.
      compressed: Compress treescope's embedded JavaScript.

    Returns:
      The HTML, to write to a file or hand to a notebook.

    Example:
      >>> import numpy as np
      >>> from saikei import viz
      >>> fig = viz.render_array(np.arange(6).reshape(2, 3))
      >>> "treescope" in viz.render_to_html(fig)
      True
    """
    if isinstance(value, Figure):
        return value.to_html()
    part = getattr(value, "treescope_part", None)
    if part is not None and type(value).__module__.startswith("treescope"):
        return lowering.render_to_html_as_root(
            part, roundtrip=roundtrip_mode, compressed=compressed
        )
    return treescope.render_to_html(
        value,
        roundtrip_mode=roundtrip_mode,
        ignore_exceptions=ignore_exceptions,
        compressed=compressed,
    )


# Building the figures ------------------------------------------------------------------


def _encode(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def _labels(given: Any, size: int, what: str) -> list[str]:
    if given is None:
        return [str(i) for i in range(size)]
    # Line breaks and tabs would vanish from a label; show them.
    labels = [str(x).replace("\n", "\u23ce").replace("\t", "\u21e5") for x in given]
    if len(labels) != size:
        raise ValueError(f"{what}: got {len(labels)} labels for an axis of size {size}.")
    return labels


def _as_named(array: Any, default_names: Sequence[str], where: str) -> Any:
    """A NamedArray with only named axes; plain arrays take the last `default_names`."""
    if isinstance(array, named_axes.NamedArrayBase):
        if array.positional_shape:
            raise ValueError(
                f"{where}: the array has positional axes {array.positional_shape}"
                f" (named_shape {array.named_shape}); name them with `.tag(...)` first."
            )
        return array
    data = np.asarray(array)
    if data.ndim > len(default_names) or data.ndim < 1:
        raise ValueError(
            f"{where}: a plain array needs 1 to {len(default_names)} axes, read as"
            f" {tuple(default_names[-max(data.ndim, 1) :])}; got shape {data.shape}. Pass a"
            " NamedArray to say which axis is which."
        )
    return named_axes.wrap(data).tag(*default_names[len(default_names) - data.ndim :])


def _drop_unit_axes(array: Any, keep: set[Hashable], where: str) -> Any:
    extra = {n: s for n, s in array.named_shape.items() if n not in keep}
    big = {n: s for n, s in extra.items() if s != 1}
    if big:
        first = next(iter(big))
        raise ValueError(
            f"{where}: the array has axes {big} that the figure cannot show (it shows"
            f" {sorted(map(str, keep))}). Pick one entry, e.g. `array[{{{first!r}: 0}}]`."
        )
    return array[{n: 0 for n in extra}] if extra else array


def _values(array: Any, order: Sequence[Hashable]) -> np.ndarray:
    return np.asarray(array.unwrap(*order), dtype=np.float32)


def _check_layout(layout: str, where: str) -> None:
    if layout not in _LAYOUTS:
        raise ValueError(f"{where}: layout must be one of {_LAYOUTS}, got {layout!r}.")


def _cell_size(cell_size: int | None, rows: int, cols: int, panels: int) -> int:
    if cell_size is not None:
        if not isinstance(cell_size, int) or cell_size < 1:
            raise ValueError(f"cell_size must be a positive int, got {cell_size!r}.")
        return cell_size
    biggest = max(rows, cols)
    size = 28 if biggest <= 16 else 18 if biggest <= 32 else 12 if biggest <= 64 else 7
    size = size if biggest <= 160 else 3
    return max(2, size // 2) if panels > 1 else size


def attention_pattern(
    pattern: Any,
    tokens: Sequence[Any] | None = None,
    *,
    key_tokens: Sequence[Any] | None = None,
    layer_axis: Hashable = "layer",
    head_axis: Hashable = "heads",
    query_axis: Hashable = "seq",
    key_axis: Hashable = "kv_seq",
    layout: str = "slider",
    title: str | None = "Attention pattern",
    cell_size: int | None = None,
) -> Figure:
    """Shows attention weights with the tokens on both axes, per layer and head.

    Rows are query positions, columns key positions, each labelled with its
    token; a slider picks the layer and the head (`layout="slider"`), or every
    (layer, head) pair gets its own panel (`layout="grid"`). Hovering a cell
    shows the query, the key and the weight.

    Args:
      pattern: A NamedArray with `query_axis` and `key_axis` and, optionally,
        `layer_axis` and `head_axis` (e.g. `cache["blocks.0.attn.pattern"]` or
        `cache.stack("attn.pattern")`); other axes must have size 1. A plain
        array is read as `(layer, heads, seq, kv_seq)` from the right.
      tokens: Labels of the query positions (strings, or token ids).
      key_tokens: Labels of the key positions; defaults to `tokens` when the
        two axes have the same size.
      layer_axis, head_axis, query_axis, key_axis: The axis names.
      layout: "slider" or "grid".
      title: Shown above the figure (None for none).
      cell_size: Pixels per cell; chosen from the size by default.

    Returns:
      A `Figure`.

    Example:
      >>> import numpy as np
      >>> from saikei import sk
      >>> weights = sk.nx.wrap(np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None], "seq", "kv_seq")
      >>> sk.ts.attention_pattern(weights, ["The", " cat", " sat"])
      <saikei Figure 'Attention pattern': query=3, key=3>
    """
    where = "attention_pattern"
    _check_layout(layout, where)
    names = (layer_axis, head_axis, query_axis, key_axis)
    array = _as_named(pattern, names, where)
    shape = array.named_shape
    for axis in (query_axis, key_axis):
        if axis not in shape:
            raise ValueError(
                f"{where}: the pattern has no {axis!r} axis (named_shape {shape}); name the"
                " query and key axes with query_axis= and key_axis=."
            )
    array = _drop_unit_axes(array, set(names), where)
    shape = array.named_shape
    stack_axes = [axis for axis in (layer_axis, head_axis) if axis in shape]
    queries, keys = shape[query_axis], shape[key_axis]
    row_labels = _labels(tokens, queries, f"{where}: tokens")
    if key_tokens is None and tokens is not None and keys == queries:
        key_tokens = tokens
    col_labels = _labels(key_tokens, keys, f"{where}: key_tokens")
    values = _values(array, [*stack_axes, query_axis, key_axis])
    panels = int(np.prod([shape[a] for a in stack_axes])) if layout == "grid" else 1
    stack_names = {layer_axis: "layer", head_axis: "head"}
    return Figure(
        {
            "title": title,
            "layout": layout,
            "rows": {"name": "query", "labels": row_labels},
            "cols": {"name": "key", "labels": col_labels},
            "stack": [
                {"name": stack_names[a], "labels": [str(i) for i in range(shape[a])]}
                for a in stack_axes
            ],
            "vmin": 0.0,
            "vmax": float(max(1.0, np.nanmax(values))) if values.size else 1.0,
            "diverging": False,
            "cell": _cell_size(cell_size, queries, keys, panels),
            "values": _encode(values),
        }
    )


def heatmap(
    grid: Any,
    row_labels: Sequence[Any] | None = None,
    col_labels: Sequence[Any] | None = None,
    *,
    rows: Hashable | None = None,
    cols: Hashable | None = None,
    around_zero: bool | str = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    layout: str = "slider",
    title: str | None = None,
    cell_size: int | None = None,
) -> Figure:
    """Shows a grid of numbers (a patching grid, head scores) with labelled axes.

    Args:
      grid: A NamedArray (or a plain 2-D array). `rows` and `cols` name the
        axes shown down and across (by default its first two axes); every
        other axis gets a slider (or a panel each, with `layout="grid"`).
      row_labels: Labels of the rows (e.g. layer numbers); default: indices.
      col_labels: Labels of the columns (e.g. tokens, heads); default: indices.
      rows, cols: Axis names shown as rows and columns.
      around_zero: Use a diverging blue-white-red scale centred on 0; "auto"
        does so when the values have both signs.
      vmin, vmax: The colour range; by default the data's range (symmetric
        around 0 for a diverging scale).
      layout: "slider" or "grid", for the other axes.
      title: Shown above the figure.
      cell_size: Pixels per cell; chosen from the size by default.

    Returns:
      A `Figure`.

    Example:
      >>> import numpy as np
      >>> from saikei import sk
      >>> grid = sk.nx.wrap(np.array([[0.1, -0.2], [0.9, 0.0]]), "layer", "seq")
      >>> sk.ts.heatmap(grid, col_labels=["The", " cat"], title="Patching")
      <saikei Figure 'Patching': layer=2, seq=2>
    """
    where = "heatmap"
    _check_layout(layout, where)
    array = _as_named(grid, ("rows", "cols"), where)
    order = list(array.named_shape)
    if len(order) < 2:
        raise ValueError(
            f"{where}: the grid needs two axes, got named_shape {array.named_shape}; for one"
            " row, add an axis of size 1 (e.g. `sk.nx.wrap(values[None], 'row', 'seq')`)."
        )
    rows = order[0] if rows is None else rows
    cols = next(a for a in order if a != rows) if cols is None else cols
    shape = array.named_shape
    for axis, what in ((rows, "rows"), (cols, "cols")):
        if axis not in shape:
            raise ValueError(f"{where}: {what}={axis!r} is not an axis of the grid {shape}.")
    if rows == cols:
        raise ValueError(f"{where}: rows and cols are both {rows!r}; pick two different axes.")
    stack_axes = [a for a in order if a not in (rows, cols)]
    values = _values(array, [*stack_axes, rows, cols])
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 1.0
    diverging = (low < 0 < high) if around_zero == "auto" else bool(around_zero)
    if diverging:
        bound = max(abs(low), abs(high)) or 1.0
        low, high = -bound, bound
    low = low if vmin is None else float(vmin)
    high = high if vmax is None else float(vmax)
    panels = int(np.prod([shape[a] for a in stack_axes])) if layout == "grid" else 1
    return Figure(
        {
            "title": title,
            "layout": layout,
            "rows": {
                "name": str(rows),
                "labels": _labels(row_labels, shape[rows], f"{where}: row_labels"),
            },
            "cols": {
                "name": str(cols),
                "labels": _labels(col_labels, shape[cols], f"{where}: col_labels"),
            },
            "stack": [
                {"name": str(a), "labels": [str(i) for i in range(shape[a])]} for a in stack_axes
            ],
            "vmin": low,
            "vmax": high if high > low else low + 1.0,
            "diverging": diverging,
            "cell": _cell_size(cell_size, shape[rows], shape[cols], panels),
            "values": _encode(values),
        }
    )
