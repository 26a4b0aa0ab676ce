#!/usr/bin/env bash
# Two DMDO arms beside the acceptance chain's 300-step DMDO (scripts/distill_acceptance.sh first): 100 steps from
# the same TSCD model, where the early read found the text-to-image KID lower (15.8 at step 100, 74.5 at step 300),
# and 100 steps straight from stage 1, whose 6-step row had the lowest KID of the chain (36.2 against the teacher's
# 46.1). Then one bench per suite of the three, with nothing else on the machine: also the clean timing of dmdo-6.
# Each command resumes when re-run; a finished bench shows its report. About 40 min of training, 2 h of benches on
# two cores. Usage: bash scripts/dmdo_arms.sh [TEACHER_FOLDER or shipped name]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/jemalloc.sh
T="${1:-shapes-teacher}"
mkdir -p runs
echo '{"ckpt_every": 25, "steps": 100}' > runs/dmdo-100.json

hyperbagel distill dmdo --teacher "$T" --init runs/distill-tscd --out runs/distill-dmdo-100 --config runs/dmdo-100.json
hyperbagel distill dmdo --teacher "$T" --init runs/distill-cfg --out runs/distill-dmdo-cfg --config runs/dmdo-100.json

stages=(--stage dmdo=runs/distill-dmdo --stage dmdo-100=runs/distill-dmdo-100 --stage dmdo-cfg=runs/distill-dmdo-cfg)
rows=dmdo-6,dmdo-100-6,dmdo-cfg-6
hyperbagel bench generate --teacher "$T" "${stages[@]}" --rows "$rows" --bf16 --batch 32 \
    --out out/bench-generate-dmdo-arms
# editing adds stage 1 at its own 49 steps: is editing's deficit stage 1's, or its sampling in 6 steps?
hyperbagel bench edit --teacher "$T" "${stages[@]}" --stage cfg=runs/distill-cfg --rows "$rows,cfg-49" --bf16 \
    --batch 32 --out out/bench-edit-dmdo-arms
