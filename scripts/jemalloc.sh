# Sourced by the long chains (`. scripts/jemalloc.sh`): their python processes allocate through jemalloc when it is
# installed (Debian: libjemalloc2, which scripts/setup.sh installs where it can). Measured on the teacher's long run:
# 10-16 % faster steps with the same losses to the bit, where glibc's allocator slowed the process as its heap
# fragmented (docs/teacher.md); on CFG distillation no gain showed beyond this machine's own swings (26-35 s a
# step either way, 2026-12-06). Without it, nothing changes.
# awk reads to the end: leaving early would SIGPIPE ldconfig, and under `set -o pipefail` end the sourcing chain
jemalloc="$(ldconfig -p 2>/dev/null | awk '/libjemalloc\.so\.2/ && !found {print $NF; found = 1}')"
if [ -n "$jemalloc" ]; then
    export LD_PRELOAD="$jemalloc${LD_PRELOAD:+:$LD_PRELOAD}"
fi
