# Installs headless Chromium and its WebDriver for tests/browser (sourced by scripts/test.sh).
#
# Debian packages `chromium` and `chromium-driver` are installed with apt-get
# when either binary is missing. This step never fails the test command: when
# apt-get is unavailable, we are not root (and have no password-less sudo), or
# the install fails, the reason is written to .venv/browser-install.log and the
# browser test skips, quoting that log. The apt output goes to the same log.

_saikei_browser_log=".venv/browser-install.log"

_saikei_have_browser() {
    { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } &&
        command -v chromedriver >/dev/null 2>&1
}

_saikei_install_browser() {
    local sudo=""
    if _saikei_have_browser; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "browser: apt-get not found; cannot install chromium + chromium-driver" \
            >"$_saikei_browser_log"
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            sudo="sudo -n"
        else
            echo "browser: not root and no password-less sudo; cannot apt-get install chromium" \
                >"$_saikei_browser_log"
            return 1
        fi
    fi
    echo "setup: installing chromium + chromium-driver with apt-get (log: $_saikei_browser_log)"
    {
        echo "browser: apt-get update / install chromium chromium-driver"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                --no-install-recommends chromium chromium-driver
    } >"$_saikei_browser_log" 2>&1
    if ! _saikei_have_browser; then
        echo "browser: apt-get install chromium chromium-driver failed (its output is in this log)" \
            >>"$_saikei_browser_log"
        return 1
    fi
}

if ! _saikei_install_browser; then
    echo "setup: no headless Chromium: $(tail -n 1 "$_saikei_browser_log")" >&2
    echo "setup: the browser test will skip (log: $_saikei_browser_log)" >&2
fi
