"""Treescope rendering of mutable variables (`Parameter`, `StateVariable`).

A variable renders as `Parameter(label=..., value=..., metadata=...)` on its
kind's background colour. It is a mutable object, so when the same variable
sits at several places of a tree (parameter sharing) treescope's
shared-value detection marks every occurrence after the first
(`# Repeated python obj at 0x...`, and a highlight in HTML). In roundtrip
mode a bound variable is wrapped in `<...>`: it is not rebuildable source;
unbind variables first (`sk.unbind_params`) to get slots, which round-trip.

Frozen values and slots are Structs and render through `render_struct`;
slots get a striped fill so that holes in a model stand out.
"""

from __future__ import annotations

from typing import Any

from treescope import rendering_parts

from saikei.viz._node_building import constructor_node, field_lines

__all__ = ["render_variable"]

# `<Parameter(` (in roundtrip mode, bound variables are not rebuildable
# source), resolved once per variable type; and the matching `)>`.
_PREFIXES: dict[type, rendering_parts.RenderableTreePart] = {}
_SUFFIX = rendering_parts.siblings(
    ")", rendering_parts.roundtrip_condition(roundtrip=rendering_parts.text(">"))
)


def render_variable(variable: Any, path: str | None, subtree_renderer: Any) -> Any:
    """Renders a labeled variable (its `__treescope_repr__`).

    Args:
      variable: A `Parameter` or `StateVariable`.
      path: Its keypath string from the root (None when unknown).
      subtree_renderer: Treescope's renderer for the label, value and metadata.

    Returns:
      A treescope rendering.

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> print(treescope.render_to_text(sk.Parameter(label="w", value=[1.0])))
      Parameter(
        label='w',
        value=[<jax.Array(1., dtype=float32, weak_type=True)>],
        metadata={},
      )
    """
    prefix = _PREFIXES.get(type(variable))
    if prefix is None:
        prefix = _PREFIXES[type(variable)] = rendering_parts.siblings(
            rendering_parts.roundtrip_condition(roundtrip=rendering_parts.text("<")),
            rendering_parts.maybe_qualified_type_name(type(variable)),
            "(",
        )
    fields = [
        ("label", variable.label, False, False),
        ("value", variable._value, False, False),
        ("metadata", variable.metadata, False, False),
    ]
    return constructor_node(
        prefix,
        field_lines(path, fields, subtree_renderer, executable_arrays=False),
        _SUFFIX,
        path,
        background_color=variable.treescope_color(),
        template_key=type(variable),
    )
