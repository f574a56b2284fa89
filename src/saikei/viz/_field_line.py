"""One `name=value,` line of a constructor call, as a single treescope part.

Treescope composes such a line from about eight small parts (the label, the
value, a comma that is `, ` on one line and `,` at a line end, and the line
annotations shown only when expanded). A model has thousands of these lines,
and layout and HTML lowering visit every part, so saikei draws each line with
one part that behaves exactly like that composition.
"""

from __future__ import annotations

import dataclasses
import html
import io
from collections.abc import Sequence
from typing import Any

from treescope import rendering_parts

# The setup-rule types are not re-exported by treescope's public modules.
from treescope._internal.parts.part_interface import (
    CSSStyleRule,
    HtmlContextForSetup,
    JavaScriptDefn,
)

from saikei.viz._copy_paths import CopyPathButton

__all__ = ["STATIC_FIELD_CSS", "FieldLine"]

# The `name=` of static fields is muted in HTML, so that they can be told
# apart from pytree children (text output is unchanged, so that roundtrip
# renderings stay valid Python).
STATIC_FIELD_CSS = "font-style: italic; opacity: 0.72;"
_STATIC_FIELD_RULE = CSSStyleRule(f".sk_static {{ {STATIC_FIELD_CSS} }}")

# The CSS that shows `when_collapsed` / `when_expanded` spans (treescope's
# fold-condition rule), looked up once per setup context.
_FOLD_RULES: dict[HtmlContextForSetup, set[CSSStyleRule | JavaScriptDefn]] = {}
_FOLD_PROBE = rendering_parts.fold_condition(collapsed=rendering_parts.text(" "))


def _fold_rules(context: HtmlContextForSetup) -> set[CSSStyleRule | JavaScriptDefn]:
    rules = _FOLD_RULES.get(context)
    if rules is None:
        rules = _FOLD_RULES[context] = _FOLD_PROBE.html_setup_parts(context)
    return rules


@dataclasses.dataclass(frozen=True)
class FieldLine(rendering_parts.RenderableTreePart):
    """`label` `value` then a comma, then `annotations` (when expanded).

    Renders like treescope's
    `build_full_line_with_annotations(siblings_with_annotations(label, value), comma)`:
    the comma reads `, ` when the parent is on one line and `,` at the end of
    an expanded line. The last item of a call or collection has no comma on
    one line (`last`), except a one-element tuple's (`always_comma`).

    Attributes:
      label: The text before the value, e.g. `name=`.
      value: The value's rendering.
      annotations: Line annotations of the value (e.g. its copy-path button),
        shown at the end of the line when the parent is expanded.
      last: Whether this is the last item.
      static: Whether the label names a static field (`STATIC_FIELD_CSS`).
      always_comma: Whether the last item keeps its comma on one line.

    Example:
      >>> from treescope import lowering, rendering_parts
      >>> line = FieldLine("a=", rendering_parts.text("1"), None, last=False)
      >>> lowering.render_to_text_as_root(line)  # at the end of an expanded line
      'a=1,'
      >>> line.collapsed_width  # on one line it reads 'a=1, '
      5
    """

    label: str
    value: rendering_parts.RenderableTreePart
    annotations: rendering_parts.RenderableTreePart | None
    last: bool
    static: bool = False
    always_comma: bool = False

    def _compute_collapsed_width(self) -> int:
        comma = 1 if self.always_comma else 0 if self.last else 2
        return len(self.label) + self.value.collapsed_width + comma

    def _compute_newlines_in_expanded_parent(self) -> int:
        newlines = self.value.newlines_in_expanded_parent
        if self.annotations is not None:
            newlines += self.annotations.newlines_in_expanded_parent
        return newlines

    def foldables_in_this_part(self) -> Sequence[Any]:
        foldables = self.value.foldables_in_this_part()
        if self.annotations is None:
            return foldables
        return [*foldables, *self.annotations.foldables_in_this_part()]

    def _compute_layout_marks_in_this_part(self) -> frozenset[Any]:
        marks = self.value.layout_marks_in_this_part
        if self.annotations is None:
            return marks
        return marks | self.annotations.layout_marks_in_this_part

    def html_setup_parts(
        self, context: HtmlContextForSetup, /
    ) -> set[CSSStyleRule | JavaScriptDefn]:
        rules = _fold_rules(context) | self.value.html_setup_parts(context)
        if self.annotations is not None:
            rules |= self.annotations.html_setup_parts(context)
        if self.static:
            rules.add(_STATIC_FIELD_RULE)
        return rules

    def render_to_html(
        self,
        stream: io.TextIOBase,
        *,
        at_beginning_of_line: bool = False,
        render_context: dict[Any, Any],
    ) -> None:
        label = html.escape(self.label)
        if self.static:
            label = f'<span class="sk_static">{label}</span>'
        stream.write(label)
        self.value.render_to_html(
            stream,
            at_beginning_of_line=at_beginning_of_line and not self.label,
            render_context=render_context,
        )
        if not self.last:
            stream.write(',<span class="when_collapsed"> </span>')
        elif self.always_comma:
            stream.write(",")
        else:
            stream.write('<span class="when_expanded">,</span>')
        if type(self.annotations) is CopyPathButton:
            # Copy buttons already hide themselves inside collapsed nodes.
            self.annotations.render_to_html(stream, render_context=render_context)
        elif self.annotations is not None:
            stream.write('<span class="when_expanded">')
            self.annotations.render_to_html(stream, render_context=render_context)
            stream.write("</span>")

    def render_to_text(
        self,
        stream: io.TextIOBase,
        *,
        expanded_parent: bool,
        indent: int,
        roundtrip_mode: bool,
        render_context: dict[Any, Any],
    ) -> None:
        stream.write(self.label)
        self.value.render_to_text(
            stream,
            expanded_parent=expanded_parent,
            indent=indent,
            roundtrip_mode=roundtrip_mode,
            render_context=render_context,
        )
        if expanded_parent or (self.last and self.always_comma):
            stream.write(",")
        elif not self.last:
            stream.write(", ")
        if expanded_parent and self.annotations is not None:
            self.annotations.render_to_text(
                stream,
                expanded_parent=expanded_parent,
                indent=indent,
                roundtrip_mode=roundtrip_mode,
                render_context=render_context,
            )
