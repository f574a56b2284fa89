"""The `data_array` of a NamedArray, rendered as treescope renders a jax.Array.

Treescope's jax.Array handler computes the value statistics the NamedArray
summary has just computed, and slices the array on device, one dispatched
operation per axis, before printing the few elements it shows. For a concrete
array that numpy can summarize anyway, saikei builds the very same rendering
from the statistics it already has and one host copy. Anything else (tracers,
deleted or multi-host arrays, huge arrays, an active autovisualizer, another
handler registered for the type) goes through treescope's renderer as before.

Either way the values print under `array_preview_options` (numpy print
options, by default 4 decimals and 2 edge items per axis, as compact as
PyTorch's tensor printing): the digits of every parameter's preview are most
of a model's HTML, and 8 decimals of a weight say little more than 4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import treescope
from treescope import context, lowering, rendering_parts, type_registries
from treescope.external import jax_support

from saikei.viz._copy_paths import CopyPathButton

__all__ = ["array_preview_options", "array_repr", "render_data_array"]


class _ArrayPreviewOptions(context.ContextualValue[dict[str, Any]]):
    """Numpy print options for the values a NamedArray's rendering shows.

    `saikei.viz.array_preview_options` (also `sk.ts.array_preview_options`)
    holds a dict of `numpy.set_printoptions` keywords, applied over numpy's
    current options whenever saikei renders the `data_array` of a NamedArray
    (a parameter, an activation, anything in a model). The default, 4
    decimals and 2 edge items per axis, keeps a model's HTML small; `{}`
    prints with numpy's own options, as treescope prints a bare jax.Array.
    Change it for a block with `set_scoped`, or for the session with
    `set_globally`, as any treescope contextual value.

    Example:
      >>> import numpy as np
      >>> from saikei import sk
      >>> x = sk.nx.wrap(np.full((3,), 1 / 3, np.float32), "a")
      >>> "0.3333," in sk.ts.render_to_html(x, compressed=False)
      True
      >>> with sk.ts.array_preview_options.set_scoped({"precision": 8}):
      ...   "0.33333334," in sk.ts.render_to_html(x, compressed=False)
      True
    """


array_preview_options = _ArrayPreviewOptions(
    module="saikei.viz",
    qualname="array_preview_options",
    initial_value={"precision": 4, "edgeitems": 2},
)


def _check_preview_options(options: Any) -> None:
    """Raises unless `options`, the value of `array_preview_options`, suits `np.printoptions`."""
    known = np.get_printoptions()
    if not isinstance(options, dict) or not set(options) <= set(known):
        raise TypeError(
            f"saikei.viz.array_preview_options holds {options!r}; it must be a dict of"
            f" numpy print options (keys among {sorted(known)}), e.g."
            ' {"precision": 4, "edgeitems": 2}, or {} for numpy\'s own options.'
        )


def _renders_like_treescope(data: Any) -> bool:
    """Whether treescope would render `data` with its own jax.Array handler."""
    if not isinstance(data, jax.Array) or isinstance(data, jax.core.Tracer):
        return False
    if treescope.active_autovisualizer.get() is not None:
        return False
    type_registries.update_registries_for_imports()
    if type_registries.lookup_treescope_handler_for_type(type(data)) is not (
        jax_support.render_jax_arrays
    ):
        return False
    return (
        not data.is_deleted()
        and data.is_fully_addressable
        # Treescope itself copies arrays below this size to the host for statistics.
        and data.size < jax_support.SUMMARIZE_USING_NUMPY_THRESHOLD
    )


def _edges(values: np.ndarray, edgeitems: int) -> np.ndarray:
    """`values` with only the elements numpy prints when summarizing.

    Each long axis keeps its first `edgeitems` and last `edgeitems + 1`
    entries: still longer than `2 * edgeitems`, so numpy prints the same text
    (`...` included) from a much smaller array.
    """
    for axis, size in enumerate(values.shape):
        if size > 2 * edgeitems + 1:
            head = [slice(None)] * values.ndim
            tail = [slice(None)] * values.ndim
            head[axis] = slice(0, edgeitems)
            tail[axis] = slice(size - edgeitems - 1, size)
            values = np.concatenate([values[tuple(head)], values[tuple(tail)]], axis=axis)
    return values


def array_repr(data: jax.Array) -> str:
    """The text treescope shows for a jax.Array (`jax_support.faster_array_repr`), from one host copy.

    Small arrays print as `repr`; larger ones keep numpy's edge items around
    `...`, in the same format.

    Example:
      >>> import jax.numpy as jnp
      >>> array_repr(jnp.arange(3))
      'Array([0, 1, 2], dtype=int32)'
      >>> print(array_repr(jnp.zeros((2000,))))
      Array([0., 0., 0., ..., 0., 0., 0.], dtype=float32)
    """
    options = np.get_printoptions()
    if data.size < options["threshold"]:
        return repr(data)
    weak = ", weak_type=True" if data.aval is not None and data.aval.weak_type else ""
    edgeitems = options["edgeitems"]
    prefix = "Array("
    text = np.array2string(
        _edges(np.asarray(data), edgeitems),
        prefix=prefix,
        suffix=",",
        separator=", ",
        threshold=0,
        edgeitems=edgeitems,
    )
    return f"{prefix}{text}, dtype={data.dtype.name}{weak})"


def _summary(data: jax.Array, statistics: str | None) -> rendering_parts.RenderableTreePart:
    summary = jax_support.JAXArrayAdapter().get_array_summary(data, fast=True)
    if statistics is None:
        return summary
    return rendering_parts.siblings(
        summary,
        rendering_parts.abbreviatable(
            rendering_parts.text(statistics), rendering_parts.empty_part()
        ),
    )


def _node(
    data: jax.Array,
    statistics: str,
    placeholder_expand_state: rendering_parts.ExpandState | None,
) -> rendering_parts.RenderableTreePart:
    text = array_repr(data)
    if "\n" not in text and "..." not in text:
        return rendering_parts.abbreviation_color(rendering_parts.text(f"<jax.{text}>"))
    if text.count("\n") > 15:
        # Long arrays start collapsed, as treescope does.
        expand_state = rendering_parts.ExpandState.COLLAPSED
    elif placeholder_expand_state is None:
        expand_state = rendering_parts.ExpandState.WEAKLY_EXPANDED
    else:
        expand_state = placeholder_expand_state
    label = rendering_parts.abbreviation_color(
        rendering_parts.comment_color_when_expanded(
            rendering_parts.siblings(
                rendering_parts.fold_condition(
                    expanded=rendering_parts.text("# "), collapsed=rendering_parts.text("<")
                ),
                _summary(data, statistics),
                rendering_parts.fold_condition(collapsed=rendering_parts.text(">")),
            )
        )
    )
    return rendering_parts.build_custom_foldable_tree_node(
        label=label,
        contents=rendering_parts.fold_condition(
            expanded=rendering_parts.indented_children([rendering_parts.text(text)])
        ),
        expand_state=expand_state,
    ).renderable


def render_data_array(
    data: Any,
    path: str | None,
    subtree_renderer: Any,
    statistics: Callable[[], str],
) -> Any:
    """Renders a NamedArray's `data_array` as treescope renders that array.

    Args:
      data: The wrapped array.
      path: Its key path.
      subtree_renderer: Treescope's renderer, used for anything but a plain
        concrete jax.Array.
      statistics: Returns the value statistics (`value_statistics(data)`),
        computed once for the NamedArray summary and this rendering.

    Returns:
      The rendering, with a `CopyPathButton` annotation. Values print
      under `array_preview_options`, read when this is called.

    Example:
      >>> import jax.numpy as jnp
      >>> from treescope import lowering
      >>> x = jnp.arange(4)
      >>> part = render_data_array(x, None, None, lambda: " [≥0, ≤3] zero:1 nonzero:3")
      >>> lowering.render_to_text_as_root(part.renderable)
      '<jax.Array([0, 1, 2, 3], dtype=int32)>'
    """
    options = array_preview_options.get()
    _check_preview_options(options)  # here, not later in a deferred thunk
    if not _renders_like_treescope(data):
        with np.printoptions(**options):
            return subtree_renderer(data, path=path)

    def placeholder() -> rendering_parts.RenderableTreePart:
        return rendering_parts.deferred_placeholder_style(
            rendering_parts.siblings("<", _summary(data, None), ">")
        )

    def thunk(expand_state: rendering_parts.ExpandState | None) -> Any:
        # Deferred rendering may run this later, outside the caller's scope.
        with np.printoptions(**options):
            return _node(data, statistics(), expand_state)

    return rendering_parts.RenderableAndLineAnnotations(
        renderable=lowering.maybe_defer_rendering(main_thunk=thunk, placeholder_thunk=placeholder),
        annotations=CopyPathButton(path) if path else rendering_parts.empty_part(),
    )
