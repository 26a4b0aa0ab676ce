"""Where a speculative decode's time goes: the draft's catch-up (first read of the context, and later ones), its
draft steps, the target's verification and the bookkeeping, for each draft folder given, on the same items.

    python scripts/spec_phase_cost.py --target shapes-teacher --drafts runs/drafts/hyper-bagel runs/drafts/eagle3 \
        --items 12 --gamma 10

Prints one JSON line per draft and split with the milliseconds per item of each phase (medians over repeats) and,
with ``--ops``, the top operators of the draft's own forwards by self CPU time. ``--layer`` adds one line per
draft: a draft layer's cost for one token over a 300-key cache, as the module and as the ``FusedLayer`` copy that
decoding uses (median µs over 3,000 calls, and profiler events per call).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="shapes-teacher")
    ap.add_argument("--drafts", nargs="+", type=Path, required=True)
    ap.add_argument("--items", type=int, default=12, help="items per split (spread over it)")
    ap.add_argument("--gamma", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", action="store_true", help="also profile operators of the draft forwards")
    ap.add_argument("--layer", action="store_true", help="also time one draft layer, module against fused copy")
    ap.add_argument("--fused-target", action="store_true", help="the target's text steps through fused copies")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hyperbagel.decode import speculative as sp
    from hyperbagel.decode.draft import Draft, load_draft
    from hyperbagel.eval.bench_understand import UnderstandBench, _context, _items, calibration_items
    from hyperbagel.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.target, student=False, fused_text=args.fused_target)
    drafts = {str(f): load_draft(f, pipe.model) for f in args.drafts}
    items = _items(UnderstandBench(Path(args.target), [], Path(".")))
    splits = {s: calibration_items([it for it in items if it.split == s], args.items) for s in ("short", "long")}

    phases: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - t
        return wrapper

    first = {"done": False}
    catch_up = sp._catch_up

    def catch_up_split(*a, **k):
        name = "catch_up_later" if first["done"] else "catch_up_context"
        first["done"] = True
        return timed(name, catch_up)(*a, **k)

    sp._catch_up = catch_up_split
    sp._draft_chain = timed("draft_steps", sp._draft_chain)
    sp.accept_path = timed("accept", sp.accept_path)
    sp.commit_path = timed("commit", sp.commit_path)
    text_forward = pipe.fwd.text_forward
    pipe.fwd.text_forward = timed("verify", text_forward)

    spec = sp.SpecConfig("chain", gamma=args.gamma)
    for name, draft in drafts.items():
        for split, chosen in splits.items():
            contexts = [_context(pipe, it) for it in chosen]
            per_repeat = []
            for _ in range(args.repeats + 1):  # the first pass warms up
                phases.clear()
                total, tokens, forwards = 0.0, 0, 0
                for ctx in contexts:
                    first["done"] = False
                    res = sp.speculative_generate(pipe.fwd, draft, ctx.copy(), 80, spec=spec)
                    total += res.seconds
                    tokens += res.committed
                    forwards += res.forwards
                per_repeat.append({**dict(phases), "total": total})
            per_repeat = per_repeat[1:]
            n = len(contexts)
            keys = sorted(per_repeat[0])
            med = {k: 1e3 * sorted(r.get(k, 0.0) for r in per_repeat)[len(per_repeat) // 2] / n for k in keys}
            med["other"] = med["total"] - sum(v for k, v in med.items() if k != "total")
            print(json.dumps({"draft": name, "split": split, "items": n, "tau": tokens / forwards,
                              "ms_per_item": {k: round(v, 2) for k, v in med.items()}}), flush=True)
        if args.layer:
            print(json.dumps({"draft": name, **layer_cost(draft)}), flush=True)
        if args.ops:
            from torch.profiler import ProfilerActivity, profile

            forward = Draft.forward
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for ctx in [_context(pipe, it) for it in splits["long"][:4]]:
                    sp.speculative_generate(pipe.fwd, draft, ctx.copy(), 80, spec=spec)
            assert Draft.forward is forward
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def layer_cost(draft) -> dict:
    """The first draft layer, module and fused, on one token after a 300-token context."""
    import statistics

    from torch.profiler import ProfilerActivity, profile

    from hyperbagel.model.fused_layer import FusedLayer
    from hyperbagel.model.kv_cache import KVCache
    from hyperbagel.model.masks import Append
    from hyperbagel.model.qwen2_mot import rope_cos_sin

    module = draft.layers[0]
    llm = draft.llm
    g = torch.Generator().manual_seed(0)
    rope = lambda p: rope_cos_sin(p, llm.head_dim, llm.rope_theta, torch.float32)  # noqa: E731
    out = {}
    with torch.inference_mode():
        for name, layer in (("module", module), ("fused", FusedLayer(module))):
            cache = KVCache(1)
            positions = torch.arange(300)[None]
            layer(torch.randn(1, 300, llm.hidden_size, generator=g), None, *rope(positions), Append("causal"), cache,
                  0, True)
            x, cos_sin = torch.randn(1, 1, llm.hidden_size, generator=g), rope(torch.full((1, 1), 300))

            def call(layer=layer, x=x, cos_sin=cos_sin, cache=cache):
                layer(x, None, *cos_sin, None, cache, 0, True)
                cache.crop(300)

            times = []
            for _ in range(3000):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                call()
            out[name] = {"us": round(1e6 * statistics.median(times), 1),
                         "events": sum(e.count for e in prof.key_averages())}
    return {"layer_one_token": out}


if __name__ == "__main__":
    main()
