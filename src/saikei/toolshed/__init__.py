"""saikei.toolshed: tools built on saikei's core and layers (import the submodules you need).

Submodules:
  token_visualization: show token arrays and per-token scores as text.
"""
