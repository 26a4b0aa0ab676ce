#!/usr/bin/env bash
# The prepared GPU checks of issues 19 and 20 as one call on one GPU, from the repository root:
#   bash scripts/gpu_checks.sh OUT [PARTS]     # PARTS: comma-separated, in order (default: dmdo,roofline)
#     dmdo      FSDP2 DMDO steps at BAGEL-7B width, 2 layers, 896 px, against the memory plan (issue 19; ≈ 5 min)
#     roofline  velocity at 1k/4k latent tokens against the bf16 matmul peak, a decode step against weight
#               bytes ÷ bandwidth, eager then compiled (issue 20)
#     speed     end-to-end teacher / 6-step / 1-step text-to-image and editing, the draft's cost c (issue 20)
#   SMOKE=1 bash scripts/gpu_checks.sh OUT dmdo,roofline,speed    # the same parts at micro on the CPU, seconds
# Each part runs under its own time limit (seconds: DMDO_S, ROOFLINE_S, SPEED_S) so that the call ends in time;
# roofline and speed rewrite their JSON after every row (speed: every image row, understanding at its end), so a
# part cut short still returns what it measured.
# OUT/status.txt has each part's exit status (124: its time ran out).
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT [dmdo,roofline,speed]" >&2; exit 2; }
out=$1 parts=${2:-dmdo,roofline}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# the device image's interpreter is python3 (no promise of `python` or `torchrun` on PATH); one node: the process
# group's sockets on the loopback, whatever the machine's hostname resolves to
py=${PYTHON:-python3}
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo} NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo}
mkdir -p "$out"
if [ -n "${SMOKE:-}" ]; then
    device=cpu size=(--preset micro --layers 2 --image-size 64) model=(--preset micro) tokens=16,64 image=64
    # fp32 and small limit probes: an AVX2-only CPU has no bf16 kernels (an 8192³ bf16 matmul takes many minutes)
    limits=(--dtype float32 --matmul 1024 --copy-gib 0.25)
else
    device=cuda size=() model=(--preset bagel-7b) tokens=1024,4096 image=512 limits=()
fi

part() {  # NAME LIMIT COMMAND...: run, log to OUT/NAME.log, record the exit status
    local name=$1 limit=$2
    shift 2
    echo "$(date +%T) $name (at most ${limit} s)"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name $rc" >>"$out/status.txt"
    echo "$(date +%T) $name: exit $rc"
    tail -n 3 "$out/$name.log"
}

for p in ${parts//,/ }; do
    case $p in
        dmdo)  # its random model folders are GBs: they stay on the machine, the report comes back
            work=$(mktemp -d)
            part dmdo "${DMDO_S:-330}" "$py" -m torch.distributed.run --nproc_per_node=1 scripts/gpu_dmdo_plan.py \
                --device "$device" "${size[@]}" --out "$work"
            cp "$work/dmdo-plan.json" "$out/" 2>/dev/null
            rm -rf "$work" ;;
        roofline) part roofline "${ROOFLINE_S:-200}" "$py" scripts/gpu_roofline.py "${model[@]}" --device "$device" \
                      --tokens "$tokens" "${limits[@]}" --compile --out "$out/roofline.json" ;;
        speed) part speed "${SPEED_S:-480}" "$py" scripts/gpu_speed.py "${model[@]}" --device "$device" \
                   --image-size "$image" --compile --out "$out/speed.json" ;;
        *) echo "unknown part '$p' (dmdo, roofline, speed)" >&2; exit 2 ;;
    esac
done
