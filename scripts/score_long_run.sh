#!/usr/bin/env bash
# Score the long run's EMA as it stands on the probes' fixed subsets (vqa-shapes 300 items, GenEval-Shapes 120 x 2,
# GEdit-Shapes 60 x 2; `score_arm` of scripts/gpu_probes.py), the run paused meanwhile (about 5 minutes here):
#   bash scripts/score_long_run.sh STEP [RUN]     # RUN defaults to runs/teacher-long
# Waits for the checkpoint of STEP (the exported EMA is that step's once it exists), then writes
# docs/results/long-run-rebuild-STEP.json, the edit halves (edit done / scene kept) in OUT/gedit-halves.txt and the
# vqa answers per object count in OUT/vqa-by-objects.md, OUT = out/long-run/STEP.
set -euo pipefail
cd "$(dirname "$0")/.."
step=$1
run=${2:-runs/teacher-long}
out=out/long-run/$step
ckpt=$run/train/dcp-$(printf %07d "$step")
until [ -d "$ckpt" ]; do sleep 10; done
sleep 45  # the export after the checkpoint
pg=$(cat "$run.pid" 2>/dev/null || true)
if [ -n "$pg" ] && kill -0 "$pg" 2>/dev/null; then
    kill -STOP -- "-$pg"
    trap 'kill -CONT -- "-$pg"' EXIT
fi
snap=$out/work/long-run/snapshots/$(printf %06d "$step")
rm -rf "$out" && mkdir -p "$snap" "$out/export"
cp "$run"/{config.json,ema.safetensors,ae.safetensors,tokenizer.json} "$snap/"
echo "{\"arm\": \"long-run\", \"note\": \"the long run's EMA at step $step ($run, bash scripts/teacher_long.sh), scored \
on the CPU with the run paused (bash scripts/score_long_run.sh $step)\"}" > "$out/export/long-run.json"
export PYTHONPATH="$PWD/src:$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
python -c "import sys, torch; torch.set_num_threads(2); from pathlib import Path; from gpu_probes import score_arm; \
score_arm('long-run', Path(sys.argv[1]), 'cpu', Path(sys.argv[2]))" "$out/work" "$out/export"
cp "$out/export/long-run.json" "docs/results/long-run-rebuild-$step.json"
python -m hyperbagel.cli eval gedit "$out/work/eval-long-run-$step-gedit-shapes" > "$out/gedit-halves.txt"
python scripts/vqa_by_objects.py "$out/work/eval-long-run-$step-vqa-shapes/predictions.jsonl" > "$out/vqa-by-objects.md"
echo "step $step: docs/results/long-run-rebuild-$step.json, $out/"
