"""Treescope renderings of Selections: selected nodes outlined, or focused on.

`Selection.show_selection()` and `Selection.__treescope_root_repr__` draw the
selected tree with every selected subtree inside an outlined box (in text,
the box becomes comment lines `#╭┄┄╮` and `#╰┄┄╯` around the subtree);
`Selection.show_value()` draws the original tree with the nodes above each
selected subtree expanded, so that the selection is what one sees first.
"""

from __future__ import annotations

from typing import Any

import treescope
from treescope import layout_algorithms, rendering_parts

__all__ = [
    "SELECTED_BOX_CSS",
    "render_selection_root",
    "render_value_focused_root",
]

SELECTED_BOX_CSS = "outline: 2px solid #e87800; outline-offset: 1px;"

# Layout mark placed around every selected subtree; the expansion step opens
# every foldable that contains one.
_SELECTED = object()


class _Marked:
    """Stands in for a selected subtree while the tree is rendered."""

    __slots__ = ("boxed", "value")

    def __init__(self, value: Any, boxed: bool) -> None:
        self.value = value
        self.boxed = boxed

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        rendering = subtree_renderer(self.value, path=path)
        part = rendering.renderable if hasattr(rendering, "renderable") else rendering
        if self.boxed:
            part = rendering_parts.in_outlined_box(part, css_style=SELECTED_BOX_CSS)
        return rendering_parts.with_layout_mark(part, _SELECTED)


def _expanded_root(value: Any, collapse_others: bool) -> Any:
    """Renders `value` as a root whose marked subtrees are made visible."""
    representation = treescope.active_renderer.get().to_foldable_representation(value)
    root = representation.renderable
    layout_algorithms.expand_to_layout_marks(
        root, [_SELECTED], collapse_weak_others=collapse_others
    )
    treescope.active_expansion_strategy.get()(root)
    return rendering_parts.build_full_line_with_annotations(representation)


def render_selection_root(selection: Any) -> Any:
    """The root rendering of a Selection: its tree with selected nodes outlined.

    Args:
      selection: A `sk.Selection`.

    Returns:
      A treescope rendering part for `lowering.render_to_*_as_root`.

    Example:
      >>> from treescope import lowering
      >>> from saikei import sk
      >>> sel = sk.select({"a": 1, "b": 2}).at(lambda t: t["b"])
      >>> text = lowering.render_to_text_as_root(render_selection_root(sel))
      >>> print(text.replace("┄", ""))
      {
        'a': 1,
        'b':
        #╭╮
        2
        #╰╯
        ,
      }
    """
    values = [_Marked(v, boxed=True) for v in selection.selected_by_path.values()]
    return _expanded_root(selection._rebuild(values), collapse_others=False)


def render_value_focused_root(selection: Any) -> Any:
    """The original tree of a Selection, expanded down to the selected nodes.

    Other branches are collapsed, so the selected subtrees are what shows.

    Args:
      selection: A `sk.Selection`.

    Returns:
      A treescope rendering part for `lowering.render_to_*_as_root`.

    Example:
      >>> from treescope import lowering
      >>> from saikei import sk
      >>> sel = sk.select({"a": [1, 2], "b": [3]}).at(lambda t: t["a"][1])
      >>> print(lowering.render_to_text_as_root(render_value_focused_root(sel)))
      {
        'a': [
          1,
          2,
        ],
        'b': [3],
      }
    """
    values = [_Marked(v, boxed=False) for v in selection.selected_by_path.values()]
    return _expanded_root(selection._rebuild(values), collapse_others=True)
