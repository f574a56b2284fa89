"""Treescope rendering of NamedArrays: a one-line summary that unfolds into fields.

Collapsed, a NamedArray reads like
`<NamedArray float32(3 | seq:8, heads:4) ≈0.17 ±1.1 [≥-2.0, ≤2.2] nonzero:96 (wrapping jax.Array)>`:
dtype, positional shape before the bar, named axes after it, then statistics
of the values. Expanded (and always in roundtrip mode) it is the constructor
call with its `data_array` and `axis_names` fields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from treescope import dtype_util, lowering, rendering_parts
from treescope.external import jax_support

from saikei.core.named_axes import NamedArray
from saikei.viz._copy_paths import CopyPathButton, in_path_scope
from saikei.viz._data_array_rendering import render_data_array
from saikei.viz._node_building import constructor_node, field_lines


def named_array_shape_summary(array: NamedArray) -> str:
    """The dtype and shape of a NamedArray as `dtype(positional | name:size, ...)`.

    Positional axes come first, in order, then the named axes in the order of
    the data's dimensions.

    Args:
      array: The NamedArray to describe.

    Returns:
      A one-line string such as `float32(3 | seq:8, heads:4)`.

    Example:
      >>> from saikei import sk
      >>> from saikei.viz._named_array_handlers import named_array_shape_summary
      >>> x = sk.nx.zeros({"seq": 8, "heads": 4})
      >>> named_array_shape_summary(x)
      'float32(| seq:8, heads:4)'
    """
    data = array.data_array
    shape = tuple(data.shape)
    names = array.axis_names
    full = (None,) * (len(shape) - len(names)) + tuple(names)
    positional = ", ".join(str(size) for size, name in zip(shape, full) if name is None)
    named = ", ".join(f"{name}:{size}" for size, name in zip(shape, full) if name is not None)
    dtype_name = dtype_util.get_dtype_name(data.dtype)
    if positional and named:
        return f"{dtype_name}({positional} | {named})"
    if named:
        return f"{dtype_name}(| {named})"
    return f"{dtype_name}({positional})"


def wrapped_kind(data: Any) -> str:
    """A short name for what a NamedArray wraps (`jax.Array`, `np.ndarray`, ...).

    Args:
      data: The `data_array` of a NamedArray.

    Returns:
      The name shown in the `(wrapping ...)` suffix of the summary.

    Example:
      >>> import numpy as np
      >>> from saikei.viz._named_array_handlers import wrapped_kind
      >>> wrapped_kind(np.zeros(3))
      'np.ndarray'
    """
    if isinstance(data, jax.core.Tracer):
        return "tracer"
    if isinstance(data, jax.Array):
        return "jax.Array"
    if isinstance(data, np.ndarray):
        return "np.ndarray"
    if isinstance(data, jax.ShapeDtypeStruct):
        return "jax.ShapeDtypeStruct"
    return type(data).__name__


def value_statistics(data: Any) -> str:
    """Statistics of an array's values, as treescope shows them for jax arrays.

    Mean, standard deviation and range for floats, range for integers, counts
    of zeros/nonzeros (and NaN/inf, true/false). Empty for tracers, abstract
    arrays, deleted buffers and non-numeric dtypes.

    Args:
      data: A `jax.Array`, `np.ndarray`, or anything else (no statistics).

    Returns:
      The statistics, starting with a space, or an empty string.

    Example:
      >>> import numpy as np
      >>> from saikei.viz._named_array_handlers import value_statistics
      >>> value_statistics(np.array([0, 1, 2, 3]))
      ' [≥0, ≤3] zero:1 nonzero:3'
    """
    if isinstance(data, jax.core.Tracer):
        return ""
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf" or data.size == 0:
            return ""
        data = jax.numpy.asarray(data)
    elif not isinstance(data, jax.Array):
        return ""
    if data.size == 0 or data.is_deleted():
        return ""
    fast = _finite_float_statistics(data)
    return jax_support.summarize_array_data(data) if fast is None else fast


def _finite_float_statistics(data: jax.Array) -> str | None:
    """`summarize_array_data` for a float32/64 array whose values are all finite, else None.

    Treescope computes the same numpy statistics, after replacing infinities
    by NaN and counting NaNs and infinities; with none of them present those
    steps change nothing and are skipped.
    """
    if data.dtype not in (np.float32, np.float64) or not jax_support.safe_to_summarize(data):
        return None
    values = np.asarray(data)
    if not np.isfinite(values).all():
        return None
    mean = np.nanmean(values, dtype=np.float32)
    std = np.nanstd(values, dtype=np.float32)
    low = np.nanmin(values).astype(np.float32)
    high = np.nanmax(values).astype(np.float32)
    text = f" ≈{mean:.2} ±{std:.2} [≥{low:.2}, ≤{high:.2}]"
    zero = np.count_nonzero(values == 0)
    nonzero = np.count_nonzero(values)
    if zero:
        text += f" zero:{zero:_d}"
    if nonzero:
        text += f" nonzero:{nonzero:_d}"
    return text


def _label_text(array: NamedArray, stats: str) -> str:
    return f"{named_array_shape_summary(array)}{stats}"


def _constructor_children(
    array: NamedArray,
    path: str | None,
    subtree_renderer: Any,
    statistics: Callable[[], str] | None = None,
) -> list[rendering_parts.RenderableTreePart]:
    data = array.data_array

    def render(value: Any, path: str | None = None) -> Any:
        if value is data and statistics is not None:
            return render_data_array(value, path, subtree_renderer, statistics)
        return subtree_renderer(value, path=path)

    fields = [("data_array", data, False, False), ("axis_names", array.axis_names, False, False)]
    return field_lines(path, fields, render)


def build_summary_foldable(
    object_type: type,
    collapsed_text: str,
    comment_text: str | None,
    children: list[rendering_parts.RenderableTreePart],
    path: str | None,
    expand_state: rendering_parts.ExpandState,
) -> rendering_parts.RenderableTreePart:
    """A node that is a one-line summary when collapsed and a constructor call when expanded.

    In roundtrip mode it is always the constructor call (collapsed onto one
    line, or expanded), so the text evaluates back to the object.

    Args:
      object_type: The type whose (qualified in roundtrip mode) name opens the call.
      collapsed_text: The whole collapsed line, e.g. `<ArraySpec float32(3)>`.
      comment_text: Shown as a `# comment` after the opening parenthesis when
        expanded, or None.
      children: The constructor's keyword arguments (`build_field_children`).
      path: The keypath, for copy buttons.
      expand_state: The initial expand state.

    Returns:
      The renderable node.

    Example:
      >>> import treescope
      >>> from treescope import rendering_parts
      >>> from saikei.viz._named_array_handlers import build_summary_foldable
      >>> node = build_summary_foldable(
      ...     int, "<int 3>", None, [], None, rendering_parts.ExpandState.COLLAPSED
      ... )
      >>> treescope.lowering.render_to_text_as_root(node)
      '<int 3>'
    """
    opening = rendering_parts.siblings(
        rendering_parts.maybe_qualified_type_name(object_type),
        "(",
        rendering_parts.fold_condition(
            expanded=rendering_parts.comment_color(rendering_parts.text(f"  # {comment_text}"))
        )
        if comment_text
        else rendering_parts.empty_part(),
    )
    collapsed = rendering_parts.abbreviation_color(rendering_parts.text(collapsed_text))
    fields = rendering_parts.siblings(rendering_parts.indented_children(children), ")")
    # Outside roundtrip mode the collapsed form is the summary alone; in
    # roundtrip mode it must stay a constructor call that evaluates. One
    # summarizable condition covers both, so the opening is emitted once.
    label = rendering_parts.summarizable_condition(summary=collapsed, detail=opening)
    contents = rendering_parts.summarizable_condition(detail=fields)
    return rendering_parts.build_custom_foldable_tree_node(
        label=label, contents=contents, path=path, expand_state=expand_state
    ).renderable


def _build_node(
    array: NamedArray,
    children: list[rendering_parts.RenderableTreePart],
    stats: str,
    expand_state: rendering_parts.ExpandState,
) -> rendering_parts.RenderableTreePart:
    summary = _label_text(array, stats)
    kind = wrapped_kind(array.data_array)
    # The copy-path button is the line annotation `render_named_array` adds.
    return build_summary_foldable(
        type(array),
        f"<{type(array).__name__} {summary} (wrapping {kind})>",
        summary,
        children,
        None,
        expand_state,
    )


def render_named_array(
    array: NamedArray, path: str | None, subtree_renderer: Any
) -> rendering_parts.RenderableAndLineAnnotations:
    """Treescope handler for a NamedArray (used by `NamedArray.__treescope_repr__`).

    Statistics are computed in a deferred thunk, so interactive displays show
    the structure first and fill the numbers in afterwards.

    Args:
      array: The NamedArray to render.
      path: Its keypath string, for the copy-path button.
      subtree_renderer: Treescope's renderer for the fields.

    Returns:
      The rendering, with a copy-path annotation.

    Example:
      >>> import treescope
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> x = sk.nx.wrap(jnp.arange(6).reshape(2, 3), "seq", "heads")
      >>> treescope.render_to_text(x)
      '<NamedArray int32(| seq:2, heads:3) [≥0, ≤5] zero:1 nonzero:5 (wrapping jax.Array)>'
    """
    data = array.data_array
    if array._is_mislabeled():
        # Data changed underneath its names (see MislabeledNamedArrayError).
        return rendering_parts.error_color(rendering_parts.text(repr(array)))
    if not (hasattr(data, "shape") and hasattr(data, "dtype")) or len(array.axis_names) > len(
        data.shape
    ):
        # Inconsistent wrappers must still render; show the raw fields.
        return constructor_node(
            rendering_parts.siblings(rendering_parts.maybe_qualified_type_name(type(array)), "("),
            _constructor_children(array, path, subtree_renderer),
            ")",
            path,
        )

    def placeholder() -> rendering_parts.RenderableTreePart:
        return rendering_parts.deferred_placeholder_style(
            rendering_parts.text(
                f"<{type(array).__name__} {named_array_shape_summary(array)}"
                f" (wrapping {wrapped_kind(data)})>"
            )
        )

    # Computed once, for the summary and for the data array's own label.
    statistics = functools.cache(lambda: value_statistics(data))
    # The fields are rendered while this handler runs, not in the deferred
    # thunk (a streaming display runs thunks after the renderer's contexts,
    # shared-value tracking and autovisualizer, are gone). They are rendered
    # after this node is deferred, though: deferred parts are filled in in
    # order, and the data array's own deferred rendering sits inside this one.
    children = functools.cache(
        lambda: _constructor_children(array, path, subtree_renderer, statistics)
    )

    def thunk(
        expand_state: rendering_parts.ExpandState | None,
    ) -> rendering_parts.RenderableTreePart:
        return _build_node(
            array,
            children(),
            statistics(),
            # Arrays start collapsed unless something explicitly expanded the
            # placeholder (a weak expansion only reflects available width).
            rendering_parts.ExpandState.EXPANDED
            if expand_state == rendering_parts.ExpandState.EXPANDED
            else rendering_parts.ExpandState.COLLAPSED,
        )

    renderable = lowering.maybe_defer_rendering(main_thunk=thunk, placeholder_thunk=placeholder)
    children()
    return in_path_scope(
        rendering_parts.RenderableAndLineAnnotations(
            renderable=renderable,
            annotations=CopyPathButton(path) if path else rendering_parts.empty_part(),
        ),
        path,
    )
