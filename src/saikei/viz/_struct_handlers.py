"""Treescope rendering of Structs and layers as foldable constructor calls.

`Struct.__treescope_repr__` (in saikei.core) imports `render_struct` from here
lazily, so that saikei.core does not depend on saikei.viz at import time.

A Struct renders as `TypeName(field=value, ...)`:

* layers get a background colour derived from their qualified type name
  (`Struct.treescope_color()` chooses; plain Structs have none);
* static fields show their `name=` in a muted italic style in HTML, so that
  they can be told apart from pytree children;
* subclasses of `sk.nn.Sequential` carry a `# Sequential` comment on their
  first line when expanded;
* in roundtrip mode type names are importable public paths
  (`saikei.nn.Linear`), and types with a hand-written `__init__` are rebuilt
  with `Type.from_attributes(...)`.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from treescope import canonical_aliases, rendering_parts, type_registries

from saikei.core._struct import is_pytree_node_field

__all__ = [
    "array_source",
    "register_public_aliases",
    "render_struct",
    "static_field_style",
    "with_executable_arrays",
]

# Applied to the `name=` of static fields in HTML (text output is unchanged so
# that roundtrip renderings stay valid Python).
STATIC_FIELD_CSS = "font-style: italic; opacity: 0.72;"


@dataclasses.dataclass(frozen=True)
class _TypeInfo:
    """What the renderer needs to know about a Struct type, computed once."""

    fields: tuple[tuple[str, bool, bool], ...]  # (name, is_static, always_collapse)
    uses_from_attributes: bool
    is_sequential_subclass: bool
    handled_elsewhere: bool


_TYPE_INFO: dict[type, _TypeInfo] = {}


def _has_generated_init(cls: type) -> bool:
    init = cls.__dict__.get("__init__")
    if init is None:
        for parent in cls.__mro__[1:]:
            init = parent.__dict__.get("__init__")
            if init is not None:
                break
    return bool(getattr(init, "__saikei_generated_init__", False))


def _type_info(cls: type) -> _TypeInfo:
    info = _TYPE_INFO.get(cls)
    if info is not None:
        return info
    from saikei.nn import Sequential

    fields = dataclasses.fields(cls)
    info = _TypeInfo(
        fields=tuple(
            (
                f.name,
                not is_pytree_node_field(f),
                bool(f.metadata.get("treescope_always_collapse", False)),
            )
            for f in fields
        ),
        uses_from_attributes=not _has_generated_init(cls) or any(not f.init for f in fields),
        is_sequential_subclass=issubclass(cls, Sequential) and cls is not Sequential,
        # A handler registered in treescope's global registry (e.g. for
        # NamedArrays) wins over this generic Struct rendering.
        handled_elsewhere=type_registries.lookup_treescope_handler_for_type(cls) is not None,
    )
    _TYPE_INFO[cls] = info
    return info


def static_field_style(part: rendering_parts.RenderableTreePart) -> Any:
    """Wraps the `name=` part of a static field in the muted static-field style.

    Args:
      part: The rendering part to wrap.

    Returns:
      The styled part (the text output is unchanged).

    Example:
      >>> from treescope import lowering, rendering_parts
      >>> part = static_field_style(rendering_parts.text("name="))
      >>> lowering.render_to_text_as_root(part)
      'name='
    """
    return rendering_parts.custom_style(part, css_style=STATIC_FIELD_CSS)


def _collapse_all(rendering: Any) -> None:
    renderable = getattr(rendering, "renderable", rendering)
    for foldable in renderable.foldables_in_this_part():
        foldable.set_expand_state(rendering_parts.ExpandState.COLLAPSED)


def _colors(obj: Any) -> tuple[str | None, str | None]:
    """(background_color, background_pattern) from `obj.treescope_color()`."""
    color = obj.treescope_color()
    if color is None or isinstance(color, str):
        return color, None
    border, fill = color
    return border, f"repeating-linear-gradient(-45deg, {fill} 0 4px, transparent 4px 8px)"


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


def render_struct(obj: Any, path: str | None, subtree_renderer: Any) -> Any:
    """Renders a Struct as a foldable constructor call (its `__treescope_repr__`).

    Args:
      obj: The Struct to render.
      path: Its keypath string from the root (None when unknown).
      subtree_renderer: Treescope's renderer for the children.

    Returns:
      A treescope rendering, or NotImplemented when another handler registered
      with treescope owns this type.

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> @sk.pytree_dataclass
      ... class Pair(sk.Struct):
      ...   left: int
      ...   right: int
      >>> treescope.render_to_text(Pair(1, 2))
      'Pair(left=1, right=2)'
    """
    cls = type(obj)
    info = _type_info(cls)
    if info.handled_elsewhere:
        return NotImplemented

    type_name = rendering_parts.maybe_qualified_type_name(cls)
    if info.uses_from_attributes:
        prefix = rendering_parts.siblings(
            type_name,
            rendering_parts.roundtrip_condition(roundtrip=rendering_parts.text(".from_attributes")),
            "(",
        )
    else:
        prefix = rendering_parts.siblings(type_name, "(")

    children = []
    last = len(info.fields) - 1
    subtree_renderer = with_executable_arrays(subtree_renderer)
    for i, (name, is_static, always_collapse) in enumerate(info.fields):
        value = getattr(obj, name)
        child = subtree_renderer(value, path=None if path is None else f"{path}.{name}")
        if always_collapse:
            _collapse_all(child)
        label = rendering_parts.text(f"{name}=")
        if is_static:
            label = static_field_style(label)
        if i < last:
            comma = rendering_parts.siblings(
                ",", rendering_parts.fold_condition(collapsed=rendering_parts.text(" "))
            )
        else:
            comma = rendering_parts.fold_condition(expanded=rendering_parts.text(","))
        children.append(
            rendering_parts.build_full_line_with_annotations(
                rendering_parts.siblings_with_annotations(label, child), comma
            )
        )

    background_color, background_pattern = _colors(obj)
    first_line_annotation = None
    if info.is_sequential_subclass:
        first_line_annotation = rendering_parts.comment_color(
            rendering_parts.text("  # Sequential")
        )
    return rendering_parts.build_foldable_tree_node_from_children(
        prefix=prefix,
        children=children,
        suffix=")",
        path=path,
        background_color=background_color,
        background_pattern=background_pattern,
        first_line_annotation=first_line_annotation,
    )


def _public_modules() -> list[types.ModuleType]:
    # Only layers below viz; saikei.models' classes live in public modules.
    import saikei.core
    import saikei.core.named_axes
    import saikei.core.shapecheck
    import saikei.nn

    return [saikei.nn, saikei.core, saikei.core.named_axes, saikei.core.shapecheck]


def register_public_aliases() -> None:
    """Registers the public import paths of saikei's types with treescope.

    After this, roundtrip renderings name types by where users import them
    from (`saikei.nn.Linear`) instead of their private defining module
    (`saikei.nn._linear.Linear`). Called when `saikei.viz` is imported.

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> register_public_aliases()
      >>> str(treescope.canonical_aliases.lookup_alias(sk.nn.Linear))
      'saikei.nn.Linear'
    """
    for module in _public_modules():
        for name in getattr(module, "__all__", None) or dir(module):
            if name.startswith("_"):
                continue
            value = getattr(module, name, None)
            is_class_or_function = isinstance(value, (type, types.FunctionType))
            if not is_class_or_function or not getattr(value, "__module__", "").startswith(
                "saikei."
            ):
                continue
            if getattr(value, "__name__", None) != name:
                continue
            if canonical_aliases.lookup_alias(value, infer_from_attributes=False):
                continue
            canonical_aliases.add_alias(
                value,
                canonical_aliases.ModuleAttributePath(module.__name__, (name,)),
                on_conflict="ignore",
            )
