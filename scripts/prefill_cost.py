"""What an editing context's prefills cost, three ways: one block a time (VAE, ViT, instruction: three forwards,
as before the blocks were packed), the VAE and ViT blocks in one forward and then the instruction (what sampling
does above ``DEFER_MAX_BATCH`` images), and the same with the instruction deferred into the first denoising forward
(at or below it). Beside them one denoising forward over the prefilled context, for scale. Milliseconds per image
(median over repeats, alternated), on the bench's GEdit-Shapes items, fp32, for each batch size asked:

    python scripts/prefill_cost.py [--teacher shapes-teacher] [--batches 1 4 32] [--repeats 9]

At batch 1 a forward of this model on a CPU is mostly fixed cost per operator, so fewer forwards save time; at
batch 32 it is arithmetic, proportional to the tokens, and packing saves little.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from hyperbagel.model.context import Context
from hyperbagel.pipeline import Pipeline
from hyperbagel.pretrained import resolve
from hyperbagel.world import suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json


def costs(p: Pipeline, batch: int, repeats: int) -> dict[str, float]:
    items = suites.load_suite("gedit-shapes", batch)
    items = (items * batch)[:batch]
    pixels = torch.stack([p._pixels(render(scene_from_json(it["source"]))) for it in items])
    rows = [p._text_block(it["instruction"]) for it in items]
    gens = p._generators(range(batch))
    ids = p.latent_ids()
    latents = p._encode(pixels, gens)
    noise, t = p._noise(gens), torch.full((batch,), 0.9)
    fwd = p.fwd

    def blocks():
        return [fwd.latent_block(latents, torch.zeros(batch), ids), p._vit_block(pixels), fwd.text_block(rows)]

    def one_at_a_time():
        ctx = Context.empty(p.model, batch)
        for b in blocks():
            fwd.prefill(ctx, [b])
        return ctx

    def packed(defer: bool):
        ctx = Context.empty(p.model, batch)
        vae, vit, text = blocks()
        fwd.prefill(ctx, [vae, vit])
        fwd.prefill(ctx, [text], defer=defer)
        if defer:
            fwd.velocity(ctx, noise, t, ids)

    ctx = one_at_a_time()
    calls = {"VAE, ViT, text: three prefills": one_at_a_time,
             "VAE + ViT in one prefill, then the text": lambda: packed(False),
             "one denoising forward": lambda: fwd.velocity(ctx, noise, t, ids),
             "VAE + ViT, the text inside the first denoising forward": lambda: packed(True)}
    times = {k: [] for k in calls}
    for call in calls.values():  # warm-up
        call()
    for _ in range(repeats):
        for k, call in calls.items():
            start = time.perf_counter()
            call()
            times[k].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) / batch for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="shapes-teacher")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 32])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = Pipeline.from_pretrained(resolve(args.teacher), student=False)
    report = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "torch": torch.__version__,
              "threads": args.threads, "repeats": args.repeats}
    with torch.no_grad():
        for batch in args.batches:
            report[f"batch {batch}"] = rows = costs(p, batch, args.repeats)
            print(f"\nbatch {batch}, ms per image (fp32, {args.threads} threads, median of {args.repeats})")
            for k, v in rows.items():
                print(f"  {k:50s} {v:8.2f}")
            three, forward = rows["VAE, ViT, text: three prefills"], rows["one denoising forward"]
            for name, saved in (("packing", three - rows["VAE + ViT in one prefill, then the text"]),
                                ("packing and deferring", three + forward
                                 - rows["VAE + ViT, the text inside the first denoising forward"])):
                print(f"  saved by {name}: {saved:.2f} ms = {saved / forward:.2f} forwards")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
