#!/usr/bin/env bash
# Set up .venv (saikei + the `test` extra) and run the whole suite: the tests
# under tests/ and the doctests of src/saikei (see [tool.pytest.ini_options]),
# on every core with pytest-xdist. Extra arguments go to pytest. The browser
# test needs Chromium, which scripts/_install_browser.sh installs if missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh" "test"
# Headless Chromium for tests/browser (apt-get; never fails the command).
source scripts/_install_browser.sh
# Real pretrained weights (GGUF) for tests/models/test_real_weights.py.
source scripts/_install_weights.sh
exec .venv/bin/python -m pytest -n auto "$@"
