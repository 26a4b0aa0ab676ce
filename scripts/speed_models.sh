#!/usr/bin/env bash
# Models for timing the end-to-end benches at a teacher's size (docs/fast-path.md): a copy of the teacher, the
# Hyper-Bagel and EAGLE-3 drafts as the tiny quickstart trains them, and students distilled for STUDENT_STEPS steps
# each (default 2): a student's forward costs the teacher's, so its speed is measured, not its quality.
#   bash scripts/speed_models.sh TEACHER_FOLDER OUT      # then: hyperbagel bench … (docs/fast-path.md)
# Each piece is skipped when OUT already holds it, so an interrupted call continues.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 TEACHER_FOLDER OUT" >&2; exit 2; }
teacher=$1 out=$2 steps=${STUDENT_STEPS:-2}
mkdir -p "$out/teacher"
[ -f "$out/teacher/ema.safetensors" ] || cp "$teacher"/{config.json,ema.safetensors,ae.safetensors,tokenizer.json} "$out/teacher/"
echo '{"data": {"samples": 4096}}' >"$out/draft.json"
for v in hyper-bagel eagle3; do
    [ -f "$out/drafts/$v/DONE" ] && continue
    hyperbagel train draft --target "$out/teacher" --out "$out/drafts/$v" --variant "$v" --data "$out/drafts/draft-data" \
        --steps 400 --config "$out/draft.json"
    touch "$out/drafts/$v/DONE"
done
prev=""
for s in cfg tscd dmdo adp; do
    if [ ! -f "$out/distill-$s/DONE" ]; then
        hyperbagel distill "$s" --teacher "$out/teacher" ${prev:+--init "$prev"} --out "$out/distill-$s" --steps "$steps"
        touch "$out/distill-$s/DONE"
    fi
    prev=$out/distill-$s
done
[ -f "$out/encoder.safetensors" ] || python -c "
from hyperbagel.eval.shapes_encoder import EncoderConfig, train_encoder
train_encoder(EncoderConfig(steps=800, batch=64), '$out/encoder.safetensors')"
echo "models in $out"
