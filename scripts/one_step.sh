#!/usr/bin/env bash
# The 1-step model on a trained teacher and its 6-step model (scripts/distill.sh first): ADP, the reward model, ReFL,
# the reward's report on generated images, then both benches with the teacher, the 6-step and the two 1-step rows on
# the same noise. Each command resumes when re-run. Costs and what to read: docs/one_step.md.
# Usage: bash scripts/one_step.sh [TEACHER_FOLDER or shipped name]   (OMP_NUM_THREADS as the machine allows)
set -euo pipefail
cd "$(dirname "$0")/.."
T="${1:-shapes-teacher}"  # default: the pretrained teacher
hyperbagel distill adp  --teacher "$T" --init runs/distill-dmdo --out runs/distill-adp
hyperbagel train reward --out runs/reward --judge-model runs/distill-adp \
  --generator runs/distill-adp --generator runs/distill-dmdo       # also learns from their samples, judged
hyperbagel distill refl --teacher "$T" --init runs/distill-adp  --out runs/distill-refl --reward runs/reward
hyperbagel train reward --out runs/reward --report-only --judge-model "$T" --judge-model runs/distill-dmdo \
  --judge-model runs/distill-adp --judge-model runs/distill-refl
stages=(--stage dmdo=runs/distill-dmdo --stage adp=runs/distill-adp --stage refl=runs/distill-refl)
hyperbagel bench generate --teacher "$T" "${stages[@]}" --rows dmdo-6,adp-1,refl-1 --out out/bench-generate-1step
hyperbagel bench edit     --teacher "$T" "${stages[@]}" --rows dmdo-6,adp-1,refl-1 --out out/bench-edit-1step
