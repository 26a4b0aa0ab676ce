#!/usr/bin/env python3
"""Our forwards against the hardware's limits, eager and compiled, with random weights (issue 20's GPU check).

1. The limits, measured here: a large bf16 matmul (the compute roofline) and a device-to-device copy (memory
   bandwidth).
2. Velocity forwards at each ``--tokens`` latent-token count over a short text context: their FLOPs (counted by
   ``torch.utils.flop_counter`` on the real call, fused attention by ``attention_flops``), seconds, and the share of
   the measured matmul peak.
3. A decode step over a ``--context``-token cache: the bytes of the weights it must read (the understanding expert,
   the final norm, the LM head), and its seconds against bytes ÷ bandwidth.

Every timed call is the project's ``Forwarder``; ``--compile`` adds the same rows with ``Forwarder(compile=True)``.

    python scripts/gpu_roofline.py --preset bagel-7b --device cuda --tokens 1024,4096 --compile --out $OUT/roofline.json
    python scripts/gpu_roofline.py --preset micro --device cpu --dtype float32 --tokens 16 --repeats 2  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from gpu_speed import Timer, build_models, log  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from hyperbagel.model.context import Context, Forwarder  # noqa: E402
from hyperbagel.model.presets import PRESETS, preset  # noqa: E402
from hyperbagel.model.siglip import vit_position_ids  # noqa: E402


def attention_flops(query_shape, key_shape, value_shape, *_, **__) -> int:
    """FLOPs of one fused attention call: scores and their product with the values over every query head. Keys and
    values may have fewer heads (grouped-query attention, BAGEL's 28 over 4): older torch's own formula asserts
    equal head counts, and none counts the CPU's fused kernel."""
    b, heads, queries, d = query_shape
    keys, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * heads * queries * keys * (d + d_v)


ATTENTION_OPS = [getattr(torch.ops.aten, name) for name in (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, name)]


def matmul_peak(device, dtype, timer: Timer, n: int, repeats: int) -> float:
    """FLOP/s of an ``n``-cubed matmul, median of ``repeats``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = timer.repeat(lambda: a @ b, 2, repeats)
    return 2 * n**3 / statistics.median(times)


def copy_bandwidth(device, timer: Timer, gib: float, repeats: int) -> float:
    """Bytes/s of a device-to-device copy (each byte read once and written once)."""
    x = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    times = timer.repeat(lambda: y.copy_(x), 2, repeats)
    return 2 * x.numel() / statistics.median(times)


def decode_bytes(model) -> int:
    """Bytes a decode step must read: every understanding-expert weight of the decoder, the final norm, the LM head
    (one embedding row is negligible)."""
    lm = model.language_model
    skip = {id(p) for p in lm.model.embed_tokens.parameters()}
    return sum(p.numel() * p.element_size() for n, p in lm.named_parameters()
               if "_moe_gen" not in n and id(p) not in skip)


def velocity_rows(fwd: Forwarder, model, cfg, tokens: int, context: int, timer: Timer, repeats: int) -> dict:
    side = math.isqrt(tokens)
    if side * side != tokens or side > cfg.max_latent_size:
        raise ValueError(f"--tokens {tokens}: need a square number of latent tokens with side ≤ {cfg.max_latent_size}")
    device = fwd.device
    ctx = Context.empty(model, 1)
    fwd.prefill_text(ctx, [[fwd.bos] + [7] * (context - 2) + [fwd.eos]])
    ids = vit_position_ids(side, side, cfg.max_latent_size).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x_t = torch.randn(1, tokens, cfg.patch_latent_dim, device=device, generator=g)
    t = torch.full((1,), 0.5, device=device)

    def call():
        return fwd.velocity(ctx, x_t, t, ids)

    call()  # warm-up (and, compiled, the compile)
    flops = None
    if not fwd.compiled:  # counted on the eager call (a dispatch mode would send a compiled one back to dynamo)
        counter = FlopCounterMode(display=False, custom_mapping=dict.fromkeys(ATTENTION_OPS, attention_flops))
        with counter:
            call()
        flops = counter.get_total_flops()
    times = timer.repeat(call, 2, repeats)
    return {"latent_tokens": tokens, "context_tokens": ctx.length, "flops": flops,
            "seconds_median": statistics.median(times), "seconds": times}


def decode_row(fwd: Forwarder, model, context: int, timer: Timer, repeats: int) -> dict:
    ctx = Context.empty(model, 1)
    fwd.prefill_text(ctx, [[fwd.bos] + [7] * (context - 2) + [fwd.eos]])
    tok = torch.full((1, 1), fwd.bos, dtype=torch.long, device=fwd.device)

    def step():  # the body of generate_text: one token through the model, logits, argmax to the host
        out = fwd.text_forward(ctx, tok, ctx.rope[:, None], update_cache=False)
        return model.logits(out.hidden[:, -1]).argmax(-1).tolist()

    times = timer.repeat(step, 5, repeats)
    return {"context_tokens": ctx.length, "seconds_median": statistics.median(times), "seconds": times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bagel-7b", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--tokens", default="1024,4096", help="latent-token counts of the velocity rows (squares)")
    ap.add_argument("--context", type=int, default=300, help="cached tokens before a decode step")
    ap.add_argument("--prompt", type=int, default=32, help="text tokens before a velocity forward")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--matmul", type=int, default=8192, help="side of the peak-measuring matmul")
    ap.add_argument("--copy-gib", type=float, default=2.0, help="size of the bandwidth-measuring copy")
    ap.add_argument("--compile", action="store_true", help="also the compiled rows (Forwarder(compile=True))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cfg = preset(args.preset)
    timer = Timer(device)
    report: dict = {"settings": {k: str(v) for k, v in vars(args).items()},
                    "env": {"torch": torch.__version__, "device": str(device), "machine": platform.machine(),
                            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or platform.machine()},
                    "rows": {}}

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")

    peak = matmul_peak(device, dtype, timer, args.matmul, 10)
    bandwidth = copy_bandwidth(device, timer, args.copy_gib, 10)
    report["limits"] = {"matmul_flops_per_s": peak, "copy_bytes_per_s": bandwidth}
    log(f"{report['env']['device_name']}: matmul {peak / 1e12:.1f} TFLOP/s ({args.dtype}, {args.matmul}³), "
        f"copy {bandwidth / 1e9:.0f} GB/s")
    t0 = time.perf_counter()
    model, _ = build_models(cfg, device, dtype, args.seed)
    weights = decode_bytes(model)
    report["decode_weight_bytes"] = weights
    log(f"built {args.preset} in {time.perf_counter() - t0:.1f} s; a decode step reads {weights / 1e9:.2f} GB of "
        f"weights: the streaming limit is {1e3 * weights / bandwidth:.2f} ms")
    save()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    modes = ["eager"] + (["compiled"] if args.compile else [])
    with autocast, torch.no_grad():
        for mode in modes:
            fwd = Forwarder(model, compile=mode == "compiled")
            rows = report["rows"].setdefault(mode, {})
            # a compiled row pays for its compile first: the decode step and the largest block (the targets' rows)
            # run first, so that a part cut short by its time limit keeps them
            row = decode_row(fwd, model, args.context, timer, max(args.repeats, 20))
            row["streaming_limit_s"] = weights / bandwidth
            row["times_streaming_limit"] = row["seconds_median"] / row["streaming_limit_s"]
            rows["decode_step"] = row
            log(f"{mode} decode step over {row['context_tokens']} tokens: {1e3 * row['seconds_median']:.2f} ms = "
                f"{row['times_streaming_limit']:.2f} × the weight-streaming limit")
            save()
            for n in sorted((int(x) for x in args.tokens.split(",")), reverse=True):
                t0 = time.perf_counter()
                row = velocity_rows(fwd, model, cfg, n, args.prompt, timer, args.repeats)
                row["flops"] = row["flops"] or report["rows"]["eager"][f"velocity_{n}"]["flops"]
                row["share_of_matmul_peak"] = row["flops"] / row["seconds_median"] / peak
                rows[f"velocity_{n}"] = row
                log(f"{mode} velocity, {n} latent tokens: {1e3 * row['seconds_median']:.1f} ms, "
                    f"{row['flops'] / 1e12:.2f} TFLOP -> {100 * row['share_of_matmul_peak']:.1f} % of the matmul "
                    f"peak ({time.perf_counter() - t0:.0f} s with warm-up)")
                save()
    print(json.dumps({m: {k: {x: v[x] for x in v if x != "seconds"} for k, v in r.items()}
                      for m, r in report["rows"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
