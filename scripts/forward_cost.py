"""What one language-model forward costs at a preset (random weights), for the forwards every accelerated and
baseline number is made of: a decode step, a γ = 10 verification, a velocity forward (with CFG's batch of 2) and the
prefills of an edit (VAE block, ViT block, instruction). Medians in milliseconds, for whatever ``hyperbagel`` is
importable: run two checkouts alternately on PYTHONPATH to compare them.

    python scripts/forward_cost.py --preset tiny [--compile] [--fused]
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import time

import torch


def _median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--context", type=int, default=256, help="prompt tokens before a decode step and a verification")
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="Forwarder(compile=True), where this checkout has it")
    ap.add_argument("--fused", action="store_true", help="text steps through FusedLayer copies (fused_text=True)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hyperbagel.model.checkpoint import build_model
    from hyperbagel.model.context import Context, Forwarder
    from hyperbagel.model.presets import preset
    from hyperbagel.model.siglip import vit_position_ids

    torch.manual_seed(0)
    cfg = preset(args.preset)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    # only the options asked for: an older checkout's Forwarder may lack them
    options = {name: True for name, asked in (("compile", args.compile), ("fused_text", args.fused)) if asked}
    fwd = Forwarder(model, **options)
    g = torch.Generator().manual_seed(0)
    V = cfg.llm.vocab_size
    side = cfg.image_size // cfg.latent_downsample
    latent_ids = vit_position_ids(side, side, cfg.max_latent_size)
    p = cfg.vit.patch_size
    vit_ids = vit_position_ids(cfg.image_size // p, cfg.image_size // p, cfg.vit_max_num_patch_per_side)
    text = torch.randint(V, (args.context,), generator=g).tolist()
    instruction = torch.randint(V, (12,), generator=g).tolist()
    latents = torch.randn(1, side * side, cfg.patch_latent_dim, generator=g)
    pixels = torch.randn(1, len(vit_ids), 3 * p * p, generator=g)
    results = {}
    with torch.inference_mode():
        ctx = Context.empty(model, 1)
        fwd.prefill_text(ctx, [text])
        T = ctx.length

        def decode():
            fwd.text_forward(ctx, torch.tensor([[fwd.bos]]), ctx.rope[:, None])
            ctx.crop(T)

        def verify():
            ids = torch.randint(V, (1, 11), generator=g)
            fwd.text_forward(ctx, ids, ctx.rope[:, None] + torch.arange(11), layer_states=True)
            ctx.crop(T)

        results["decode_step"] = _median_ms(decode, args.repeats, 5)
        results["verify_gamma10"] = _median_ms(verify, args.repeats, 5)

        cond = Context.empty(model, 2)
        fwd.prefill_text(cond, [text[:20], text[:14]])
        x_t, t = torch.randn(2, *latents.shape[1:], generator=g), torch.full((2,), 0.5)
        results["velocity_cfg2"] = _median_ms(lambda: fwd.velocity(cond, x_t, t, latent_ids), args.repeats, 5)

        def edit_prefills():
            c = Context.empty(model, 1)
            fwd.prefill_vae(c, latents, latent_ids)
            fwd.prefill_vit(c, pixels, vit_ids)
            fwd.prefill_text(c, [instruction])

        results["edit_prefills_3"] = _median_ms(edit_prefills, args.repeats, 5)
    print(json.dumps({"preset": args.preset, "context": args.context, "compile": args.compile, "fused": args.fused,
                      "torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or "cpu",
                      "compile_supported": "compile" in inspect.signature(Forwarder).parameters,
                      "ms": {k: round(v, 2) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
