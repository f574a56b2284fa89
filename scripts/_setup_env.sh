# Shared setup for scripts/demo.sh and scripts/test.sh (sourced, not run).
#
# Creates .venv at the repository root if it is missing (Python >= 3.11) and
# installs saikei into it in editable mode with the extra named in $1 (empty
# for the core only). The install is skipped when pyproject.toml has not
# changed since the last successful install of that extra, so a second run
# starts at once; delete .venv to start from scratch.

_saikei_extra="${1:-}"
SAIKEI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$SAIKEI_ROOT"

_saikei_find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    if ! _saikei_python="$(_saikei_find_python)"; then
        echo "setup: saikei needs Python >= 3.11; install it or point PYTHON at one." >&2
        exit 2
    fi
    echo "setup: creating .venv with $("$_saikei_python" --version 2>&1)"
    "$_saikei_python" -m venv .venv
fi

if [ -n "$_saikei_extra" ]; then
    _saikei_target=".[$_saikei_extra]"
    _saikei_stamp=".venv/.saikei-installed-$_saikei_extra"
else
    _saikei_target="."
    _saikei_stamp=".venv/.saikei-installed-core"
fi
_saikei_want="$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"

if [ ! -f "$_saikei_stamp" ] || [ "$(cat "$_saikei_stamp")" != "$_saikei_want" ]; then
    echo "setup: installing saikei ($_saikei_target) into .venv (log: .venv/pip-install.log)"
    if ! .venv/bin/python -m pip install --disable-pip-version-check -e "$_saikei_target" \
        >.venv/pip-install.log 2>&1; then
        tail -n 40 .venv/pip-install.log >&2
        echo "setup: pip install -e \"$_saikei_target\" failed; full log in .venv/pip-install.log" >&2
        exit 2
    fi
    echo "$_saikei_want" >"$_saikei_stamp"
else
    echo "setup: .venv is up to date ($_saikei_target)"
fi
