"""Display helpers for `sk.ts`: interactive setup, `display` and `show`.

In an IPython session these forward to treescope's rich HTML display. Outside
IPython (plain scripts, tests) they print treescope's text rendering instead
of failing, so the same notebook code still shows something.
"""

from __future__ import annotations

import sys
from typing import Any

import treescope
from treescope import lowering

__all__ = [
    "basic_interactive_setup",
    "disable_interactive_context",
    "display",
    "display_root",
    "enable_interactive_context",
    "in_ipython",
    "register_as_default",
    "render_root_to_text",
    "show",
]


def in_ipython() -> bool:
    """Whether code is running inside an IPython shell or notebook kernel.

    Example:
      >>> in_ipython()
      False
    """
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


def render_root_to_text(value: Any, roundtrip_mode: bool = False) -> str:
    """Renders `value` to text as a root, honouring `__treescope_root_repr__`.

    Args:
      value: The object to render.
      roundtrip_mode: Whether to render in roundtrip mode.

    Returns:
      The text rendering.

    Example:
      >>> render_root_to_text({"a": 1})
      "{'a': 1}"
    """
    root_repr = getattr(type(value), "__treescope_root_repr__", None)
    if root_repr is None:
        return treescope.render_to_text(value, roundtrip_mode=roundtrip_mode)
    return lowering.render_to_text_as_root(root_repr(value), roundtrip=roundtrip_mode)


def display(
    value: Any,
    ignore_exceptions: bool = False,
    roundtrip_mode: bool = False,
    autovisualize: Any = None,
) -> None:
    """Displays `value` as a foldable treescope rendering (text outside IPython).

    Args:
      value: The object to display.
      ignore_exceptions: Show a fallback for subtrees that fail to render.
      roundtrip_mode: Start in roundtrip mode.
      autovisualize: Autovisualizer override (see `treescope.display`).

    Example:
      >>> from saikei import sk
      >>> display(sk.nn.Identity())
      Identity()
    """
    if in_ipython():
        treescope.display(
            value,
            ignore_exceptions=ignore_exceptions,
            roundtrip_mode=roundtrip_mode,
            autovisualize=autovisualize,
        )
        return
    print(render_root_to_text(value, roundtrip_mode=roundtrip_mode))


def display_root(root: Any, roundtrip_mode: bool = False) -> None:
    """Displays an already built root rendering part (text outside IPython).

    Args:
      root: A rendering part, e.g. from `render_selection_root`.
      roundtrip_mode: Start in roundtrip mode.

    Example:
      >>> from treescope import rendering_parts
      >>> display_root(rendering_parts.text("hello"))
      hello
    """
    if in_ipython():
        import IPython.display

        html = lowering.render_to_html_as_root(root, roundtrip=roundtrip_mode)
        IPython.display.display(IPython.display.HTML(html))
        return
    print(lowering.render_to_text_as_root(root, roundtrip=roundtrip_mode))


def show(*args: Any, wrap: bool = False, space_separated: bool = True) -> None:
    """Shows values inline like `print`, with rich renderings in IPython.

    Strings show as themselves; other values as their treescope rendering.

    Args:
      *args: The values to show.
      wrap: Whether to wrap at the end of the line (IPython only).
      space_separated: Whether to put a space between values.

    Example:
      >>> from saikei import sk
      >>> show("layer:", sk.nn.Identity())
      layer: Identity()
    """
    if in_ipython():
        treescope.show(*args, wrap=wrap, space_separated=space_separated)
        return
    parts = [arg if isinstance(arg, str) else render_root_to_text(arg) for arg in args]
    print((" " if space_separated else "").join(parts))


def register_as_default(streaming: bool = True, compress_html: bool = True) -> None:
    """Makes treescope IPython's default renderer (a no-op outside IPython).

    Args:
      streaming: Render in streaming mode.
      compress_html: Compress the HTML sent to the browser.

    Example:
      >>> register_as_default()
    """
    if in_ipython():
        treescope.register_as_default(streaming=streaming, compress_html=compress_html)


def basic_interactive_setup(
    autovisualize_arrays: bool = True, abbreviation_threshold: int | None = None
) -> None:
    """Sets up IPython for exploring saikei models with treescope.

    Registers treescope as the default renderer and its `%%autovisualize` and
    `%%with` magics; with `autovisualize_arrays`, arrays (NamedArrays
    included) are drawn automatically by saikei's `ArrayAutovisualizer`.
    Outside IPython only the global settings are applied.

    Args:
      autovisualize_arrays: Whether to draw arrays automatically.
      abbreviation_threshold: If not None, collapsed objects are abbreviated
        below this depth (1 or 2 work well).

    Example:
      >>> basic_interactive_setup(autovisualize_arrays=False, abbreviation_threshold=None)
    """
    if abbreviation_threshold is not None and (
        not isinstance(abbreviation_threshold, int) or abbreviation_threshold < 0
    ):
        raise ValueError(
            f"abbreviation_threshold must be None or a non-negative int, got"
            f" {abbreviation_threshold!r}."
        )
    if in_ipython():
        treescope.register_as_default()
        treescope.register_autovisualize_magic()
        treescope.register_context_manager_magic()
    if autovisualize_arrays:
        from saikei.viz._arrays_api import ArrayAutovisualizer

        treescope.active_autovisualizer.set_globally(ArrayAutovisualizer())
    if abbreviation_threshold is not None:
        treescope.abbreviation_threshold.set_globally(abbreviation_threshold)


def enable_interactive_context() -> None:
    """Does nothing: treescope's settings are always interactive (kept for penzai code).

    Old penzai code turned on global treescope settings with this call; they
    are now on by default.

    Example:
      >>> enable_interactive_context()
    """


def disable_interactive_context() -> None:
    """Raises: global treescope settings can no longer be switched off (as in penzai).

    To change a setting for a block of code, use its context manager, e.g.
    `treescope.active_autovisualizer.set_scoped(None)`.

    Example:
      >>> disable_interactive_context()
      Traceback (most recent call last):
        ...
      RuntimeError: disable_interactive_context is no longer supported: ...
    """
    raise RuntimeError(
        "disable_interactive_context is no longer supported: treescope's global settings"
        " are always active. Change one setting for a block of code with its"
        " `set_scoped` context manager instead, e.g."
        " `with treescope.active_autovisualizer.set_scoped(None): ...`."
    )
