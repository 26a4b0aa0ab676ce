"""Where an image's time goes, phase by phase, for the teacher's sampler and a distilled student's: VAE encode, each
context prefill, the sampling loop, VAE decode. The bench times only end to end and the loop; this splits the
rest, which bounds the end-to-end speed-up: with the loop's ratio R and the student's fixed costs F (per image),
end to end = (teacher loop + teacher fixed) / (student loop + F). As in sampling, the VAE and ViT blocks are
prefilled in one forward, and at ``DEFER_MAX_BATCH`` images or fewer each context's last prefill runs inside its
first denoising forward, so it is timed within the loop.

    python scripts/sample_phase_cost.py --student runs/distill-dmdo [--teacher shapes-teacher] [--batch 32]

Batches of the bench's own items (GenEval-Shapes prompts, GEdit-Shapes edits, 4 samples each), bf16 autocast as the
bench's --bf16; the student runs ``--repeats`` times (median), the teacher once. Milliseconds per image.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from hyperbagel.flow.sampler import Branches
from hyperbagel.model.context import Context
from hyperbagel.model.student import load_student
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline, SamplerSettings, defers
from hyperbagel.pretrained import resolve
from hyperbagel.world import suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json


def _timed(times: dict, name: str, fn):
    start = time.perf_counter()
    out = fn()
    times[name] = time.perf_counter() - start
    return out


def edit_phases(p: Pipeline, texts, sources, seeds, sampler: SamplerSettings, accelerated: bool) -> dict:
    """``Pipeline.edit_branches`` and ``Pipeline.edit`` step by step (the same calls), each phase timed."""
    t: dict = {}
    gens = p._generators(seeds)
    rows = [p._text_block(x) for x in texts]
    pixels = torch.stack([p._pixels(im) for im in sources])
    ids, _, _ = p._latent_ids()
    latents = _timed(t, "vae encode", lambda: p._encode(pixels, gens))
    zero = torch.zeros(len(texts))
    blocks = _timed(t, "embed blocks", lambda: [p.fwd.latent_block(latents, zero, ids), p._vit_block(pixels),
                                                p.fwd.text_block(rows)])
    defer = defers(len(texts))
    cond = Context.empty(p.model, len(texts))
    _timed(t, "prefill VAE + ViT blocks", lambda: p.fwd.prefill(cond, blocks[:2]))
    no_text = None if accelerated else cond.copy()
    _timed(t, "prefill text", lambda: p.fwd.prefill(cond, blocks[2:], defer=defer))
    no_image = None
    if not accelerated:
        no_image = Context.empty(p.model, len(texts))
        _timed(t, "prefill text (no-image branch)", lambda: p.fwd.prefill(no_image, blocks[2:], defer=defer))
    noise = p._noise(gens)
    x = _timed(t, "sampling loop", lambda: p._sample(Branches(cond, no_text, no_image), noise, EDIT_GUIDANCE,
                                                       sampler, accelerated))
    _timed(t, "vae decode", lambda: p._decode(x))
    return t


def generate_phases(p: Pipeline, texts, seeds, sampler: SamplerSettings, accelerated: bool) -> dict:
    t: dict = {}
    gens = p._generators(seeds)
    branches, _ = _timed(t, "prefill text", lambda: p.generation_branches(texts, cfg_branches=not accelerated,
                                                                           defer=defers(len(texts))))
    noise = p._noise(gens)
    x = _timed(t, "sampling loop", lambda: p._sample(branches, noise, T2I_GUIDANCE, sampler, accelerated,
                                                       image_guidance=False))
    _timed(t, "vae decode", lambda: p._decode(x))
    return t


def branch_forwards(p: Pipeline, texts, repeats: int) -> dict:
    """One denoising forward of the teacher over the prompt's context and over the empty one (text-to-image CFG's
    no-text branch), alternated ``repeats`` times: medians, ms per image."""
    branches, _ = p.generation_branches(texts)
    ids = p.latent_ids()
    x, t = p._noise(p._generators(range(len(texts)))), torch.full((len(texts),), 0.5)
    calls = {"over the prompt": lambda: p.fwd.velocity(branches.cond, x, t, ids),
             "over the empty context": lambda: p.fwd.velocity(branches.no_text, x, t, ids)}
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, call in calls.items():
            start = time.perf_counter()
            call()
            times[k].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) / len(texts) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="shapes-teacher")
    ap.add_argument("--student", required=True, help="a distilled model folder (its own number of steps)")
    ap.add_argument("--steps", type=int, default=None, help="the student's steps (default: its own)")
    ap.add_argument("--batch", type=int, default=32, help="images per call: batch / 4 items × 4 samples")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = Pipeline.from_pretrained(resolve(args.teacher), student=False)
    model, info = load_student(args.student, teacher.model)
    student = Pipeline(teacher.model, teacher.vae, teacher.tokenizer, model, info)
    steps = args.steps or info.steps
    n = max(1, args.batch // 4)
    seeds = list(range(4 * n))
    prompts = [it["prompt"] for it in suites.load_suite("geneval-shapes", n) for _ in range(4)]
    edits = suites.load_suite("gedit-shapes", n)
    instructions = [it["instruction"] for it in edits for _ in range(4)]
    sources = [render(scene_from_json(it["source"])) for it in edits for _ in range(4)]
    runs = {
        "text-to-image": lambda p, s, a: generate_phases(p, prompts, seeds, s, a),
        "editing": lambda p, s, a: edit_phases(p, instructions, sources, seeds, s, a),
    }
    report = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "torch": torch.__version__,
              "threads": args.threads, "batch": len(seeds), "student": args.student, "steps": steps}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for task, run in runs.items():
            run(student, SamplerSettings(steps + 1, 3.0), True)  # warm-up
            rows = {}
            for name, pipe, sampler, accelerated, repeats in (
                    (f"student ({steps} steps)", student, SamplerSettings(steps + 1, 3.0), True, args.repeats),
                    ("teacher (BAGEL's sampler)", teacher, SamplerSettings(), False, 1)):
                times = [run(pipe, sampler, accelerated) for _ in range(repeats)]
                rows[name] = {k: 1e3 * statistics.median(t[k] for t in times) / len(seeds) for k in times[0]}
            s, te = rows.values()
            total_s, total_t = sum(s.values()), sum(te.values())
            loop = "sampling loop"
            print(f"\n{task}, ms per image (batch {len(seeds)}, bf16, {args.threads} threads)")
            for k in dict.fromkeys([*te, *s]):
                print(f"  {k:32s} teacher {te.get(k, 0.0):9.3f}   student {s.get(k, 0.0):8.3f}")
            fixed = total_s - s[loop]
            print(f"  {'total':32s} teacher {total_t:9.3f}   student {total_s:8.3f}")
            print(f"  end to end {total_t / total_s:.1f}x, sampling loop {te[loop] / s[loop]:.1f}x; "
                  f"the student's fixed costs {fixed:.2f} ms = {fixed / (s[loop] / steps):.2f} of its forwards")
            for target in (15, 20):
                print(f"  {target}x end to end needs the student's fixed costs at or below "
                      f"{total_t / target - s[loop]:.2f} ms (with this loop)")
            report[task] = {"teacher": te, "student": s, "end_to_end": total_t / total_s,
                            "sampling": te[loop] / s[loop]}
        forwards = branch_forwards(teacher, prompts, 25)
    print("\nthe teacher's denoising forward, ms per image (25 alternated repeats, median):",
          ", ".join(f"{k} {v:.2f}" for k, v in forwards.items()))
    report["teacher_forward"] = forwards
    print(json.dumps(report))


if __name__ == "__main__":
    main()
