#!/usr/bin/env bash
# Installs hyperbagel with its test, bench and demo dependencies, and the browser the demo's test drives.
# torch==2.13.0 first: it is the CPU build that lies on this machine's disk; letting pip pick torch itself would pull
# a multi-GB CUDA build. Debian's chromium + chromium-driver come from apt (a test tool's own
# browser download does not work offline); apt-get update runs only when they are missing and not in the package
# lists. Safe to re-run. HYPERBAGEL_SKIP_BROWSER=1 skips the browser (its test then skips, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0" || python -m pip install --quiet "torch>=2.4"
python -m pip install --quiet -e ".[dev,bench,serve]"

install_browser() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
    [ -n "${HYPERBAGEL_SKIP_BROWSER:-}" ] && return 0
    local sudo="" log
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log="$(mktemp)"
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y -qq chromium chromium-driver >"$log" 2>&1; then
        $sudo apt-get update -qq >"$log" 2>&1 && $sudo apt-get install -y -qq chromium chromium-driver >"$log" 2>&1 || {
            cat "$log" >&2
            echo "setup.sh: could not install chromium + chromium-driver with apt (HYPERBAGEL_SKIP_BROWSER=1 skips)" >&2
            return 1
        }
    fi
    rm -f "$log"
}
install_browser

install_jemalloc() {  # for the long chains (scripts/jemalloc.sh); optional, so a failure only says so
    ldconfig -p 2>/dev/null | grep 'libjemalloc\.so\.2' >/dev/null && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libjemalloc2 >/dev/null 2>&1 ||
        echo "setup.sh: libjemalloc2 not installed (optional: the long training chains run slower without it)" >&2
}
install_jemalloc
