#!/usr/bin/env bash
# The Hyper-Bagel draft and the paper's Table 1 ablations on a trained teacher, then the understanding bench (plain
# decoding, every draft, chains and trees, long and one-word outputs). The first draft builds the shared target data;
# each command resumes when re-run. Costs: docs/speculative.md.
# Usage: bash scripts/drafts.sh [TEACHER_FOLDER or shipped name] [DRAFTS_FOLDER] [BENCH_OUT]   (OMP_NUM_THREADS as the machine allows)
set -euo pipefail
cd "$(dirname "$0")/.."
T="${1:-shapes-teacher}"  # default: the pretrained teacher
D="${2:-runs/drafts}"
OUT="${3:-out/bench-understand}"
# the variant names as the package defines them, Hyper-Bagel first (it builds the shared data)
names="$(python -c 'from hyperbagel.decode.draft_config import VARIANTS; print(*VARIANTS)')"
read -r -a VARIANTS <<< "$names"
for v in "${VARIANTS[@]}"; do
  hyperbagel train draft --target "$T" --out "$D/$v" --variant "$v" --data "$D/draft-data"
done
hyperbagel bench understand --target "$T" --drafts "${VARIANTS[@]/#/$D/}" --out "$OUT"
