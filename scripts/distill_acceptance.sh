#!/usr/bin/env bash
# The 6-step acceptance run on the shipped teacher: the default chain (cfg → anchored TSCD → DMDO, its fake model on
# fresh noise), the paper's adversarial-only TSCD beside it (mse_weight 0, adv_weight 1, from the same stage-1
# model), then both full-suite benches, every row in one run per suite.
# Each command resumes when re-run (runs/ checkpoints, the bench's resume file). Costs on two cores: cfg 80–100 min,
# each TSCD ~45 min, each DMDO ~70 min, the two benches ~1 h 45 min.
# Usage: bash scripts/distill_acceptance.sh [TEACHER_FOLDER or shipped name]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/jemalloc.sh  # jemalloc when installed: faster long steps
T="${1:-shapes-teacher}"
mkdir -p runs
echo '{"ckpt_every": 25}' > runs/ck25.json
echo '{"ckpt_every": 25, "adv_weight": 1.0, "mse_weight": 0.0}' > runs/tscd-adv.json

hyperbagel distill cfg  --teacher "$T" --out runs/distill-cfg --config runs/ck25.json
hyperbagel distill tscd --teacher "$T" --init runs/distill-cfg --out runs/distill-tscd --config runs/ck25.json
hyperbagel distill dmdo --teacher "$T" --init runs/distill-tscd --out runs/distill-dmdo --config runs/ck25.json
hyperbagel distill tscd --teacher "$T" --init runs/distill-cfg --out runs/distill-tscd-adv --config runs/tscd-adv.json

stages=(--stage cfg=runs/distill-cfg --stage tscd=runs/distill-tscd --stage tscd-adv=runs/distill-tscd-adv
        --stage dmdo=runs/distill-dmdo)
rows=euler-6f,dpm-6f,unipc-6f,cfg-6,tscd-6,tscd-adv-6,dmdo-6
for task in generate edit; do
    hyperbagel bench "$task" --teacher "$T" "${stages[@]}" --rows "$rows" --bf16 --batch 32 \
        --out "out/bench-$task-acceptance"
done
