#!/usr/bin/env python3
"""Cost of one teacher training step on this machine: seconds per step and per sample, padded tokens per second,
achieved model GFLOP/s (6 × active decoder parameters × tokens), and optionally the number of dispatched ops.

The step is the recipe's own (``StepBatches`` → ``step_loss`` → AdamW), from the recipe's initialisation, with the
first ``--skip`` steps left out of the timing (the first steps of a run are slower).

    python scripts/teacher_step_cost.py --batch 24,16,24 --steps 10 --skip 3            # the default recipe, bf16
    python scripts/teacher_step_cost.py --batch 24,16,24 --steps 10 --skip 3 --fp32
    python scripts/teacher_step_cost.py --batch 24,16,24 --count-ops                    # ops and host syncs a step
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.presets import preset
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.recipes.teacher import (
    StepBatches,
    TeacherConfig,
    TeacherLosses,
    build_aligner,
    init_weights,
    packed_step_loss,
    step_loss,
)
from hyperbagel.recipes.vae import load_autoencoder
from hyperbagel.training.ema import ema_update
from hyperbagel.world.vocab import all_words

SYNC_OPS = ("aten.nonzero", "aten._local_scalar_dense", "aten.item", "aten.masked_select")


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="24,16,24", help="gen,edit,und samples per step")
    ap.add_argument("--vae", default="runs/vae/ae.safetensors")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip", type=int, default=3)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--flush-denormal", action="store_true")
    ap.add_argument("--count-ops", action="store_true", help="count dispatched ops of one step instead of timing")
    ap.add_argument("--config", default=None, help="TeacherConfig overrides (a JSON file), as train teacher's")
    ap.add_argument("--at", type=int, default=0, help="time the steps from this one on (a curriculum's phase)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the loss forward (dynamic shapes)")
    args = ap.parse_args()
    torch.set_flush_denormal(args.flush_denormal)
    batch = dict(zip(("gen", "edit", "und"), (int(n) for n in args.batch.split(","))))
    overrides = json.loads(open(args.config).read()) if args.config else {}
    cfg = TeacherConfig(**{"batch": batch, **overrides, "bf16": not args.fp32, "vae": args.vae})
    vae = load_autoencoder(cfg.vae).eval()
    tok = ShapesTokenizer.build(list(all_words()))
    base = preset(cfg.preset)
    mcfg = dataclasses.replace(base, vae=vae.config, llm=dataclasses.replace(base.llm, **cfg.llm))
    cfg.image_size = mcfg.image_size
    model = build_model(mcfg)
    init_weights(model, cfg.init_std, torch.Generator().manual_seed(0), tuple(cfg.fan_in_init), cfg.qk_norm_init)
    ema = build_model(mcfg)
    aligner = build_aligner(cfg, model) if cfg.align.active else None
    trained = [*model.parameters(), *(aligner.heads.parameters() if aligner else [])]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=cfg.betas)
    data = StepBatches(cfg, mcfg, tok)
    forward = TeacherLosses(model, aligner.heads if aligner else None)
    if args.compile:
        forward = torch.compile(forward, dynamic=True)

    def step(i: int) -> list:
        opt.zero_grad(set_to_none=True)
        micros = data[args.at + i]
        for micro in micros:
            if cfg.packed:
                packed_step_loss(forward, vae, micro, cfg)
            else:
                step_loss(forward, vae, micro, cfg, aligner)
        torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        opt.step()
        ema_update(ema, model, cfg.ema_decay)
        return micros

    report = {"batch": batch, "config": overrides, "at": args.at, "bf16": cfg.bf16, "compile": args.compile,
              "flush_denormal": args.flush_denormal, "threads": torch.get_num_threads()}
    if args.count_ops:
        step(0)
        with OpCounter() as c:
            step(1)
        report.update(ops=sum(c.counts.values()), host_syncs=sum(c.counts[k] for k in SYNC_OPS),
                      top=c.counts.most_common(8))
    else:
        active = sum(p.numel() for n, p in model.language_model.model.layers.named_parameters() if "_moe_gen" not in n)
        times, tokens, samples = [], 0, 0
        for i in range(args.steps):
            t = time.perf_counter()
            micros = step(i)
            times.append(time.perf_counter() - t)
            if i >= args.skip:
                batches = [b for micro in micros for b in ([micro.batch] if cfg.packed else micro.values())]
                tokens += sum(b.text_ids.numel() for b in batches)
                samples += sum(b.text_ids.shape[0] for b in batches)
        timed = sum(times[args.skip:])
        per_step = timed / (args.steps - args.skip)
        report.update(s_per_step=per_step, ms_per_sample=1000 * timed / samples,
                      padded_tokens_per_s=tokens / timed, model_gflops=6 * active * tokens / timed / 1e9,
                      first_steps_s=times[:args.skip])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
