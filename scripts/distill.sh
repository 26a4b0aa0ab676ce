#!/usr/bin/env bash
# The 6-step model on a trained teacher — CFG distillation → TSCD → DMDO — then both benches (teacher, each stage and
# the 6-forward peers on the same noise). Each command resumes when re-run. Costs: docs/distillation.md.
# Usage: bash scripts/distill.sh [TEACHER_FOLDER or shipped name]   (OMP_NUM_THREADS as the machine allows)
set -euo pipefail
cd "$(dirname "$0")/.."
T="${1:-shapes-teacher}"  # default: the pretrained teacher
hyperbagel distill cfg  --teacher "$T" --out runs/distill-cfg
hyperbagel distill tscd --teacher "$T" --init runs/distill-cfg  --out runs/distill-tscd
hyperbagel distill dmdo --teacher "$T" --init runs/distill-tscd --out runs/distill-dmdo
hyperbagel bench generate --teacher "$T" --out out/bench-generate
hyperbagel bench edit     --teacher "$T" --out out/bench-edit
