"""Show values in the IPython debugger (`ipdb`, `%debug`) with treescope.

`patch_ipdb()` replaces the display hook of `IPython.core.debugger.Pdb`, so an
expression typed at the debugger prompt is shown with `treescope.display`
(rich and foldable in a notebook) instead of its `repr`. `unpatch_ipdb()` puts
the original hook back. IPython is imported only when these are called.

Example:
  >>> from saikei.toolshed import patch_ipdb
  >>> callable(patch_ipdb.patch_ipdb) and callable(patch_ipdb.unpatch_ipdb)
  True
"""

from __future__ import annotations

import importlib
from typing import Any

import treescope

__all__ = ["displayhook_with_ipython", "patch_ipdb", "unpatch_ipdb"]

# The original hook is kept on the patched class itself, so the patch state
# lives with the object it changes rather than in this module.
_ORIGINAL_ATTR = "_saikei_original_displayhook"


def _pdb_class() -> Any:
    try:
        debugger = importlib.import_module("IPython.core.debugger")
    except ImportError as e:
        raise ImportError(
            "patch_ipdb needs IPython (its debugger, IPython.core.debugger.Pdb), which could"
            " not be imported. Install it with `pip install ipython`."
        ) from e
    return debugger.Pdb


def displayhook_with_ipython(self: Any, obj: Any) -> None:
    """The debugger display hook `patch_ipdb` installs: shows a value with treescope.

    It has the signature of a `Pdb.displayhook` method. `None` (a statement's
    result) shows nothing, as at a plain prompt.

    Args:
      self: The debugger instance (unused).
      obj: The value of the expression typed at the prompt.

    Example:
      >>> from saikei.toolshed import patch_ipdb
      >>> patch_ipdb.displayhook_with_ipython(None, None)  # shows nothing
    """
    if obj is not None:
        treescope.display(obj)


def patch_ipdb() -> None:
    """Makes the IPython debugger display values with treescope.

    Patching twice is harmless; undo with `unpatch_ipdb()`.

    Raises:
      ImportError: If IPython is not installed.

    Example:
      >>> from saikei.toolshed import patch_ipdb
      >>> try:
      ...   patch_ipdb.patch_ipdb()
      ...   patch_ipdb.unpatch_ipdb()
      ... except ImportError as e:
      ...   print("IPython" in str(e))
      ... else:
      ...   print(True)
      True
    """
    pdb_cls = _pdb_class()
    if _ORIGINAL_ATTR in pdb_cls.__dict__:
        return
    setattr(pdb_cls, _ORIGINAL_ATTR, pdb_cls.__dict__.get("displayhook"))
    pdb_cls.displayhook = displayhook_with_ipython


def unpatch_ipdb() -> None:
    """Restores the IPython debugger's own display of values (undoes `patch_ipdb`).

    Does nothing if the debugger was not patched.

    Raises:
      ImportError: If IPython is not installed.

    Example:
      >>> from saikei.toolshed import patch_ipdb
      >>> try:
      ...   patch_ipdb.unpatch_ipdb()
      ... except ImportError:
      ...   pass
    """
    pdb_cls = _pdb_class()
    if _ORIGINAL_ATTR not in pdb_cls.__dict__:
        return
    original = pdb_cls.__dict__[_ORIGINAL_ATTR]
    delattr(pdb_cls, _ORIGINAL_ATTR)
    if original is None:
        # The hook was inherited (e.g. from pdb.Pdb): removing ours exposes it again.
        del pdb_cls.displayhook
    else:
        pdb_cls.displayhook = original
