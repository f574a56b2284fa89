"""Plugs saikei.viz's renderers into saikei.core's treescope hooks.

`saikei.core` never imports `saikei.viz` (viz is the layer above it). Its
types call the functions registered in `saikei.core._viz_hooks`; this module
registers them, and `saikei.viz` calls `register_core_hooks()` on import.
"""

from __future__ import annotations

from saikei.core import _viz_hooks
from saikei.viz import _setup
from saikei.viz._array_adapter import NamedArrayAdapter
from saikei.viz._named_array_handlers import render_named_array
from saikei.viz._selection_rendering import render_selection_root, render_value_focused_root
from saikei.viz._shapecheck_handlers import render_arrayspec, render_dim_var, render_wildcard
from saikei.viz._struct_handlers import render_struct
from saikei.viz._variable_handlers import render_variable


def register_core_hooks() -> None:
    """Registers every core type's renderer and display function (idempotent).

    Example:
      >>> from saikei.viz._core_hooks import register_core_hooks
      >>> register_core_hooks()
      >>> import treescope
      >>> from saikei import sk
      >>> treescope.render_to_text(sk.chk.var("n"))
      '<DimVar {n}>'
    """
    adapter = NamedArrayAdapter()
    _viz_hooks.register("struct", render_struct)
    _viz_hooks.register("named_array", render_named_array)
    _viz_hooks.register("named_array_adapter", lambda: adapter)
    _viz_hooks.register("variable", render_variable)
    _viz_hooks.register("dim_var", render_dim_var)
    _viz_hooks.register("arrayspec", render_arrayspec)
    _viz_hooks.register("wildcard", render_wildcard)
    _viz_hooks.register("selection_root", render_selection_root)
    _viz_hooks.register("value_focused_root", render_value_focused_root)
    _viz_hooks.register("display", _setup.display)
    _viz_hooks.register("display_root", _setup.display_root)
