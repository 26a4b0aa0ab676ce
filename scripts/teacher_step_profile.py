#!/usr/bin/env python3
"""Where a teacher training step's time goes, phase by phase, on any device: waiting for the data workers, moving
the batch to the device, the VAE's part, forward, backward, clipping + AdamW, EMA. Each phase ends with a device
synchronisation, so the phases add up to the step (and are each a little slower than inside an unsynchronised step).
Then a ``torch.profiler`` table of one more step's top ops.

Written for the lent GPU machine, where two runs found the step host-bound at 0.7–0.9 s (docs/teacher.md):

    PYTHONPATH=src python3 scripts/teacher_step_profile.py --device cuda --workers 15 --batch 24,16,24 --out $OUT
    python scripts/teacher_step_profile.py --device cpu --batch 4,4,4 --steps 3 --preset micro --vae VAE   # a check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.presets import preset
from hyperbagel.model.sequence import encode_latents, losses
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.recipes.step_data import step_loader
from hyperbagel.recipes.teacher import StepBatches, TeacherConfig, init_weights
from hyperbagel.recipes.vae import load_autoencoder
from hyperbagel.training.ema import ema_update
from hyperbagel.world.vocab import all_words


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vae", default="runs/vae/ae.safetensors")
    ap.add_argument("--batch", default="24,16,24", help="gen,edit,und samples per step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    ap.add_argument("--out", type=Path, default=None, help="folder for profile.json and the op table")
    args = ap.parse_args()
    device = torch.device(args.device)
    batch = dict(zip(("gen", "edit", "und"), (int(n) for n in args.batch.split(","))))
    cfg = TeacherConfig(preset=args.preset, batch=batch, vae=args.vae, device=args.device, workers=args.workers)
    vae = load_autoencoder(cfg.vae).eval().to(device)
    tok = ShapesTokenizer.build(list(all_words()))
    mcfg = dataclasses.replace(preset(cfg.preset), vae=vae.config)
    cfg.image_size = mcfg.image_size
    model = build_model(mcfg)
    init_weights(model, cfg.init_std, torch.Generator().manual_seed(0), tuple(cfg.fan_in_init), cfg.qk_norm_init)
    model.to(device).train()
    ema = build_model(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    warm = 3
    data = iter(step_loader(StepBatches(cfg, mcfg, tok), 0, warm + args.steps + 1, args.workers, args.device))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(times: dict[str, float] | None) -> None:
        clock = [time.perf_counter()]

        def mark(name: str) -> None:
            sync()
            now = time.perf_counter()
            if times is not None:
                times[name] += now - clock[0]
            clock[0] = now

        micros = next(data)
        mark("data wait")
        opt.zero_grad(set_to_none=True)
        for group, b in micros[0].items():
            b = b.to(device)
            mark("to device")
            b = encode_latents(b, vae, mcfg.latent_patch_size)
            mark("vae encode")
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                out = losses(model, b)
            loss = out.ce_sum / max(out.ce_count, 1) + out.mse_sum / max(out.mse_count, 1)
            mark(f"forward {group}")
            loss.backward()
            mark(f"backward {group}")
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        mark("clip + adamw")
        ema_update(ema, model, cfg.ema_decay)
        mark("ema")

    for _ in range(warm):
        step(None)
    times: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(times)
    total = (time.perf_counter() - t0) / args.steps
    per_step = {k: v / args.steps for k, v in times.items()}
    with torch.profiler.profile() as prof:
        step(None)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=25)
    report = {"device": str(device), "batch": batch, "workers": args.workers, "s_per_step": total,
              "phases_s": per_step, "torch": torch.__version__}
    print(json.dumps(report, indent=1))
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "ops.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
