"""Copy-path buttons that write each path once, relative to the node around them.

Treescope gives every node a copy-path button holding the node's whole key
path twice (an attribute and a CSS variable). In a model those paths are long
and nest: half the HTML of a transformer rendering was copy buttons. saikei's
nodes instead mark their rendering as a path scope: the scope's element holds
its path *relative to the scope around it*, and a button holds only the part
of its path below the nearest scope (often nothing). A short script joins the
pieces when a button is hovered or clicked, so users see and copy the same
full paths as before.

The relative pieces are computed while the HTML is written, from the scope
paths the enclosing parts pass down in treescope's `render_context`; a path
that does not extend its scope's path is written out whole, so a handler that
passes unrelated paths still gets correct buttons.
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

__all__ = [
    "CopyPathButton",
    "PathScope",
    "compact_copy_button",
    "in_path_scope",
    "open_scope",
]

# render_context key holding the absolute path of the innermost enclosing scope.
_SCOPE_KEY = "saikei.viz.copy_path_scope"

# Treescope's own copy button: its CSS (icon font, hiding when collapsed) and
# its click handler `defns.handle_copy_click`, which saikei's buttons reuse.
_TREESCOPE_BUTTON = rendering_parts.build_copy_button("saikei")
_TREESCOPE_BUTTON_TYPE = type(_TREESCOPE_BUTTON)
_SIBLINGS_TYPE = type(rendering_parts.siblings("a"))


def _one_line(source: str) -> str:
    return " ".join(source.split())


# Fills in `data-copy` from the scopes around a button the first time it is
# hovered or clicked, then lets treescope's handler copy it.
_RESOLVE_JS = JavaScriptDefn(
    _one_line(
        """
        (() => {
          const docroot = this.getRootNode();
          const resolve = (button) => {
            if (button.dataset.copy !== undefined) { return; }
            let path = button.dataset.k || "";
            let scope = button.closest("[data-p]");
            while (scope) {
              path = scope.dataset.p + path;
              if (scope.hasAttribute("data-a") || !scope.parentElement) { break; }
              scope = scope.parentElement.closest("[data-p]");
            }
            button.dataset.copy = path;
          };
          const find = (event) => (
            event.target.closest ? event.target.closest(".sk_path") : null
          );
          docroot.addEventListener("mouseover", (event) => {
            const button = find(event);
            if (button) { resolve(button); }
          });
          docroot.addEventListener("click", (event) => {
            const button = find(event);
            if (button) {
              resolve(button);
              docroot.host.defns.handle_copy_click(button);
            }
          });
        })();
        """
    )
)

# Treescope's hover text reads CSS variables that these buttons do not carry;
# they show the resolved `data-copy` attribute instead.
_HOVER_CSS = CSSStyleRule(
    _one_line(
        """
        .copybutton.sk_path:hover::after {
          content: " Copy path: " attr(data-copy);
          color: darkseagreen;
        }
        .copybutton.sk_path.was_clicked::after {
          content: " Copied! " attr(data-copy) !important;
          color: #cccccc;
        }
        .copybutton.sk_path.broken_copy:hover::after {
          content: none;
        }
        """
    )
)


# Setup rules of CopyPathButton per setup context (building treescope's takes
# a while, and there is one button per node).
_SETUP_RULES: dict[HtmlContextForSetup, set[CSSStyleRule | JavaScriptDefn]] = {}


def _relative(path: str, render_context: dict[Any, Any]) -> tuple[str, bool]:
    """(path below the enclosing scope, whether it had to be written whole)."""
    scope = render_context.get(_SCOPE_KEY)
    if scope is not None and path.startswith(scope):
        return path[len(scope) :], False
    return path, True


def open_scope(path: str, render_context: dict[Any, Any]) -> tuple[str, dict[Any, Any]]:
    """The opening tag of a path scope for `path`, and the render context inside it.

    Example:
      >>> open_scope(".a.b", {_SCOPE_KEY: ".a"})[0]
      '<span data-p=".b">'
    """
    key, whole = _relative(path, render_context)
    absolute = " data-a" if whole else ""
    return (
        f'<span data-p="{html.escape(key)}"{absolute}>',
        {**render_context, _SCOPE_KEY: path},
    )


@dataclasses.dataclass(frozen=True)
class CopyPathButton(rendering_parts.RenderableTreePart):
    """A copy-path button that stores its path relative to the enclosing `PathScope`.

    Looks and behaves like treescope's button (`rendering_parts.build_copy_button`):
    hidden in collapsed nodes, shows `Copy path: <path>` on hover, copies on click.

    Attributes:
      path: The full key path the button copies.

    Example:
      >>> from treescope import lowering
      >>> button = CopyPathButton(".layers[0]")
      >>> lowering.render_to_text_as_root(button)
      ''
      >>> ".layers[0]" in lowering.render_to_html_as_root(button, compressed=False)
      True
    """

    path: str

    def _compute_collapsed_width(self) -> int:
        return 0

    def _compute_newlines_in_expanded_parent(self) -> int:
        return 0

    def foldables_in_this_part(self) -> Sequence[Any]:
        return ()

    def _compute_layout_marks_in_this_part(self) -> frozenset[Any]:
        return frozenset()

    def render_to_text(
        self,
        stream: io.TextIOBase,
        *,
        expanded_parent: bool,
        indent: int,
        roundtrip_mode: bool,
        render_context: dict[Any, Any],
    ) -> None:
        del stream, expanded_parent, indent, roundtrip_mode, render_context

    def html_setup_parts(
        self, context: HtmlContextForSetup, /
    ) -> set[CSSStyleRule | JavaScriptDefn]:
        rules = _SETUP_RULES.get(context)
        if rules is None:
            rules = _SETUP_RULES[context] = _TREESCOPE_BUTTON.html_setup_parts(context) | {
                _RESOLVE_JS,
                _HOVER_CSS,
            }
        return set(rules)

    def render_to_html(
        self,
        stream: io.TextIOBase,
        *,
        at_beginning_of_line: bool = False,
        render_context: dict[Any, Any],
    ) -> None:
        del at_beginning_of_line
        key, whole = _relative(self.path, render_context)
        if whole:
            attribute = f' data-copy="{html.escape(key)}"'
        elif key:
            attribute = f' data-k="{html.escape(key)}"'
        else:
            attribute = ""
        stream.write(f'<span class="copybutton sk_path"{attribute}><span></span></span>')


@dataclasses.dataclass(frozen=True)
class PathScope(rendering_parts.RenderableTreePart):
    """Renders `child` inside an element that records the key path of its node.

    `CopyPathButton`s inside it store their paths relative to `path`. Text
    rendering, layout and folding are exactly those of `child`.

    Attributes:
      child: The node's rendering.
      path: The node's key path.

    Example:
      >>> from treescope import lowering, rendering_parts
      >>> scope = PathScope(
      ...     rendering_parts.siblings("x", CopyPathButton(".a.b")), ".a"
      ... )
      >>> lowering.render_to_text_as_root(scope)
      'x'
      >>> 'data-k=".b"' in lowering.render_to_html_as_root(scope, compressed=False)
      True
    """

    child: rendering_parts.RenderableTreePart
    path: str

    def _compute_collapsed_width(self) -> int:
        return self.child.collapsed_width

    def _compute_newlines_in_expanded_parent(self) -> int:
        return self.child.newlines_in_expanded_parent

    def foldables_in_this_part(self) -> Sequence[Any]:
        return self.child.foldables_in_this_part()

    def _compute_layout_marks_in_this_part(self) -> frozenset[Any]:
        return self.child.layout_marks_in_this_part

    def render_to_text(
        self,
        stream: io.TextIOBase,
        *,
        expanded_parent: bool,
        indent: int,
        roundtrip_mode: bool,
        render_context: dict[Any, Any],
    ) -> None:
        self.child.render_to_text(
            stream,
            expanded_parent=expanded_parent,
            indent=indent,
            roundtrip_mode=roundtrip_mode,
            render_context=render_context,
        )

    def html_setup_parts(
        self, context: HtmlContextForSetup, /
    ) -> set[CSSStyleRule | JavaScriptDefn]:
        return self.child.html_setup_parts(context)

    def render_to_html(
        self,
        stream: io.TextIOBase,
        *,
        at_beginning_of_line: bool = False,
        render_context: dict[Any, Any],
    ) -> None:
        opening, inner_context = open_scope(self.path, render_context)
        stream.write(opening)
        self.child.render_to_html(
            stream, at_beginning_of_line=at_beginning_of_line, render_context=inner_context
        )
        stream.write("</span>")


def in_path_scope(
    rendering: rendering_parts.RenderableAndLineAnnotations, path: str | None
) -> rendering_parts.RenderableAndLineAnnotations:
    """Wraps a node's rendering in a `PathScope` (unchanged when `path` is None).

    Example:
      >>> from treescope import rendering_parts
      >>> node = rendering_parts.build_one_line_tree_node("x")
      >>> type(in_path_scope(node, ".a").renderable).__name__
      'PathScope'
    """
    if path is None:
        return rendering
    return rendering_parts.RenderableAndLineAnnotations(
        renderable=PathScope(rendering.renderable, path), annotations=rendering.annotations
    )


def _swap_button(part: Any, path: str) -> Any:
    if type(part) is _TREESCOPE_BUTTON_TYPE and part.copy_string == path:
        return CopyPathButton(path)
    if type(part) is _SIBLINGS_TYPE and any(
        type(child) is _TREESCOPE_BUTTON_TYPE for child in part.children
    ):
        return rendering_parts.siblings(*(_swap_button(child, path) for child in part.children))
    return part


def compact_copy_button(rendering: Any, path: str | None) -> Any:
    """Replaces treescope's copy button for `path` in a child's annotations by a `CopyPathButton`.

    The button may stand alone or among other annotations (such as the
    shared-value warning); renderings without it are returned unchanged.

    Example:
      >>> from treescope import rendering_parts
      >>> child = rendering_parts.build_one_line_tree_node("1", ".x")
      >>> compact_copy_button(child, ".x").annotations
      CopyPathButton(path='.x')
    """
    if path is None or not isinstance(rendering, rendering_parts.RenderableAndLineAnnotations):
        return rendering
    annotations = _swap_button(rendering.annotations, path)
    if annotations is rendering.annotations:
        return rendering
    return rendering_parts.RenderableAndLineAnnotations(
        renderable=rendering.renderable, annotations=annotations
    )
