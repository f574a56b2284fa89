"""The one place where saikei.viz plugs its renderers into core types.

`saikei.core` sits below `saikei.viz` in the layering and never imports it.
Core types still carry treescope's protocol methods (`__treescope_repr__`,
`__treescope_ndarray_adapter__`, `__treescope_root_repr__`), but those only
look up a function registered here; importing `saikei.viz` (which
`from saikei import sk` does) registers them all. Until then core objects
render through treescope's generic handlers, and the few core methods that
display something say what to import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_HOOKS: dict[str, Callable[..., Any]] = {}


def register(name: str, function: Callable[..., Any]) -> None:
    """Registers the viz implementation `function` under `name` (viz calls this).

    Example:
      >>> import saikei.viz  # registers the renderers
      >>> from saikei.core import _viz_hooks
      >>> _viz_hooks.lookup("struct") is not None
      True
    """
    _HOOKS[name] = function


def lookup(name: str) -> Callable[..., Any] | None:
    """The function registered under `name`, or None if saikei.viz is not loaded.

    Example:
      >>> from saikei.core import _viz_hooks
      >>> _viz_hooks.lookup("no such hook") is None
      True
    """
    return _HOOKS.get(name)


def require(name: str, what: str) -> Callable[..., Any]:
    """The function registered under `name`; raises a clear error if there is none.

    Example:
      >>> import saikei.viz  # registers the renderers
      >>> from saikei.core import _viz_hooks
      >>> callable(_viz_hooks.require("display", "show_selection"))
      True
    """
    function = _HOOKS.get(name)
    if function is None:
        raise RuntimeError(
            f"{what} needs saikei's treescope integration, which is not loaded yet."
            " Run `import saikei.viz` (or `from saikei import sk`) first."
        )
    return function


def render(name: str, node: Any, path: str | None, subtree_renderer: Any) -> Any:
    """Treescope hook body: renders with the registered handler, else lets treescope choose.

    Example:
      >>> from saikei.core import _viz_hooks
      >>> _viz_hooks.render("no such hook", 1, None, None)
      NotImplemented
    """
    function = _HOOKS.get(name)
    if function is None:
        return NotImplemented
    return function(node, path, subtree_renderer)
