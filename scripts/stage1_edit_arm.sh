#!/usr/bin/env bash
# Stage 1 trained further for editing, then DMDO straight from it: the 6-step candidate after the acceptance chain
# (scripts/distill_acceptance.sh) and its arms (scripts/dmdo_arms.sh). Half of editing's deficit is stage 1's (cfg-49
# −0.011 against the teacher, cfg-6 −0.022) and its editing MSE was still falling when the chain's 200 steps ended,
# while text-to-image's had flattened by step 50; DMDO from stage 1 did at least as well as from TSCD at 100 steps.
# So: the chain's stage 1 (200 steps; trained here first when runs/distill-cfg is missing or unfinished), continued
# from its step-200 checkpoint and optimizer to 400 steps with twice the editing rows and half the text-to-image rows
# a step (the same cost a step) and the learning rate falling to 0 over the last 50; then DMDO's default 300 steps
# from it; then one bench per suite: the teacher, the training-free 6-forward peers and the new model (plus the
# chain's dmdo-6 and the 100-step dmdo-cfg-6 where their folders exist), in editing also the continued stage 1 at
# its own 49 steps. Each command resumes when re-run; a finished bench shows its report. On the AVX2-only machine
# (fp32): stage 1 about 47 s a step (2 h 40 min per 200 steps), DMDO and the benches a few hours more.
# Usage: bash scripts/stage1_edit_arm.sh [TEACHER_FOLDER or shipped name]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/jemalloc.sh
T="${1:-shapes-teacher}"
mkdir -p runs
echo '{"ckpt_every": 25}' > runs/ck25.json
echo '{"ckpt_every": 25, "steps": 400, "decay": 50, "batch": {"gen": 4, "edit": 8}}' > runs/cfg-edit.json

hyperbagel distill cfg --teacher "$T" --out runs/distill-cfg --config runs/ck25.json
if [ ! -d runs/distill-cfg-edit ]; then
    rm -rf runs/.distill-cfg-edit.tmp
    cp -r runs/distill-cfg runs/.distill-cfg-edit.tmp  # its checkpoint: the continuation resumes at step 200
    mv runs/.distill-cfg-edit.tmp runs/distill-cfg-edit
fi
hyperbagel distill cfg --teacher "$T" --out runs/distill-cfg-edit --config runs/cfg-edit.json
hyperbagel distill dmdo --teacher "$T" --init runs/distill-cfg-edit --out runs/distill-dmdo-cfg-edit \
    --config runs/ck25.json

stages=(--stage dmdo-cfg-edit=runs/distill-dmdo-cfg-edit)
rows=euler-6f,dpm-6f,unipc-6f
for arm in dmdo dmdo-cfg; do  # earlier arms, benched beside it when their models are on this machine
    if [ -f "runs/distill-$arm/student.safetensors" ]; then
        stages+=(--stage "$arm=runs/distill-$arm")
        rows="$rows,$arm-6"
    fi
done
rows="$rows,dmdo-cfg-edit-6"
hyperbagel bench generate --teacher "$T" "${stages[@]}" --rows "$rows" --bf16 --batch 32 \
    --out out/bench-generate-stage1-edit
hyperbagel bench edit --teacher "$T" "${stages[@]}" --stage cfg-edit=runs/distill-cfg-edit \
    --rows "$rows,cfg-edit-49" --bf16 --batch 32 --out out/bench-edit-stage1-edit
