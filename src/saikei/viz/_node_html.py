"""Constructor-call nodes that treescope lays out and lowers from per-shape templates.

A node made by treescope's `build_foldable_tree_node_from_children` is some
fifteen parts (coloured top and bottom lines, the fold toggle, the
abbreviated form, the indented children, ...). Layout visits each of them,
and HTML lowering rebuilds each one's CSS rules and writes its spans, for
every node of a model. Nodes of one shape (a layer type, a variable type,
tuples of n items) only differ in their children, so:

* a `NodeTemplate` builds treescope's node once per shape, with marker
  children, and keeps the HTML between the markers;
* a `TemplatedNode` is one foldable part holding only its children: its
  layout sizes follow from theirs, its HTML is the template's pieces around
  them, and its text rendering is that of treescope's node, built on demand.

A template checks on its probe that these agree with treescope's node, and
otherwise reports itself unusable, so that `constructor_node` falls back to
treescope's node.
"""

from __future__ import annotations

import dataclasses
import html
import io
from collections.abc import Hashable, Sequence
from typing import Any

from treescope import rendering_parts

# The foldable-node base class and the setup-rule types are not re-exported by
# treescope's public modules.
from treescope._internal.parts.part_interface import (
    CSSStyleRule,
    FoldableTreeNode,
    HtmlContextForSetup,
    JavaScriptDefn,
)

from saikei.viz._copy_paths import open_scope

__all__ = ["NodeTemplate", "TemplatedNode", "node_template"]

_MARK = "\ue000"  # a private-use character, never part of treescope's own markup

# The HTML before the button, before the annotation, before the first line,
# between lines, and after the last line.
_Pieces = tuple[str, str, str, str, str]

_EXPANDED = rendering_parts.ExpandState.EXPANDED
_COLLAPSED = rendering_parts.ExpandState.COLLAPSED


def _marker(name: str) -> rendering_parts.RenderableTreePart:
    return rendering_parts.text(f"{_MARK}{name}{_MARK}")


def _html(part: rendering_parts.RenderableTreePart) -> str:
    stream = io.StringIO()
    part.render_to_html(stream, render_context={})
    return stream.getvalue()


# Where the probe's own copy button goes, the node writes its `CopyPathButton`.
_BUTTON_PATH = f"{_MARK}button{_MARK}"
_BUTTON_HTML = _html(rendering_parts.build_copy_button(_BUTTON_PATH))


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What `build_foldable_tree_node_from_children` needs besides the children."""

    prefix: rendering_parts.RenderableTreePart
    suffix: rendering_parts.RenderableTreePart
    background_color: str | None
    background_pattern: str | None
    items: tuple[str, str] | None

    def build(
        self,
        children: Sequence[rendering_parts.RenderableTreePart],
        annotation: rendering_parts.RenderableTreePart | None,
        path: str | None = None,
    ) -> rendering_parts.RenderableTreePart:
        """Treescope's node (its foldable, with any colour wrapper)."""
        return rendering_parts.build_foldable_tree_node_from_children(
            prefix=self.prefix,
            children=children,
            suffix=self.suffix,
            path=path,
            background_color=self.background_color,
            background_pattern=self.background_pattern,
            first_line_annotation=annotation,
            child_type_single_and_plural=self.items,
        ).renderable


class NodeTemplate:
    """Treescope's node of one shape, built once with marker children.

    Example:
      >>> from treescope import rendering_parts
      >>> template = node_template(
      ...     ("doc-example",), rendering_parts.text("f("), rendering_parts.text(")"),
      ...     background_color=None, background_pattern=None, has_button=False,
      ...     has_annotation=False, items=None, n_children=2,
      ... )
      >>> template.usable
      True
      >>> pieces = template.pieces(checked=False, at_beginning_of_line=False)
      >>> print("".join(pieces[:3]))  # what comes before the first child
      <span class="foldable_node"><label><input type="checkbox" class="foldable_node_toggle"></input>f(</label><span class='not_abbr'><span class='abbr_lvl'><span class="indented_children"><span class="indented_child">
    """

    def __init__(self, shape: _Shape, has_button: bool, has_annotation: bool, n: int):
        self.shape = shape
        self.has_button = has_button
        self.has_annotation = has_annotation
        self._n = n
        self._probe = shape.build(
            [_marker(str(i)) for i in range(n)],
            _marker("a") if has_annotation else None,
            path=_BUTTON_PATH if has_button else None,
        )
        self.extra_width = shape.prefix.collapsed_width + shape.suffix.collapsed_width
        self._pieces: dict[tuple[bool, bool], _Pieces | None] = {}
        self._rules: dict[HtmlContextForSetup, set[CSSStyleRule | JavaScriptDefn]] = {}
        self.usable = self._sizes_agree() and all(
            self.pieces(checked, first) is not None
            for checked in (False, True)
            for first in (False, True)
        )

    def _sizes_agree(self) -> bool:
        """Whether `TemplatedNode`'s layout sizes are those of treescope's node."""
        lines = [_marker(str(i)) for i in range(self._n)]
        annotation = _marker("a") if self.has_annotation else None
        mine = TemplatedNode(self, None, annotation, tuple(lines), None)
        reference = self.shape.build(lines, annotation)
        (foldable,) = reference.foldables_in_this_part()
        expanded, my_expanded = foldable.as_expanded_part(), mine.as_expanded_part()
        return (
            reference.collapsed_width == mine.collapsed_width
            and expanded.collapsed_width == my_expanded.collapsed_width
            and reference.newlines_in_expanded_parent == mine.newlines_in_expanded_parent
            and expanded.newlines_in_expanded_parent == my_expanded.newlines_in_expanded_parent
            and list(expanded.foldables_in_this_part())
            == list(my_expanded.foldables_in_this_part())
        )

    def pieces(self, checked: bool, at_beginning_of_line: bool) -> _Pieces | None:
        """The HTML around the children, or None if the probe could not be split."""
        key = (checked, at_beginning_of_line)
        if key not in self._pieces:
            self._pieces[key] = self._split(checked, at_beginning_of_line)
        return self._pieces[key]

    def _split(self, checked: bool, at_beginning_of_line: bool) -> _Pieces | None:
        (foldable,) = self._probe.foldables_in_this_part()
        foldable.set_expand_state(_EXPANDED if checked else _COLLAPSED)
        stream = io.StringIO()
        self._probe.render_to_html(
            stream, at_beginning_of_line=at_beginning_of_line, render_context={}
        )
        rest = stream.getvalue()
        slots = [
            *([_BUTTON_HTML] if self.has_button else []),
            *([html.escape(f"{_MARK}a{_MARK}")] if self.has_annotation else []),
            *(html.escape(f"{_MARK}{i}{_MARK}") for i in range(self._n)),
        ]
        pieces = []
        for slot in slots:
            if rest.count(slot) != 1:
                return None
            piece, rest = rest.split(slot)
            pieces.append(piece)
        if _MARK in rest:
            return None
        # Absent slots write nothing: their HTML is part of the next piece.
        if not self.has_button:
            pieces.insert(0, "")
        if not self.has_annotation:
            pieces.insert(1, "")
        head, before_annotation, before_lines, *betweens = pieces
        if any(between != betweens[0] for between in betweens):
            return None
        return head, before_annotation, before_lines, betweens[0] if betweens else "", rest

    def setup_rules(self, context: HtmlContextForSetup) -> set[CSSStyleRule | JavaScriptDefn]:
        """The CSS and JavaScript of the node's own parts."""
        rules = self._rules.get(context)
        if rules is None:
            rules = self._rules[context] = self._probe.html_setup_parts(context)
        return rules


_TEMPLATES: dict[Hashable, NodeTemplate] = {}


def node_template(
    key: Hashable,
    prefix: rendering_parts.RenderableTreePart,
    suffix: rendering_parts.RenderableTreePart,
    *,
    background_color: str | None,
    background_pattern: str | None,
    has_button: bool,
    has_annotation: bool,
    items: tuple[str, str] | None,
    n_children: int,
) -> NodeTemplate:
    """The template of nodes of one shape; `key` must determine `prefix` and `suffix`.

    Args:
      key: Identifies the shape's prefix and suffix.
      prefix: The node's first line, e.g. `Linear(`.
      suffix: Its last line, e.g. `)`.
      background_color: As for `build_foldable_tree_node_from_children`.
      background_pattern: As for `build_foldable_tree_node_from_children`.
      has_button: Whether nodes have a copy-path button.
      has_annotation: Whether nodes have a first-line annotation.
      items: `child_type_single_and_plural`. The abbreviated form of such
        nodes names their number of children, so their templates are made per
        count.
      n_children: The number of children of the node at hand (at least 1).

    Returns:
      The (cached) template.
    """
    n = n_children if items is not None else 2
    full_key = (key, background_color, background_pattern, has_button, has_annotation, items, n)
    template = _TEMPLATES.get(full_key)
    if template is None:
        shape = _Shape(prefix, suffix, background_color, background_pattern, items)
        template = _TEMPLATES[full_key] = NodeTemplate(shape, has_button, has_annotation, n)
    return template


class _ExpandedNode(rendering_parts.RenderableTreePart):
    """A `TemplatedNode` as layout sees it when expanded (its label and contents)."""

    def __init__(self, node: TemplatedNode):
        self._node = node

    def _compute_collapsed_width(self) -> int:
        return self._node.collapsed_width

    def _compute_newlines_in_expanded_parent(self) -> int:
        node = self._node
        newlines = sum(line.newlines_in_expanded_parent + 1 for line in node.lines) + 1
        if node.annotation is not None:
            newlines += node.annotation.newlines_in_expanded_parent
        return newlines

    def foldables_in_this_part(self) -> Sequence[Any]:
        node = self._node
        foldables = (
            [] if node.annotation is None else list(node.annotation.foldables_in_this_part())
        )
        for line in node.lines:
            foldables.extend(line.foldables_in_this_part())
        return foldables

    def _compute_layout_marks_in_this_part(self) -> frozenset[Any]:
        node = self._node
        parts = node.lines if node.annotation is None else (node.annotation, *node.lines)
        return frozenset().union(*(part.layout_marks_in_this_part for part in parts))

    def _reference(self) -> rendering_parts.RenderableTreePart:
        return self._node.reference_foldable().as_expanded_part()

    def html_setup_parts(
        self, context: HtmlContextForSetup, /
    ) -> set[CSSStyleRule | JavaScriptDefn]:
        return self._reference().html_setup_parts(context)

    def render_to_html(self, stream: io.TextIOBase, **kwargs: Any) -> None:
        self._reference().render_to_html(stream, **kwargs)

    def render_to_text(self, stream: io.TextIOBase, **kwargs: Any) -> None:
        self._reference().render_to_text(stream, **kwargs)


class TemplatedNode(FoldableTreeNode):
    """A constructor-call node rendered from its shape's `NodeTemplate`.

    It lays out, folds and renders (as HTML and text) exactly as treescope's
    `build_foldable_tree_node_from_children` node with the same children.

    Args:
      template: The template of the node's shape.
      button: The node's copy-path button (first line), or None.
      annotation: The first-line annotation (a comment), or None.
      lines: The children, one per line.
      scope_path: The node's key path if it is a copy-path scope, else None.

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> html = treescope.render_to_html(sk.nn.Softmax(("a", "b")), compressed=False)
      >>> "Softmax(" in html and "axes=" in html
      True
    """

    def __init__(
        self,
        template: NodeTemplate,
        button: rendering_parts.RenderableTreePart | None,
        annotation: rendering_parts.RenderableTreePart | None,
        lines: Sequence[rendering_parts.RenderableTreePart],
        scope_path: str | None,
    ):
        self.template = template
        self.button = button
        self.annotation = annotation
        self.lines = lines
        self.scope_path = scope_path
        self.expand_state = rendering_parts.ExpandState.WEAKLY_COLLAPSED
        self._expanded: _ExpandedNode | None = None
        self._reference: rendering_parts.RenderableTreePart | None = None

    def get_expand_state(self) -> rendering_parts.ExpandState:
        return self.expand_state

    def set_expand_state(self, expand_state: rendering_parts.ExpandState) -> None:
        self.expand_state = expand_state

    def as_expanded_part(self) -> rendering_parts.RenderableTreePart:
        if self._expanded is None:
            self._expanded = _ExpandedNode(self)
        return self._expanded

    def _compute_collapsed_width(self) -> int:
        return self.template.extra_width + sum(line.collapsed_width for line in self.lines)

    def reference_foldable(self) -> Any:
        """Treescope's own node for these children, in this node's expand state."""
        if self._reference is None:
            self._reference = self.template.shape.build(self.lines, self.annotation)
        (foldable,) = self._reference.foldables_in_this_part()
        foldable.set_expand_state(self.expand_state)
        return foldable

    def render_to_text(
        self,
        stream: io.TextIOBase,
        *,
        expanded_parent: bool,
        indent: int,
        roundtrip_mode: bool,
        render_context: dict[Any, Any],
    ) -> None:
        self.reference_foldable()
        self._reference.render_to_text(
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
        if self.button is not None:
            rules |= self.button.html_setup_parts(context)
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
        checked = self.expand_state in (_EXPANDED, rendering_parts.ExpandState.WEAKLY_EXPANDED)
        head, before_annotation, before_lines, between, tail = self.template.pieces(
            checked, at_beginning_of_line
        )
        stream.write(head)
        if self.button is not None:
            self.button.render_to_html(stream, render_context=render_context)
        stream.write(before_annotation)
        if self.annotation is not None:
            self.annotation.render_to_html(stream, render_context=render_context)
        stream.write(before_lines)
        for i, line in enumerate(self.lines):
            if i:
                stream.write(between)
            line.render_to_html(stream, at_beginning_of_line=True, render_context=render_context)
        stream.write(tail)
        if self.scope_path is not None:
            stream.write("</span>")
