#!/usr/bin/env bash
# Installs hyperbagel and its test dependencies. torch==2.13.0 first: it is the CPU build that lies on this
# machine's disk; letting pip pick torch itself would pull a multi-GB CUDA build (docs/environment.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0" || python -m pip install --quiet "torch>=2.4"
python -m pip install --quiet -e ".[dev,bench]"
if [ -n "${HYPERBAGEL_BROWSER_TESTS:-}" ] && ! command -v chromium >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
