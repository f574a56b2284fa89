"""`wrap_module`: a stand-in for a module whose functions are all lifted with `nmap`.

With `njnp = wrap_module(jax.numpy)`, `njnp.linalg.norm(x)` means
`sk.nx.nmap(jax.numpy.linalg.norm)(x)`: functions vectorize over the named
axes of their NamedArray arguments and see only positional axes. Submodules
are wrapped the same way, lazily, on attribute access.
"""

from __future__ import annotations

import types
from typing import Any

from saikei.core.named_axes import nmap

__all__ = ["AutoNmapModuleWrapper", "wrap_module"]


class AutoNmapModuleWrapper:
    """Attribute access on a module, with functions lifted by `sk.nx.nmap`.

    On each attribute: a submodule comes back wrapped again; a class (e.g. a
    dtype such as `jnp.float32`, so it can still be passed as `dtype=`) or a
    non-callable constant (e.g. `jnp.pi`) comes back unchanged; any other
    callable comes back as `nmap(callable)`.

    Attributes:
      module: The wrapped module.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.auto_nmap import AutoNmapModuleWrapper
      >>> njnp = AutoNmapModuleWrapper(jnp)
      >>> njnp.module is jnp
      True
    """

    __slots__ = ("module",)

    def __init__(self, module: types.ModuleType) -> None:
        if not isinstance(module, types.ModuleType):
            raise TypeError(
                f"wrap_module: expected a module (e.g. jax.numpy), got {module!r} of type"
                f" {type(module).__name__}. To lift a single function use sk.nx.nmap."
            )
        object.__setattr__(self, "module", module)

    def __getattr__(self, name: str) -> Any:
        module = object.__getattribute__(self, "module")
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(
                f"module {module.__name__!r} (wrapped by wrap_module) has no attribute {name!r}"
            ) from None
        if isinstance(value, types.ModuleType):
            return AutoNmapModuleWrapper(value)
        if isinstance(value, type) or not callable(value):
            return value
        return nmap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("AutoNmapModuleWrapper is read-only; set attributes on the module.")

    def __dir__(self) -> list[str]:
        return dir(object.__getattribute__(self, "module"))

    def __repr__(self) -> str:
        return f"wrap_module({object.__getattribute__(self, 'module').__name__})"


def wrap_module(module: types.ModuleType) -> AutoNmapModuleWrapper:
    """Wraps `module` so that its functions apply over named axes (`sk.nx.nmap`).

    Args:
      module: A module, e.g. `jax.numpy`, `jax.lax` or `jax.random`.

    Returns:
      An `AutoNmapModuleWrapper`: its callables are `nmap`-ped, its submodules
      wrapped recursively, its classes and constants returned unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed.auto_nmap import wrap_module
      >>> njnp = wrap_module(jnp)
      >>> x = sk.nx.ones({"batch": 2, "features": 3})
      >>> njnp.sum(x.untag("features")).named_shape
      {'batch': 2}
      >>> njnp.linalg.norm(x.untag("features")).named_shape
      {'batch': 2}
    """
    return AutoNmapModuleWrapper(module)
