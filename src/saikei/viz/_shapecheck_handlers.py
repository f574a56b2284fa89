"""Compact treescope renderings of shape-check patterns (`sk.chk`).

An ArraySpec reads `<ArraySpec float32(3, {n}, *{rest…} | seq:{n}, heads:8, **{others:…})>`:
the dtype (or its category, or `any`), positional dims before the bar and
named axes after it, with dimension variables in braces. Dimension variables
and wildcards are one-liners too. Expanded, and in roundtrip mode, each is its
constructor call.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
from treescope import rendering_parts

from saikei.core import shapecheck as chk
from saikei.viz._named_array_handlers import build_summary_foldable


def _var_name(name: Any) -> str:
    if isinstance(name, tuple) and len(name) == 2:
        return f"{name[0]}[{name[1]!r}]"
    return str(name)


def dim_text(dim: Any, named: bool = False) -> str:
    """One dimension of a pattern shape as text.

    Args:
      dim: An int, `DimVar`, `MultiDimVar` or `KnownDim`.
      named: Whether `dim` is a key of a named shape (changes `*` to `**`).

    Returns:
      `8`, `{n}`, `*{rest…}`, `**{rest:…}` or `{n=3}`.

    Example:
      >>> from saikei import sk
      >>> from saikei.viz._shapecheck_handlers import dim_text
      >>> dim_text(sk.chk.var("n")), dim_text(next(iter(sk.chk.var("rest"))))
      ('{n}', '*{rest…}')
    """
    if isinstance(dim, chk.DimVar):
        return "{" + _var_name(dim.name) + "}"
    if isinstance(dim, chk.MultiDimVar):
        return "**{" + str(dim.name) + ":…}" if named else "*{" + str(dim.name) + "…}"
    if isinstance(dim, chk.KnownDim):
        return "{" + _var_name(dim.name) + f"={dim.size}" + "}"
    return str(dim)


def dtype_text(dtype: Any) -> str:
    """The dtype of an ArraySpec as text: a dtype name, a category, or `any`.

    Example:
      >>> import numpy as np
      >>> from saikei.viz._shapecheck_handlers import dtype_text
      >>> dtype_text(np.dtype("float32")), dtype_text(np.floating), dtype_text(np.generic)
      ('float32', 'floating', 'any')
    """
    if dtype is np.generic:
        return "any"
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        return dtype.__name__
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def arrayspec_summary(spec: chk.ArraySpec) -> str:
    """`dtype(positional | named)` for an ArraySpec.

    Example:
      >>> from saikei import sk
      >>> from saikei.viz._shapecheck_handlers import arrayspec_summary
      >>> n = sk.chk.var("n")
      >>> arrayspec_summary(sk.chk.ArraySpec(shape=(3,), named_shape={"seq": n, "heads": 8}))
      'any(3 | seq:{n}, heads:8)'
    """
    positional = ", ".join(dim_text(d) for d in spec.shape)
    named_parts = []
    for key, size in spec.named_shape.items():
        if isinstance(key, chk.MultiDimVar):
            named_parts.append(dim_text(key, named=True))
        else:
            named_parts.append(f"{key}:{dim_text(size)}")
    named = ", ".join(named_parts)
    if named:
        return f"{dtype_text(spec.dtype)}({positional + ' ' if positional else ''}| {named})"
    return f"{dtype_text(spec.dtype)}({positional})"


def _node(
    obj: Any,
    collapsed: str,
    attributes: dict[str, Any],
    path: str | None,
    subtree_renderer: Any,
) -> rendering_parts.RenderableAndLineAnnotations:
    # A namespace lets build_field_children render values that differ from the
    # stored ones (e.g. a plain dict instead of the frozen named-shape dict).
    holder = types.SimpleNamespace(**attributes)
    children = rendering_parts.build_field_children(
        holder, path, subtree_renderer, fields_or_attribute_names=tuple(attributes)
    )
    node = build_summary_foldable(
        type(obj), collapsed, None, children, path, rendering_parts.ExpandState.COLLAPSED
    )
    return rendering_parts.RenderableAndLineAnnotations(
        renderable=node, annotations=rendering_parts.build_copy_button(path)
    )


def render_arrayspec(
    spec: chk.ArraySpec, path: str | None, subtree_renderer: Any
) -> rendering_parts.RenderableAndLineAnnotations:
    """Treescope handler for `ArraySpec` (its `__treescope_repr__`).

    Example:
      >>> import treescope
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> spec = sk.chk.ArraySpec(shape=(3,), dtype=jnp.float32, named_shape={"seq": 8})
      >>> treescope.render_to_text(spec)
      '<ArraySpec float32(3 | seq:8)>'
    """
    attributes: dict[str, Any] = {}
    if spec.shape:
        attributes["shape"] = tuple(spec.shape)
    if spec.dtype is not np.generic:
        attributes["dtype"] = spec.dtype
    if spec.named_shape:
        attributes["named_shape"] = dict(spec.named_shape)
    return _node(spec, f"<ArraySpec {arrayspec_summary(spec)}>", attributes, path, subtree_renderer)


def render_dim_var(
    var: chk.DimVar | chk.MultiDimVar | chk.KnownDim, path: str | None, subtree_renderer: Any
) -> rendering_parts.RenderableAndLineAnnotations:
    """Treescope handler for `DimVar`, `MultiDimVar` and `KnownDim`.

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> treescope.render_to_text([sk.chk.var("n"), sk.chk.KnownDim("m", 4)])
      '[<DimVar {n}>, <KnownDim {m=4}>]'
    """
    attributes: dict[str, Any] = {"name": var.name}
    if isinstance(var, chk.KnownDim):
        attributes["size"] = var.size
        if var.from_keypath is not None:
            attributes["from_keypath"] = var.from_keypath
    return _node(var, f"<{type(var).__name__} {dim_text(var)}>", attributes, path, subtree_renderer)


def render_wildcard(
    wildcard: chk.Wildcard, path: str | None, subtree_renderer: Any
) -> rendering_parts.RenderableAndLineAnnotations:
    """Treescope handler for `Wildcard` (`sk.chk.ANY`).

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> treescope.render_to_text([sk.chk.ANY, sk.chk.Wildcard("ints")])
      "[<Wildcard>, <Wildcard: 'ints'>]"
    """
    if wildcard.description is None:
        return _node(wildcard, "<Wildcard>", {}, path, subtree_renderer)
    return _node(
        wildcard,
        f"<Wildcard: {wildcard.description!r}>",
        {"description": wildcard.description},
        path,
        subtree_renderer,
    )
