"""Does a distilled student hold the teacher better when fed other guidance scales than the teacher's?

Stage 1 reproduces only about half of the guidance direction (scripts/guidance_fidelity.py), so a student fed the
teacher's scales may under-edit. This samples one distilled folder on a suite at each given (text, image) scale,
with the bench's seeds and batching, and writes one result folder per scale; pair each against the bench's teacher
folder with ``hyperbagel eval gedit|geneval FOLDER --against out/bench-<task>-acceptance/teacher``.

Usage: python scripts/student_scale_probe.py --stage runs/distill-dmdo --task edit --scales 4,1.5 5,1.5 5,2 \
           --out out/scale-probe [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from tqdm import tqdm

from hyperbagel.eval import bench
from hyperbagel.eval.model_eval import sample_seed
from hyperbagel.pretrained import resolve
from hyperbagel.world import folders, suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", type=Path, required=True)
    p.add_argument("--teacher", default="shapes-teacher")
    p.add_argument("--task", choices=["generate", "edit"], default="edit")
    p.add_argument("--scales", nargs="+", required=True, help="TEXT,IMAGE pairs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()

    rows = [r for r in bench.bench_rows(a.task, {"dmdo": a.stage}) if r.name == "dmdo-6"]
    pipe = bench.load_pipelines(resolve(Path(a.teacher)), {"dmdo": a.stage}, rows)["dmdo"]
    items = suites.load_suite(bench.SUITE[a.task], a.limit)
    base = bench.EDIT_GUIDANCE if a.task == "edit" else bench.T2I_GUIDANCE
    per_call = max(1, a.batch // a.samples)
    for pair in a.scales:
        text, image = (float(v) for v in pair.split(","))
        guidance = dataclasses.replace(base, text_scale=text, image_scale=image)
        setattr(bench, "EDIT_GUIDANCE" if a.task == "edit" else "T2I_GUIDANCE", guidance)  # what timed_call reads
        out = a.out / f"text{text:g}-image{image:g}"
        for lo in tqdm(range(0, len(items), per_call), desc=f"{pair}"):
            chunk = items[lo: lo + per_call]
            seeds = [sample_seed(0, i, j) for i in range(lo, lo + len(chunk)) for j in range(a.samples)]
            texts = [it["prompt" if a.task == "generate" else "instruction"] for it in chunk for _ in range(a.samples)]
            src = [render(scene_from_json(it["source"])) for it in chunk] if a.task == "edit" else None
            sources = [s for s in src for _ in range(a.samples)] if src else None
            with torch.autocast("cpu", dtype=torch.bfloat16):
                call = bench.timed_call(pipe, a.task, texts, seeds, rows[0], sources)
            for k, it in enumerate(chunk):
                folders.write_record(out, lo + k, it, call.images[k * a.samples:(k + 1) * a.samples],
                                     src[k] if src else None)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
