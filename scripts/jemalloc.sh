# Sourced by the long chains (`. scripts/jemalloc.sh`): their python processes allocate through jemalloc when it is
# installed (Debian: libjemalloc2, which scripts/setup.sh installs where it can), 10-16 % faster training steps here
# with the same losses to the bit, where glibc's allocator slows a long process down as its heap fragments
# (docs/teacher.md). Without it, nothing changes.
jemalloc="$(ldconfig -p 2>/dev/null | awk '/libjemalloc\.so\.2/ {print $NF; exit}')"
if [ -n "$jemalloc" ]; then
    export LD_PRELOAD="$jemalloc${LD_PRELOAD:+:$LD_PRELOAD}"
fi
