"""HTML for saikei's constructor-call nodes, written from per-shape templates.

A node built by treescope's `build_foldable_tree_node_from_children` is some
fifteen parts (colored top and bottom lines, the fold toggle, the abbreviated
form, the indented children, ...). When lowered to HTML, every one of them
rebuilds its CSS rules and writes its spans, for every node of a model.
Nodes of one shape (a layer type, a variable type, tuples of n items) get
the same HTML around their children, so a `NodeTemplate` renders treescope's
node once, with marker children, and `TemplatedNode` then writes the HTML
between the markers around each node's real children.

Layout and text rendering are left to treescope's node itself; only HTML
lowering takes the shortcut. A shape whose probe rendering cannot be split
at the markers is rendered through treescope's parts as usual.
"""

from __future__ import annotations

import dataclasses
import html
import io
from collections.abc import Hashable, Sequence
from typing import Any

from treescope import rendering_parts

from saikei.viz._copy_paths import CSSStyleRule, HtmlContextForSetup, JavaScriptDefn, open_scope

__all__ = ["NodeTemplate", "TemplatedNode", "node_template"]

_MARK = "\ue000"  # a private-use character, never part of treescope's own markup

_Pieces = tuple[str, str, str, str]  # head, before the first line, between lines, tail


def _marker(name: str) -> rendering_parts.RenderableTreePart:
    return rendering_parts.text(f"{_MARK}{name}{_MARK}")


class NodeTemplate:
    """Treescope's node of one shape, rendered once with marker children.

    Example:
      >>> template = node_template(
      ...     ("doc-example",), "f(", ")", background_color=None,
      ...     background_pattern=None, has_annotation=False, items=None, n_children=2,
      ... )
      >>> head, before, between, tail = template.pieces(checked=False, at_beginning_of_line=False)
      >>> head.startswith('<span class="foldable_node">')
      True
    """

    def __init__(self, probe: rendering_parts.RenderableTreePart, has_annotation: bool, n: int):
        self._probe = probe
        self._has_annotation = has_annotation
        self._n = n
        self._pieces: dict[tuple[bool, bool], _Pieces | None] = {}
        self._rules: dict[HtmlContextForSetup, set[CSSStyleRule | JavaScriptDefn]] = {}

    def pieces(self, checked: bool, at_beginning_of_line: bool) -> _Pieces | None:
        """The HTML around the children, or None if the probe could not be split."""
        key = (checked, at_beginning_of_line)
        if key not in self._pieces:
            self._pieces[key] = self._split(checked, at_beginning_of_line)
        return self._pieces[key]

    def _split(self, checked: bool, at_beginning_of_line: bool) -> _Pieces | None:
        (foldable,) = self._probe.foldables_in_this_part()
        foldable.set_expand_state(
            rendering_parts.ExpandState.EXPANDED
            if checked
            else rendering_parts.ExpandState.COLLAPSED
        )
        stream = io.StringIO()
        self._probe.render_to_html(
            stream, at_beginning_of_line=at_beginning_of_line, render_context={}
        )
        rest = stream.getvalue()
        names = (["a"] if self._has_annotation else []) + [str(i) for i in range(self._n)]
        pieces = []
        for name in names:
            mark = html.escape(f"{_MARK}{name}{_MARK}")
            if rest.count(mark) != 1:
                return None
            piece, rest = rest.split(mark)
            pieces.append(piece)
        if _MARK in rest:
            return None
        if not self._has_annotation:
            pieces.insert(1, "")  # no annotation slot: all before line 0 is the head
        head, before_lines, *betweens = pieces
        if any(between != betweens[0] for between in betweens):
            return None
        return head, before_lines, betweens[0] if betweens else "", rest

    def setup_rules(self, context: HtmlContextForSetup) -> set[CSSStyleRule | JavaScriptDefn]:
        """The CSS and JavaScript of the node's own parts."""
        rules = self._rules.get(context)
        if rules is None:
            rules = self._rules[context] = self._probe.html_setup_parts(context)
        return rules


_TEMPLATES: dict[Hashable, NodeTemplate] = {}


def node_template(
    key: Hashable,
    prefix: Any,
    suffix: Any,
    *,
    background_color: str | None,
    background_pattern: str | None,
    has_annotation: bool,
    items: tuple[str, str] | None,
    n_children: int,
) -> NodeTemplate:
    """The template of nodes of one shape; `key` must determine all other arguments.

    Args:
      key: Identifies the shape (prefix, suffix, colours).
      prefix, suffix, background_color, background_pattern: As for
        `build_foldable_tree_node_from_children`.
      has_annotation: Whether nodes have a first-line annotation.
      items: `child_type_single_and_plural`. The abbreviated form of such
        nodes names their number of children, so their templates are made per
        count.
      n_children: The number of children of the node at hand.

    Returns:
      The (cached) template.
    """
    n = n_children if items is not None else 2
    full_key = (key, has_annotation, n if items is not None else None)
    template = _TEMPLATES.get(full_key)
    if template is None:
        probe = rendering_parts.build_foldable_tree_node_from_children(
            prefix=prefix,
            children=[_marker(str(i)) for i in range(n)],
            suffix=suffix,
            background_color=background_color,
            background_pattern=background_pattern,
            first_line_annotation=_marker("a") if has_annotation else None,
            child_type_single_and_plural=items,
        ).renderable
        template = _TEMPLATES[full_key] = NodeTemplate(probe, has_annotation, n)
    return template


@dataclasses.dataclass(frozen=True)
class TemplatedNode(rendering_parts.RenderableTreePart):
    """Treescope's constructor-call node, lowered to HTML through a `NodeTemplate`.

    Attributes:
      reference: The node as treescope's builder made it; used for layout,
        folding and text rendering (and for HTML if the template fails).
      template: The template of the node's shape.
      annotation: The first-line annotation (copy button, comment), or None.
      lines: The children, one per line.
      scope_path: The node's key path if it is a copy-path scope, else None.

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> html = treescope.render_to_html(sk.nn.Softmax(("a", "b")), compressed=False)
      >>> "Softmax(" in html and "axes=" in html
      True
    """

    reference: rendering_parts.RenderableTreePart
    template: NodeTemplate
    annotation: rendering_parts.RenderableTreePart | None
    lines: Sequence[rendering_parts.RenderableTreePart]
    scope_path: str | None

    def _compute_collapsed_width(self) -> int:
        return self.reference.collapsed_width

    def _compute_newlines_in_expanded_parent(self) -> int:
        return self.reference.newlines_in_expanded_parent

    def foldables_in_this_part(self) -> Sequence[Any]:
        return self.reference.foldables_in_this_part()

    def _compute_layout_marks_in_this_part(self) -> frozenset[Any]:
        return self.reference.layout_marks_in_this_part

    def render_to_text(
        self,
        stream: io.TextIOBase,
        *,
        expanded_parent: bool,
        indent: int,
        roundtrip_mode: bool,
        render_context: dict[Any, Any],
    ) -> None:
        self.reference.render_to_text(
            stream,
            expanded_parent=expanded_parent,
            indent=indent,
            roundtrip_mode=roundtrip_mode,
            render_context=render_context,
        )

    def html_setup_parts(
        self, context: HtmlContextForSetup, /
    ) -> set[CSSStyleRule | JavaScriptDefn]:
        rules = set(self.template.setup_rules(context))
        if self.annotation is not None:
            rules |= self.annotation.html_setup_parts(context)
        for line in self.lines:
            rules |= line.html_setup_parts(context)
        return rules

    def render_to_html(
        self,
        stream: io.TextIOBase,
        *,
        at_beginning_of_line: bool = False,
        render_context: dict[Any, Any],
    ) -> None:
        if self.scope_path is not None:
            opening, render_context = open_scope(self.scope_path, render_context)
            stream.write(opening)
        (foldable,) = self.reference.foldables_in_this_part()
        checked = foldable.get_expand_state() in (
            rendering_parts.ExpandState.EXPANDED,
            rendering_parts.ExpandState.WEAKLY_EXPANDED,
        )
        pieces = self.template.pieces(checked, at_beginning_of_line)
        if pieces is None:
            self.reference.render_to_html(
                stream, at_beginning_of_line=at_beginning_of_line, render_context=render_context
            )
        else:
            head, before_lines, between, tail = pieces
            stream.write(head)
            if self.annotation is not None:
                self.annotation.render_to_html(stream, render_context=render_context)
            stream.write(before_lines)
            for i, line in enumerate(self.lines):
                if i:
                    stream.write(between)
                line.render_to_html(
                    stream, at_beginning_of_line=True, render_context=render_context
                )
            stream.write(tail)
        if self.scope_path is not None:
            stream.write("</span>")
