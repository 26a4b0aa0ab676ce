#!/usr/bin/env bash
# The default teacher's long run on this machine, in the background; run it again to resume (exact) after a stop.
#   bash scripts/teacher_long.sh [OUT]      # OUT defaults to runs/teacher-long; log: OUT.log
# Trains the VAE first (runs/vae, log runs/vae.log): an interrupted VAE resumes too, and a finished one is a no-op.
# The whole chain runs in its own process group, whose id is in OUT.pid. Pause it while the test suite runs:
#   kill -STOP -- -$(cat OUT.pid)     then     kill -CONT -- -$(cat OUT.pid)
# Uses jemalloc when it is installed (Debian: libjemalloc2): 10-16 % faster steps here, same losses to the bit
# (docs/teacher.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/teacher-long}
mkdir -p "$(dirname "$out")" runs
if [ -f "$out.pid" ] && kill -0 "$(cat "$out.pid")" 2>/dev/null; then
    echo "teacher run already going: pid $(cat "$out.pid"), log $out.log" >&2
    exit 1
fi
# this checkout's code, whichever clone an editable install points at (a fresh-clone test run re-points it)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
. scripts/jemalloc.sh
export TQDM_MININTERVAL=60
setsid nohup bash -c '
    set -e
    python -m hyperbagel.cli train vae --preset tiny --out runs/vae >>runs/vae.log 2>&1
    # which autoencoder this start uses, to compare rebuilds on other machines (docs/teacher.md)
    echo "$(date -u +%FT%TZ) $(hostname) autoencoder sha256 $(sha256sum runs/vae/ae.safetensors)" >>"$1.log"
    exec python -m hyperbagel.cli train teacher --vae runs/vae/ae.safetensors --out "$1" >>"$1.log" 2>&1
' teacher-long "$out" </dev/null >/dev/null 2>&1 &
echo "$!" >"$out.pid"
echo "teacher run: pid $(cat "$out.pid") (process group), logs runs/vae.log then $out.log"
