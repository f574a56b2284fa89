#!/usr/bin/env bash
# Build the documentation site into docs/_build/html: the overview, the API
# reference generated from the docstrings, and the tutorials in docs/tutorials,
# executed at build time in a Jupyter kernel running .venv's Python. Warnings
# are errors (-W --keep-going), and so is an error in any notebook cell.
#
# Sets up .venv with the `test` extra (which holds the `docs` extra and what the
# tutorials import: optax, gguf, transformers, ...) and the SmolLM2 weights.
# Executed notebooks are cached in docs/_build/.jupyter_cache, so a rebuild runs
# only the tutorials that changed; `bash scripts/docs.sh -E` rebuilds everything
# and `-D nb_execution_mode=force` reruns every notebook. Extra arguments go to
# sphinx-build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh" "test"
source scripts/_install_weights.sh
exec .venv/bin/python -m sphinx -b html -W --keep-going docs docs/_build/html "$@"
