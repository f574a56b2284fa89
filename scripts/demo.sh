#!/usr/bin/env bash
# Set up .venv (saikei core only) and run the demo: bash scripts/demo.sh [--out PATH]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh" ""
exec .venv/bin/python -m saikei.demo "$@"
