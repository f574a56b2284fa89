"""Token arrays as text: each token id shown as what it decodes to, optionally coloured by a score.

`show_token_array(tokens, tokenizer)` lays token ids out as their text with a
"digitbox" of the id; `show_token_scores(tokens, scores, tokenizer)` colours
each token's text by its score (diverging colormap around zero). Tokens may be
NamedArrays (axes addressed by name), jax arrays or numpy arrays; the tokenizer
may be a Hugging Face `tokenizers.Tokenizer` or `transformers` tokenizer, a
SentencePiece processor, a list of strings or a callable (see
`saikei.viz._arrays_api.TokenLookup`).

The `render_*` functions return the treescope figure and the `*_html`
functions its standalone HTML; the `show_*` functions display the figure in
IPython, or print its text form elsewhere.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from treescope import figures, lowering

from saikei.core.named_axes import NamedArray
from saikei.viz import integer_digitbox, text_on_color
from saikei.viz._arrays_api import TokenLookup

__all__ = [
    "SentencePieceProcessorLike",
    "render_token_array",
    "render_token_scores",
    "show_token_array",
    "show_token_scores",
    "token_array_html",
    "token_scores_html",
]

_SPECIAL_COLOR = "#999999"


class SentencePieceProcessorLike(Protocol):
    """What a SentencePiece-style tokenizer offers (penzai's tokenizer protocol).

    A `sentencepiece.SentencePieceProcessor` has these methods; any object
    with them can be passed as the `tokenizer` of the functions here (which
    also accept Hugging Face tokenizers, lists of strings and callables).

    Example:
      >>> class Pieces:
      ...   def GetPieceSize(self): return 2
      ...   def IdToPiece(self, id): return ["<s>", "hi"][id]
      ...   def IsControl(self, id): return id == 0
      >>> render_token_array([0, 1], Pieces()) is not None
      True
    """

    def GetPieceSize(self) -> int:
        """The vocabulary size."""
        ...

    def IdToPiece(self, id: int) -> str:  # noqa: A002
        """The text of token `id`."""
        ...

    def IsControl(self, id: int) -> bool:  # noqa: A002
        """Whether token `id` is a control token (shown greyed out)."""
        ...


def _axes_and_data(array: Any, what: str) -> tuple[list[Hashable], np.ndarray]:
    """Axis keys (names, or positional indices) and the host data of an array."""
    if isinstance(array, NamedArray):
        data = array.data_array
        names = (None,) * (data.ndim - len(array.axis_names)) + tuple(array.axis_names)
        keys: list[Hashable] = []
        position = 0
        for name in names:
            if name is None:
                keys.append(position)
                position += 1
            else:
                keys.append(name)
    else:
        data = array
        if not hasattr(data, "shape"):
            data = np.asarray(data)
        keys = list(range(len(data.shape)))
    if isinstance(data, jax.core.Tracer) or not hasattr(data, "__array__"):
        raise TypeError(
            f"{what} must hold concrete values (a NamedArray, jax.Array or np.ndarray);"
            f" got {type(data).__name__}. Call this outside of jit."
        )
    return keys, np.asarray(data)


def _default_order(keys: Sequence[Hashable]) -> list[Hashable]:
    # Tokens read along the sequence, so `seq` (if present) goes last.
    order = [k for k in keys if k != "seq"]
    return [*order, "seq"] if "seq" in keys else order


def _in_order(
    keys: list[Hashable], data: np.ndarray, order: Sequence[Hashable], what: str
) -> np.ndarray:
    missing = [k for k in order if k not in keys]
    if missing or len(set(order)) != len(order) or len(order) != len(keys):
        if not missing and len(order) == len(keys):
            raise ValueError(f"axis_name_order {list(order)} repeats an axis.")
        raise ValueError(
            f"axis_name_order {list(order)} must list every axis of {what} exactly once;"
            f" {what} has axes {keys}."
        )
    return np.transpose(data, [keys.index(k) for k in order])


def _scores_like(
    scores: Any, token_keys: list[Hashable], token_shape: tuple[int, ...]
) -> tuple[list[Hashable], np.ndarray]:
    keys, data = _axes_and_data(scores, "scores")
    extra = [k for k in keys if k not in token_keys]
    if extra:
        raise ValueError(
            f"scores have axes {extra} that the tokens (axes {token_keys}) do not have;"
            " scores must have the tokens' axes (missing axes broadcast)."
        )
    expanded = np.transpose(data, [keys.index(k) for k in token_keys if k in keys])
    expanded = expanded.reshape(
        tuple(data.shape[keys.index(k)] if k in keys else 1 for k in token_keys)
    )
    try:
        return token_keys, np.broadcast_to(expanded, token_shape)
    except ValueError:
        raise ValueError(
            f"scores of shape {dict(zip(keys, data.shape))} do not broadcast to the tokens"
            f" of shape {dict(zip(token_keys, token_shape))}."
        ) from None


def _visible(text: str) -> str:
    # Line breaks and tabs would break the one-line-per-row layout.
    return text.replace("\n", "⏎").replace("\t", "⇥")


def _layout(
    cells: np.ndarray, order: Sequence[Hashable], shape: tuple[int, ...]
) -> figures.TreescopeFigure:
    """Nests rows: the last axis runs horizontally, outer axes are labelled blocks."""
    if len(shape) <= 1:
        return figures.inline(*cells.reshape(-1).tolist(), wrap=True)
    outer, rest = order[0], order[1:]
    label = outer if isinstance(outer, str) else f"axis {outer}"
    rows = []
    for index in range(shape[0]):
        sub = _layout(cells[index], rest, shape[1:])
        rows.append(
            figures.inline(
                figures.with_color(f"{label}={index}: ", _SPECIAL_COLOR),
                sub if len(shape) == 2 else figures.inline("\n", figures.indented(sub)),
                "\n",
            )
        )
    return figures.inline(*rows)


def _prepare(
    tokens: Any, axis_name_order: Sequence[Hashable] | None
) -> tuple[list[Hashable], np.ndarray, list[Hashable]]:
    keys, data = _axes_and_data(tokens, "tokens")
    if not np.issubdtype(data.dtype, np.integer):
        raise TypeError(f"tokens must be integer token ids; got dtype {data.dtype}.")
    order = list(axis_name_order) if axis_name_order is not None else _default_order(keys)
    return keys, data, order


def render_token_array(
    tokens: Any, tokenizer: Any, axis_name_order: Sequence[Hashable] | None = None
) -> figures.TreescopeFigure:
    """Renders token ids as their text, each with a digitbox of its id.

    Special tokens (padding, BOS, ...) are dimmed. The last axis of
    `axis_name_order` runs horizontally; outer axes become labelled rows.

    Args:
      tokens: Integer token ids: a NamedArray, jax.Array or np.ndarray.
      tokenizer: A Hugging Face / transformers tokenizer, SentencePiece
        processor, list of strings or callable (see `TokenLookup`).
      axis_name_order: Order of the axes (names for named axes, indices for
        positional ones). Defaults to the data's order with `seq` last.

    Returns:
      A treescope figure (displays itself in IPython).

    Example:
      >>> import numpy as np
      >>> from saikei.toolshed import token_visualization as tv
      >>> fig = tv.render_token_array(np.array([1, 2]), ["<pad>", "hi", "there"])
      >>> "there" in tv.token_array_html(np.array([1, 2]), ["<pad>", "hi", "there"])
      True
    """
    lookup = TokenLookup(tokenizer)
    keys, data, order = _prepare(tokens, axis_name_order)
    data = _in_order(keys, data, order, "tokens")
    cells = np.empty(data.shape, dtype=object)
    for index, token_id in np.ndenumerate(data):
        text = _visible(lookup.text(int(token_id)))
        word: Any = text
        if lookup.is_special(int(token_id)) or not lookup.in_range(int(token_id)):
            word = figures.with_color(text, _SPECIAL_COLOR)
        cells[index] = figures.inline(integer_digitbox(int(token_id)), word, " ")
    return _layout(cells, order, data.shape)


def render_token_scores(
    tokens: Any,
    scores: Any,
    tokenizer: Any,
    axis_name_order: Sequence[Hashable] | None = None,
    vmax: float | None = None,
) -> figures.TreescopeFigure:
    """Renders token ids as their text on a background coloured by a score.

    Args:
      tokens: Integer token ids: a NamedArray, jax.Array or np.ndarray.
      scores: A score per token, with the tokens' axes (by name for
        NamedArrays, by position otherwise; missing axes broadcast).
      tokenizer: As for `render_token_array`.
      axis_name_order: As for `render_token_array`.
      vmax: Score at which the colormap saturates (symmetric around zero).
        Defaults to the largest absolute finite score.

    Returns:
      A treescope figure.

    Example:
      >>> import numpy as np
      >>> from saikei.toolshed import token_visualization as tv
      >>> html = tv.token_scores_html(np.array([1, 2]), np.array([0.5, -1.0]), ["a", "b", "c"])
      >>> "c" in html
      True
    """
    lookup = TokenLookup(tokenizer)
    keys, data, order = _prepare(tokens, axis_name_order)
    _, score_data = _scores_like(scores, keys, data.shape)
    data = _in_order(keys, data, order, "tokens")
    score_data = _in_order(keys, np.asarray(score_data, dtype=np.float64), order, "scores")
    if vmax is None:
        finite = np.abs(score_data[np.isfinite(score_data)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    elif not vmax > 0:
        raise ValueError(f"vmax must be a positive number; got {vmax!r}.")
    cells = np.empty(data.shape, dtype=object)
    for index, token_id in np.ndenumerate(data):
        text = _visible(lookup.text(int(token_id)))
        cells[index] = text_on_color(text, float(score_data[index]), vmax=vmax)
    return _layout(cells, order, data.shape)


def token_array_html(
    tokens: Any, tokenizer: Any, axis_name_order: Sequence[Hashable] | None = None
) -> str:
    """Standalone HTML of `render_token_array` (uncompressed, so text is searchable).

    Example:
      >>> from saikei.toolshed import token_visualization as tv
      >>> "<html" in tv.token_array_html([0], ["x"]) or "treescope" in tv.token_array_html([0], ["x"])
      True
    """
    figure = render_token_array(tokens, tokenizer, axis_name_order)
    return lowering.render_to_html_as_root(figure.treescope_part, compressed=False)


def token_scores_html(
    tokens: Any,
    scores: Any,
    tokenizer: Any,
    axis_name_order: Sequence[Hashable] | None = None,
    vmax: float | None = None,
) -> str:
    """Standalone HTML of `render_token_scores` (uncompressed).

    Example:
      >>> from saikei.toolshed import token_visualization as tv
      >>> "treescope" in tv.token_scores_html([0], [1.0], ["x"])
      True
    """
    figure = render_token_scores(tokens, scores, tokenizer, axis_name_order, vmax)
    return lowering.render_to_html_as_root(figure.treescope_part, compressed=False)


def _text_layout(cells: np.ndarray, order: Sequence[Hashable], indent: str = "") -> str:
    """Plain-text form of a cell grid, for consoles without rich display."""
    if cells.ndim <= 1:
        return indent + "".join(cells.reshape(-1).tolist())
    outer = order[0]
    label = outer if isinstance(outer, str) else f"axis {outer}"
    lines = []
    for index in range(cells.shape[0]):
        if cells.ndim == 2:
            lines.append(f"{indent}{label}={index}: " + "".join(cells[index].tolist()))
        else:
            lines.append(f"{indent}{label}={index}:")
            lines.append(_text_layout(cells[index], order[1:], indent + "  "))
    return "\n".join(lines)


def _display(figure: figures.TreescopeFigure, text: str) -> None:
    if _in_ipython():
        from IPython import display as ipython_display

        ipython_display.display(figure)
    else:
        print(text)


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def show_token_array(
    tokens: Any, tokenizer: Any, axis_name_order: Sequence[Hashable] | None = None
) -> None:
    """Displays `render_token_array(...)` (IPython), or prints its text form.

    Example:
      >>> from saikei.toolshed import token_visualization as tv
      >>> tv.show_token_array([1, 0], ["<pad>", "hi"])
      [hi][<pad>]
    """
    lookup = TokenLookup(tokenizer)
    keys, data, order = _prepare(tokens, axis_name_order)
    data = _in_order(keys, data, order, "tokens")
    texts = np.vectorize(lambda i: f"[{_visible(lookup.text(int(i)))}]", otypes=[object])(data)
    _display(render_token_array(tokens, tokenizer, axis_name_order), _text_layout(texts, order))


def show_token_scores(
    tokens: Any,
    scores: Any,
    tokenizer: Any,
    axis_name_order: Sequence[Hashable] | None = None,
    vmax: float | None = None,
) -> None:
    """Displays `render_token_scores(...)` (IPython), or prints its text form.

    Example:
      >>> from saikei.toolshed import token_visualization as tv
      >>> tv.show_token_scores([1, 0], [0.5, -0.5], ["<pad>", "hi"])
      [hi:+0.50][<pad>:-0.50]
    """
    lookup = TokenLookup(tokenizer)
    keys, data, order = _prepare(tokens, axis_name_order)
    _, score_data = _scores_like(scores, keys, data.shape)
    data = _in_order(keys, data, order, "tokens")
    score_data = _in_order(keys, np.asarray(score_data, dtype=np.float64), order, "scores")
    texts = np.empty(data.shape, dtype=object)
    for index, token_id in np.ndenumerate(data):
        texts[index] = f"[{_visible(lookup.text(int(token_id)))}:{score_data[index]:+.2f}]"
    figure = render_token_scores(tokens, scores, tokenizer, axis_name_order, vmax)
    _display(figure, _text_layout(texts, order))
