#!/usr/bin/env bash
# Check formatting and lint with ruff (the versions pinned by the `test` extra):
#   bash scripts/lint.sh          # check only
#   bash scripts/lint.sh --fix    # apply ruff's formatting and safe fixes
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh" "test"
paths=(src tests benchmarks)
if [ "${1:-}" = "--fix" ]; then
    .venv/bin/ruff format "${paths[@]}"
    .venv/bin/ruff check --fix "${paths[@]}"
else
    .venv/bin/ruff format --check "${paths[@]}"
    .venv/bin/ruff check "${paths[@]}"
fi
