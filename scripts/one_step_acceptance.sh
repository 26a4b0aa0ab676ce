#!/usr/bin/env bash
# The 1-step acceptance run on the shipped teacher, after scripts/distill_acceptance.sh: ADP from the 6-step model
# (as the paper: adversarial only) and an arm with the ODE-pair MSE beside it (pair_weight 1, DMD2's regression),
# two reward models on their own seeds (renders plus the judged samples of both ADP models and the 6-step model),
# ReFL from each ADP model against the hardened reward (the two models' min, 4 views shifted up to 4 pixels), then
# both benches on two seeds, every row in one run per suite and seed.
# Each command resumes when re-run. Usage:
#   bash scripts/one_step_acceptance.sh [TEACHER_FOLDER or shipped name] [6-STEP FOLDER, default runs/distill-dmdo]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/jemalloc.sh  # jemalloc when installed: faster long steps
T="${1:-shapes-teacher}"
S6="${2:-runs/distill-dmdo}"
mkdir -p runs
echo '{"ckpt_every": 25}' > runs/ck25.json
echo '{"ckpt_every": 25, "pair_weight": 1.0}' > runs/adp-pair.json
echo '{"ckpt_every": 25, "views": 4, "max_shift": 4}' > runs/refl-hardened.json

hyperbagel distill adp --teacher "$T" --init "$S6" --out runs/distill-adp --config runs/ck25.json
hyperbagel distill adp --teacher "$T" --init "$S6" --out runs/distill-adp-pair --config runs/adp-pair.json
for seed in 0 1; do
    echo "{\"seed\": $seed}" > "runs/reward-seed$seed.json"
    hyperbagel train reward --out "runs/reward-seed$seed" --config "runs/reward-seed$seed.json" \
        --generator runs/distill-adp --generator runs/distill-adp-pair --generator "$S6"
done
rewards=(--reward runs/reward-seed0 runs/reward-seed1)
hyperbagel distill refl --teacher "$T" --init runs/distill-adp --out runs/distill-refl "${rewards[@]}" \
    --config runs/refl-hardened.json
hyperbagel distill refl --teacher "$T" --init runs/distill-adp-pair --out runs/distill-refl-pair "${rewards[@]}" \
    --config runs/refl-hardened.json

stages=(--stage dmdo="$S6" --stage adp=runs/distill-adp --stage adp-pair=runs/distill-adp-pair
        --stage refl=runs/distill-refl --stage refl-pair=runs/distill-refl-pair)
rows=dmdo-6,adp-1,adp-pair-1,refl-1,refl-pair-1
for seed in 0 1; do
    for task in generate edit; do
        hyperbagel bench "$task" --teacher "$T" "${stages[@]}" --rows "$rows" --bf16 --batch 32 --seed "$seed" \
            --out "out/bench-$task-1step-seed$seed"
    done
done
