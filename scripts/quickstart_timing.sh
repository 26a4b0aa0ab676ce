#!/usr/bin/env bash
# Times the README's main command, `bash scripts/setup.sh && hyperbagel quickstart`, on a fresh clone of this
# checkout's HEAD, as one call (issue 18 item 4: ≤ 2 hours on this machine, with nothing else running).
# setup.sh installs the clone in this checkout's place, so this checkout is installed again afterwards (a killed call
# skips that: run `pip install --no-deps -e .` here, or setup.sh).
# Each call appends `commit, start, seconds, exit status` to CLONE/timing.txt; a call that finds CLONE already there
# continues its run (the quickstart resumes from its cached stages), and the line says the timing spans calls; once a
# call has finished with exit status 0, a call only shows its line.
# Usage: bash scripts/quickstart_timing.sh [CLONE, default /tmp/hyperbagel-quickstart]
set -euo pipefail
cd "$(dirname "$0")/.."
here="$(pwd)"
clone="${1:-/tmp/hyperbagel-quickstart}"
calls="one call"
if grep -s "exit 0" "$clone/timing.txt"; then
    echo "quickstart_timing: $clone has finished (above); remove it to measure again"
    exit 0
elif [ -d "$clone/.git" ]; then
    calls="continues an interrupted run: add the earlier lines"
    echo "quickstart_timing: continuing $clone ($calls)"
else
    git clone --quiet "$here" "$clone"
fi

cd "$clone"
start=$(date +%s)
status=0
(bash scripts/setup.sh && hyperbagel quickstart) || status=$?
seconds=$(( $(date +%s) - start ))
line="$(git rev-parse --short HEAD) $(date -u -d "@$start" +%FT%TZ) ${seconds} s, exit $status ($calls)"
echo "$line" >> timing.txt
echo "quickstart_timing: $line"

cd "$here"
python -m pip install --quiet --no-deps -e .
exit "$status"
