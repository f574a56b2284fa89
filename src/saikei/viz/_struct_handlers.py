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

from treescope import canonical_aliases, rendering_parts, type_registries

from saikei.core._struct import is_pytree_node_field
from saikei.viz._node_building import constructor_node, field_lines

__all__ = ["register_public_aliases", "render_struct"]


@dataclasses.dataclass(frozen=True)
class _TypeInfo:
    """What the renderer needs to know about a Struct type, computed once."""

    fields: tuple[tuple[str, bool, bool], ...]  # (name, is_static, always_collapse)
    uses_from_attributes: bool
    is_sequential_subclass: bool
    handled_elsewhere: bool
    # `TypeName(` (qualified in roundtrip mode), resolved once per type.
    prefix: rendering_parts.RenderableTreePart


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
    uses_from_attributes = not _has_generated_init(cls) or any(not f.init for f in fields)
    type_name = rendering_parts.maybe_qualified_type_name(cls)
    if uses_from_attributes:
        prefix = rendering_parts.siblings(
            type_name,
            rendering_parts.roundtrip_condition(roundtrip=rendering_parts.text(".from_attributes")),
            "(",
        )
    else:
        prefix = rendering_parts.siblings(type_name, "(")
    info = _TypeInfo(
        fields=tuple(
            (
                f.name,
                not is_pytree_node_field(f),
                bool(f.metadata.get("treescope_always_collapse", False)),
            )
            for f in fields
        ),
        uses_from_attributes=uses_from_attributes,
        is_sequential_subclass=issubclass(cls, Sequential) and cls is not Sequential,
        # A handler registered in treescope's global registry (e.g. for
        # NamedArrays) wins over this generic Struct rendering.
        handled_elsewhere=type_registries.lookup_treescope_handler_for_type(cls) is not None,
        prefix=prefix,
    )
    _TYPE_INFO[cls] = info
    return info


_SEQUENTIAL_COMMENT = rendering_parts.comment_color(rendering_parts.text("  # Sequential"))


def _colors(obj: Any) -> tuple[str | None, str | None]:
    """(background_color, background_pattern) from `obj.treescope_color()`."""
    color = obj.treescope_color()
    if color is None or isinstance(color, str):
        return color, None
    border, fill = color
    return border, f"repeating-linear-gradient(-45deg, {fill} 0 4px, transparent 4px 8px)"


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

    fields = [
        (name, getattr(obj, name), is_static, always_collapse)
        for name, is_static, always_collapse in info.fields
    ]
    background_color, background_pattern = _colors(obj)
    return constructor_node(
        info.prefix,
        field_lines(path, fields, subtree_renderer),
        ")",
        path,
        background_color=background_color,
        background_pattern=background_pattern,
        first_line_annotation=_SEQUENTIAL_COMMENT if info.is_sequential_subclass else None,
        template_key=cls,
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
