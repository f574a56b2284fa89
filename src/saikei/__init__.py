"""saikei: legible, functional neural networks in JAX.

Import the alias namespace with `from saikei import sk`.
"""

__version__ = "0.1.0"
