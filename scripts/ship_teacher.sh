#!/usr/bin/env bash
# Ship the finished long run as `shapes-teacher` and score it on the full suites (docs/teacher.md, "Scoring and
# shipping it"):
#   bash scripts/ship_teacher.sh [RUN]      # RUN defaults to runs/teacher-long, as scripts/teacher_long.sh leaves it
# 1. ships RUN (bf16 weights, model card, SHA256SUMS) to src/hyperbagel/pretrained/shapes-teacher;
# 2. scores vqa-shapes on the run's fp32 weights and on the shipped bf16 ones (the rounding's cost, beside its
#    standard error), then GenEval-Shapes (600 x 4) and GEdit-Shapes (300 x 4) on the shipped weights, bf16 autocast;
# 3. ships again with those scores in the card, and draws the contact sheet.
# Run it again after a stop: a suite whose score file exists is not scored again. About 50 minutes on two cores.
# A smoke run of the whole chain, every file under DIR and 4 items a suite: SMOKE=DIR bash scripts/ship_teacher.sh RUN
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/teacher-long}
ship=src/hyperbagel/pretrained/shapes-teacher res=docs/results evals=out/teacher-long sheet=docs/images limit=()
if [ -n "${SMOKE:-}" ]; then
    ship=$SMOKE/shapes-teacher res=$SMOKE evals=$SMOKE/out sheet=$SMOKE limit=(--limit 4)
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python - "$run" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
state = json.loads((run / "train" / "train_state.json").read_text())
steps = json.loads((run / "train_config.json").read_text())["steps"]
if state["step"] != steps or not (run / "ema.safetensors").is_file():
    sys.exit(f"{run} is at step {state['step']} of {steps}: finish it first (bash scripts/teacher_long.sh)")
EOF
command="bash scripts/teacher_long.sh"
python -m hyperbagel.cli ship "$run" --out "$ship" --command "$command"
score() {  # score SUITE CKPT NAME [eval-model flags]: $res/NAME.json, unless it is there already
    local suite=$1 ckpt=$2 name=$3
    shift 3
    [ -f "$res/$name.json" ] && return 0
    python -m hyperbagel.cli eval-model --ckpt "$ckpt" --suite "$suite" --out "$evals/$name" \
        --json "$res/$name.json" "${limit[@]}" "$@"
}
score vqa-shapes "$run" teacher-long-vqa-shapes-fp32
score vqa-shapes "$ship" teacher-long-vqa-shapes
score geneval-shapes "$ship" teacher-long-geneval-shapes --samples 4 --batch 64 --bf16
score gedit-shapes "$ship" teacher-long-gedit-shapes --samples 4 --batch 64 --bf16
python -m hyperbagel.cli ship "$run" --out "$ship" --command "$command" \
    --scores "$res"/teacher-long-{vqa,geneval,gedit}-shapes.json
python -m hyperbagel.cli sheet --ckpt "$ship" --out "$sheet/teacher-long-sheet.png"
du -sh "$ship"
