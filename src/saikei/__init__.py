"""saikei: legible, functional neural networks in JAX.

Import the alias namespace with `from saikei import sk`. Importing saikei turns
on JAX's persistent compilation cache in a per-user directory (see
`set_compilation_cache`; `SAIKEI_COMPILATION_CACHE=0` turns it off).
"""

from saikei import _compilation_cache
from saikei._compilation_cache import set_compilation_cache as set_compilation_cache

__version__ = "0.1.0"

_compilation_cache.enable_at_import()
