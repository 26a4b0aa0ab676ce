"""What ``torch.compile`` saves at the batch sizes the distillation recipes run (random weights): a no-grad velocity
forward (a teacher rollout's branch) and a velocity forward + backward (a student's regression), eager and compiled
in turns over one context, one process; medians in ms, the median of the paired ratios, and each compile's time.

    python scripts/compile_gain.py --preset tiny --batch 24 --train-batch 64
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch


def _paired(fns: dict, repeats: int) -> dict:
    warm = {}
    for name, fn in fns.items():  # the first call compiles; the second runs the compiled graph once
        t = time.perf_counter()
        fn()
        fn()
        warm[name] = time.perf_counter() - t
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ratio = statistics.median(c / e for e, c in zip(times["eager"], times["compiled"]))
    return {**{f"{n}_ms": round(1e3 * statistics.median(v), 1) for n, v in times.items()},
            "compiled/eager": round(ratio, 3), "compile_s": round(warm["compiled"] - warm["eager"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=24, help="rows of the no-grad velocity forward")
    ap.add_argument("--train-batch", type=int, default=64, help="rows of the forward + backward")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hyperbagel.model.checkpoint import build_model
    from hyperbagel.model.context import Context, Forwarder
    from hyperbagel.model.presets import preset
    from hyperbagel.model.siglip import vit_position_ids

    torch.manual_seed(0)
    cfg = preset(args.preset)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    fwds = {"eager": Forwarder(model), "compiled": Forwarder(model, compile=True)}
    g = torch.Generator().manual_seed(0)
    side = cfg.image_size // cfg.latent_downsample
    ids = vit_position_ids(side, side, cfg.max_latent_size)

    def context(batch: int):
        ctx = Context.empty(model, batch)
        with torch.no_grad():
            fwds["eager"].prefill_text(ctx, torch.randint(cfg.llm.vocab_size, (batch, 20), generator=g).tolist())
        x = torch.randn(batch, side * side, cfg.patch_latent_dim, generator=g)
        return ctx, x, torch.full((batch,), 0.5)

    ctx, x, t = context(args.batch)

    def rollout_branch(f):
        with torch.no_grad():
            f.velocity(ctx, x, t, ids)

    results = {"velocity": _paired({n: lambda f=f: rollout_branch(f) for n, f in fwds.items()}, args.repeats)}
    tctx, tx, tt = context(args.train_batch)

    def regression(f):
        v, _ = f.velocity(tctx, tx, tt, ids)
        v.square().mean().backward()

    results["velocity_backward"] = _paired({n: lambda f=f: regression(f) for n, f in fwds.items()},
                                           max(3, args.repeats // 2))
    print(json.dumps({"preset": args.preset, "batch": args.batch, "train_batch": args.train_batch,
                      "torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or "cpu",
                      **results}))


if __name__ == "__main__":
    main()
