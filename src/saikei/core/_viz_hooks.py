"""The one place where the viz layer plugs its renderers into core types.

`saikei.core` sits below the viz layer and never imports it.
Core types still carry treescope's protocol methods (`__treescope_repr__`,
`__treescope_ndarray_adapter__`, `__treescope_root_repr__`), but those only
look up a function registered here; the viz layer registers them all when
it is imported (`from saikei import sk` does that). Until then core objects
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
      >>> from saikei.core import _viz_hooks
      >>> _viz_hooks.register("doc-example", lambda node, path, renderer: "drawn")
      >>> _viz_hooks.lookup("doc-example")(1, None, None)
      'drawn'
    """
    _HOOKS[name] = function


def lookup(name: str) -> Callable[..., Any] | None:
    """The function registered under `name`, or None if the viz layer is not loaded.

    Example:
      >>> from saikei.core import _viz_hooks
      >>> _viz_hooks.lookup("no such hook") is None
      True
    """
    return _HOOKS.get(name)


def require(name: str, what: str) -> Callable[..., Any]:
    """The function registered under `name`; raises a clear error if there is none.

    Example:
      >>> from saikei.core import _viz_hooks
      >>> _viz_hooks.register("doc-example", print)
      >>> _viz_hooks.require("doc-example", "this example") is print
      True
      >>> _viz_hooks.require("no such hook", "this example")
      Traceback (most recent call last):
      RuntimeError: this example needs saikei's treescope integration, ...
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
