#!/usr/bin/env bash
# Stage 1 trained further for editing, then DMDO straight from it (scripts/distill_acceptance.sh and
# scripts/dmdo_arms.sh first). Half of editing's deficit is stage 1's (cfg-49 −0.011 against the teacher, cfg-6
# −0.022) and its editing MSE was still falling when the chain's 200 steps ended, while text-to-image's had flattened
# by step 50; DMDO from stage 1 did at least as well as from TSCD at 100 steps. So: the chain's stage-1 run continued
# from its step-200 checkpoint and optimizer to 400 steps, with twice the editing rows and half the text-to-image
# rows a step (the same cost a step, 30 s here) and the learning rate falling to 0 over the last 50; then DMDO's
# default 300 steps from it; then one bench per suite beside the chain's dmdo-6 and the 100-step dmdo-cfg-6.
# Each command resumes when re-run; a finished bench shows its report. About 1 h 40 min of stage 1, 55 min of DMDO
# and 2 h of benches on two cores. Usage: bash scripts/stage1_edit_arm.sh [TEACHER_FOLDER or shipped name]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/jemalloc.sh
T="${1:-shapes-teacher}"
if [ ! -d runs/distill-cfg-edit ]; then
    [ -d runs/distill-cfg ] || { echo "runs/distill-cfg is missing: run scripts/distill_acceptance.sh first" >&2; exit 1; }
    rm -rf runs/.distill-cfg-edit.tmp
    cp -r runs/distill-cfg runs/.distill-cfg-edit.tmp  # its checkpoint: the continuation resumes at step 200
    mv runs/.distill-cfg-edit.tmp runs/distill-cfg-edit
fi
echo '{"ckpt_every": 25, "steps": 400, "decay": 50, "batch": {"gen": 4, "edit": 8}}' > runs/cfg-edit.json
echo '{"ckpt_every": 25}' > runs/ck25.json

hyperbagel distill cfg --teacher "$T" --out runs/distill-cfg-edit --config runs/cfg-edit.json
hyperbagel distill dmdo --teacher "$T" --init runs/distill-cfg-edit --out runs/distill-dmdo-cfg-edit \
    --config runs/ck25.json

stages=(--stage dmdo=runs/distill-dmdo --stage dmdo-cfg=runs/distill-dmdo-cfg
        --stage dmdo-cfg-edit=runs/distill-dmdo-cfg-edit)
rows=dmdo-6,dmdo-cfg-6,dmdo-cfg-edit-6
hyperbagel bench generate --teacher "$T" "${stages[@]}" --rows "$rows" --bf16 --batch 32 \
    --out out/bench-generate-stage1-edit
# editing adds the continued stage 1 at its own 49 steps, beside the chain's (cfg-49 in out/bench-edit-dmdo-arms)
hyperbagel bench edit --teacher "$T" "${stages[@]}" --stage cfg-edit=runs/distill-cfg-edit \
    --rows "$rows,cfg-edit-49" --bf16 --batch 32 --out out/bench-edit-stage1-edit
