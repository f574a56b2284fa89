"""Constructor-call and container nodes with saikei's compact copy paths.

saikei's handlers (Structs, variables, NamedArrays) render as treescope's
foldable constructor calls, `Type(name=value, ...)`. This module builds those
nodes (`constructor_node`, `field_lines`) and renders their field values
(`render_child`).

Plain values that fill a model's fields (names, sizes, axis-name tuples, the
lists of sublayers, empty metadata dicts) are rendered here directly, with
the same parts treescope's handlers would build, instead of through the
renderer's whole handler chain for each of the thousands of them. Mutable
ones still go through treescope's shared-value check, and everything else
(and everything, while a custom autovisualizer is active) goes through the
renderer as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import treescope
from treescope import handlers, rendering_parts

from saikei.viz._copy_paths import CopyPathButton, compact_copy_button, in_path_scope
from saikei.viz._field_line import FieldLine
from saikei.viz._node_html import TemplatedNode, node_template

__all__ = [
    "array_source",
    "constructor_node",
    "field_lines",
    "render_child",
    "with_executable_arrays",
]


def _collapse_all(rendering: Any) -> None:
    renderable = getattr(rendering, "renderable", rendering)
    for foldable in renderable.foldables_in_this_part():
        foldable.set_expand_state(rendering_parts.ExpandState.COLLAPSED)


_MAX_SOURCE_ELEMENTS = 1024


def _literal(values: Any) -> str:
    """Python source for nested lists of numbers (non-finite floats spelled out)."""
    if isinstance(values, list):
        return "[" + ", ".join(_literal(v) for v in values) + "]"
    if isinstance(values, float) and not np.isfinite(values):
        return f"float({str(values)!r})"
    if isinstance(values, complex):
        return f"complex({_literal(values.real)}, {_literal(values.imag)})"
    return repr(values)


def array_source(value: Any) -> str | None:
    """Source text that rebuilds a small concrete jax or numpy array, else None.

    Used in roundtrip mode, so that `eval` of a rendering gives back arrays
    with the same values, dtype and (for jax scalars) weak type. Evaluate it
    with `jnp` (jax.numpy) and `np` (numpy) in scope.

    Example:
      >>> import jax.numpy as jnp
      >>> array_source(jnp.array([1.5, 2.0]))
      "jnp.asarray([1.5, 2.0], dtype='float32')"
      >>> array_source(jnp.array(0.5))
      'jnp.asarray(0.5)'
    """
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, jax.Array):
        module = "jnp"
    elif isinstance(value, np.ndarray):
        module = "np"
    else:
        return None
    try:
        if value.size > _MAX_SOURCE_ELEMENTS or value.dtype == object:
            return None
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            return None
        host = np.asarray(value)
    except Exception:  # deleted buffers, extended dtypes: keep the usual rendering
        return None
    dtype = np.dtype(value.dtype)
    if dtype.kind in "biu" or (dtype.kind == "f" and np.isfinite(host).all()):
        literal = repr(host.tolist())  # what `_literal` gives, without walking the lists
    else:
        literal = _literal(host.tolist())
    if host.ndim == 0 and getattr(value, "weak_type", False):
        python_type = {"f": float, "i": int, "c": complex, "b": bool}.get(dtype.kind)
        if python_type is not None and jnp.asarray(python_type(0)).dtype == dtype:
            return f"{module}.asarray({literal})"  # a weakly typed scalar, as given
    if host.size == 0:
        return f"{module}.zeros({tuple(host.shape)!r}, dtype={dtype.name!r})"
    return f"{module}.asarray({literal}, dtype={dtype.name!r})"


def with_executable_arrays(subtree_renderer: Any) -> Any:
    """Wraps a subtree renderer so small arrays render as source in roundtrip mode.

    Outside roundtrip mode the rendering is unchanged.

    Example:
      >>> import jax.numpy as jnp, treescope
      >>> from saikei import sk
      >>> layer = sk.nn.ConstantRescale(by=jnp.array(0.5))
      >>> "by=jnp.asarray(0.5)" in treescope.render_to_text(layer, roundtrip_mode=True)
      True
    """

    def render(node: Any, path: str | None = None) -> Any:
        rendering = subtree_renderer(node, path=path)
        source = array_source(node)
        if source is None:
            return rendering
        return rendering_parts.RenderableAndLineAnnotations(
            renderable=rendering_parts.roundtrip_condition(
                roundtrip=rendering_parts.text(source), not_roundtrip=rendering.renderable
            ),
            annotations=rendering.annotations,
        )

    return render


_LEAF_TYPES = (str, int, float, bool, type(None))
_EMPTY_PART_TYPE = type(rendering_parts.empty_part())
_SIBLINGS_TYPE = type(rendering_parts.siblings("a"))


def _is_empty(part: Any) -> bool:
    return (
        part is None
        or type(part) is _EMPTY_PART_TYPE
        or (type(part) is _SIBLINGS_TYPE and not part.children)
    )


def _renders_plain_values_directly() -> bool:
    """Whether no autovisualizer could want to draw a plain value.

    Treescope's (and saikei's) array autovisualizers only draw arrays; any
    other autovisualizer sees every value through the renderer, as usual.
    """
    autovisualizer = treescope.active_autovisualizer.get()
    return autovisualizer is None or (
        isinstance(autovisualizer, treescope.ArrayAutovisualizer)
        and type(autovisualizer).__call__ is treescope.ArrayAutovisualizer.__call__
    )


def _item_lines(items: Sequence[Any]) -> list[FieldLine]:
    """Comma-separated lines of a tuple or list, from the items' renderings."""
    last = len(items) - 1
    return [
        FieldLine(
            "",
            item.renderable,
            None if _is_empty(item.annotations) else item.annotations,
            last=i == last,
        )
        for i, item in enumerate(items)
    ]


def _render_immutable(value: Any, path: str | None) -> Any:
    """A str, number, bool, None or (nested) tuple of them as treescope renders it, else None."""
    kind = type(value)
    if kind in _LEAF_TYPES:
        rendering = handlers.handle_basic_types(value, None, None)
        if path is None:
            return rendering
        return rendering_parts.RenderableAndLineAnnotations(
            renderable=rendering.renderable, annotations=CopyPathButton(path)
        )
    if kind is not tuple:
        return None
    items = []
    for i, item in enumerate(value):
        rendering = _render_immutable(item, None if path is None else f"{path}[{i}]")
        if rendering is None:
            return None
        items.append(rendering)
    lines = _item_lines(items)
    if len(lines) == 1:
        lines = [dataclasses.replace(lines[0], always_comma=True)]  # ('a',)
    return constructor_node(
        "(",
        lines,
        ")",
        path,
        child_type_single_and_plural=("element", "elements"),
        # Items' buttons stay short relative to the enclosing node's scope.
        path_scope=False,
        template_key="tuple",
    )


def _render_list(value: list[Any], path: str | None, subtree_renderer: Any) -> Any:
    items = [
        render_child(item, None if path is None else f"{path}[{i}]", subtree_renderer)
        for i, item in enumerate(value)
    ]
    return constructor_node(
        "[",
        _item_lines(items),
        "]",
        path,
        child_type_single_and_plural=("element", "elements"),
        path_scope=False,
        template_key="list",
    )


def _render_empty_dict(path: str | None) -> Any:
    return constructor_node("{", [], "}", path, path_scope=False)


def render_child(value: Any, path: str | None, subtree_renderer: Any) -> Any:
    """Renders a field value of a saikei node, with a compact copy-path button.

    Strings, numbers, booleans, None, tuples of them, lists (not of lists) and
    empty dicts are rendered here, as treescope's handlers render them (lists
    and dicts through treescope's shared-value check); anything else, and
    anything while a custom autovisualizer is active, goes through
    `subtree_renderer`.

    Args:
      value: The value to render.
      path: Its key path (None when unknown).
      subtree_renderer: Treescope's renderer.

    Returns:
      The rendering, with line annotations.

    Example:
      >>> import treescope
      >>> from treescope import lowering, rendering_parts
      >>> child = render_child(("seq", "heads"), ".axes", None)
      >>> lowering.render_to_text_as_root(rendering_parts.build_full_line_with_annotations(child))
      "('seq', 'heads')"
    """
    if _renders_plain_values_directly():
        kind = type(value)
        if kind is list and not any(type(item) is list for item in value):
            return handlers.check_for_shared_values(
                value, path, lambda node, path: _render_list(node, path, subtree_renderer)
            )
        if kind is dict and not value:
            return handlers.check_for_shared_values(
                value, path, lambda node, path: _render_empty_dict(path)
            )
        rendering = _render_immutable(value, path)
        if rendering is not None:
            return rendering
    return compact_copy_button(subtree_renderer(value, path=path), path)


def field_lines(
    path: str | None,
    fields: Sequence[tuple[str, Any, bool, bool]],
    subtree_renderer: Any,
    *,
    executable_arrays: bool = True,
) -> list[rendering_parts.RenderableTreePart]:
    """The `name=value,` lines of a constructor-call rendering.

    Args:
      path: The key path of the node whose fields these are (None if unknown).
      fields: `(name, value, is_static, always_collapse)` per field; static
        names are muted in HTML, always-collapsed values never expand.
      subtree_renderer: Treescope's renderer for values that are not plain
        leaves (see `render_child`).
      executable_arrays: Whether small arrays render as source in roundtrip
        mode (`with_executable_arrays`).

    Returns:
      One part per field, for `constructor_node`.

    Example:
      >>> from treescope import lowering
      >>> lines = field_lines(None, [("a", 1, False, False), ("b", "x", True, False)], None)
      >>> lowering.render_to_text_as_root(constructor_node("P(", lines, ")", None).renderable)
      "P(a=1, b='x')"
    """
    if executable_arrays:
        subtree_renderer = with_executable_arrays(subtree_renderer)
    lines = []
    last = len(fields) - 1
    for i, (name, value, is_static, always_collapse) in enumerate(fields):
        child = render_child(value, None if path is None else f"{path}.{name}", subtree_renderer)
        if always_collapse:
            _collapse_all(child)
        if isinstance(child, rendering_parts.RenderableAndLineAnnotations):
            renderable, annotations = child.renderable, child.annotations
            if _is_empty(annotations):
                annotations = None
        else:
            renderable, annotations = child, None
        lines.append(
            FieldLine(
                f"{name}=",
                renderable,
                annotations,
                last=i == last,
                static=is_static,
            )
        )
    return lines


_MAX_TEMPLATED_ITEMS = 64


def _as_part(part: Any) -> rendering_parts.RenderableTreePart:
    return rendering_parts.text(part) if isinstance(part, str) else part


def constructor_node(
    prefix: Any,
    children: Sequence[Any],
    suffix: Any,
    path: str | None,
    *,
    background_color: str | None = None,
    background_pattern: str | None = None,
    first_line_annotation: rendering_parts.RenderableTreePart | None = None,
    child_type_single_and_plural: tuple[str, str] | None = None,
    path_scope: bool = True,
    template_key: Hashable | None = None,
) -> rendering_parts.RenderableAndLineAnnotations:
    """`rendering_parts.build_foldable_tree_node_from_children` with saikei's copy paths.

    The node looks and folds exactly like treescope's; its copy-path buttons
    (on its first line, and at the end of its line in the parent, as treescope
    puts them) are `CopyPathButton`s, and with `path_scope` it is the scope of
    the buttons inside it. With a `template_key` (which must determine `prefix`
    and `suffix`), its HTML is written from a template shared by all nodes
    with that key (see `saikei.viz._node_html`).

    Example:
      >>> from treescope import lowering
      >>> node = constructor_node("f(", ["1"], ")", ".f")
      >>> lowering.render_to_text_as_root(node.renderable)
      'f(1)'
    """
    button = CopyPathButton(path) if path else None
    if children:
        templated = template_key is not None and (
            # Collections name their length when abbreviated, so each length
            # has a template of its own; long ones are built by treescope.
            child_type_single_and_plural is None or len(children) <= _MAX_TEMPLATED_ITEMS
        )
        if templated and all(
            isinstance(child, rendering_parts.RenderableTreePart) for child in children
        ):
            template = node_template(
                template_key,
                _as_part(prefix),
                _as_part(suffix),
                background_color=background_color,
                background_pattern=background_pattern,
                has_button=button is not None,
                has_annotation=first_line_annotation is not None,
                items=child_type_single_and_plural,
                n_children=len(children),
            )
            if template.usable:
                node = TemplatedNode(
                    template,
                    button,
                    first_line_annotation,
                    tuple(children),
                    scope_path=path if path_scope else None,
                )
                return rendering_parts.RenderableAndLineAnnotations(
                    renderable=node,
                    annotations=rendering_parts.empty_part() if button is None else button,
                )
        if button is not None:
            # Treescope's builder would make its own button from a path.
            first_line_annotation = (
                button
                if first_line_annotation is None
                else rendering_parts.siblings(button, first_line_annotation)
            )
        node = rendering_parts.build_foldable_tree_node_from_children(
            prefix=prefix,
            children=children,
            suffix=suffix,
            background_color=background_color,
            background_pattern=background_pattern,
            first_line_annotation=first_line_annotation,
            child_type_single_and_plural=child_type_single_and_plural,
        )
        if button is not None:
            node = rendering_parts.RenderableAndLineAnnotations(
                renderable=node.renderable, annotations=button
            )
    else:
        node = rendering_parts.build_one_line_tree_node(
            line=rendering_parts.siblings(prefix, suffix), background_color=background_color
        )
        if button is not None:
            node = rendering_parts.RenderableAndLineAnnotations(
                renderable=node.renderable, annotations=button
            )
    return in_path_scope(node, path) if path_scope else node
