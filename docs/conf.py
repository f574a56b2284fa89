"""Sphinx configuration for saikei's documentation (build it with `bash scripts/docs.sh`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

# The tutorials run in a Jupyter kernel started by myst-nb. Make the kernel named
# `python3` resolve to the kernelspec installed in this interpreter's prefix (the
# repository's .venv): JUPYTER_PATH comes before the user's and the system's
# kernel folders, and that kernelspec starts `python`, which jupyter_client
# replaces by this interpreter. A hidden cell in the first tutorial checks that
# the kernel really runs `SAIKEI_DOCS_PYTHON`.
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    [str(Path(sys.prefix) / "share" / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])]
)
os.environ["SAIKEI_DOCS_PYTHON"] = sys.executable
# Tutorials run offline and on CPU whatever machine builds them.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

project = "saikei"
author = "the saikei authors"
copyright = "the saikei authors"  # noqa: A001

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "saikei_apidoc",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

html_theme = "furo"
html_title = "saikei"

# Docstrings are Google style (Args / Returns / Example).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# Every tutorial runs at build time; a cell error fails the build. The test suite
# builds with nb_execution_mode=force (each tutorial runs exactly once per run);
# scripts/docs.sh uses the cache so an unchanged tutorial is not run again.
nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 600
nb_kernel_rgx_aliases = {".*": "python3"}
nb_merge_streams = True
# saikei.toolshed's docstring lists its submodules like arguments.
napoleon_custom_sections = [("Submodules", "params_style")]
