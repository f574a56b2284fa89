#!/usr/bin/env bash
# Set up .venv (saikei + the `test` extra) and run the whole suite: the tests
# under tests/ and the doctests of src/saikei (see [tool.pytest.ini_options]),
# on every core with pytest-xdist. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh" "test"
exec .venv/bin/python -m pytest -n auto "$@"
