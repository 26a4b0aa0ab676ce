"""The cost of one decode step (one token through the language model with the KV cache) at a preset, after a
prefilled context: the median over the steps of a greedy answer, in milliseconds, for the KV cache of whatever
``hyperbagel`` is importable (run it with two checkouts on PYTHONPATH, alternately, to compare them).

    python scripts/decode_step_cost.py --preset tiny --context 512 --tokens 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--context", type=int, default=512, help="prefilled text tokens")
    ap.add_argument("--tokens", type=int, default=256, help="decode steps timed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hyperbagel.model.checkpoint import build_model
    from hyperbagel.model.context import Context, Forwarder
    from hyperbagel.model.presets import preset

    torch.manual_seed(0)
    model = build_model(preset(args.preset)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    fwd = Forwarder(model)
    g = torch.Generator().manual_seed(0)
    vocab = model.cfg.llm.vocab_size
    ctx = Context.empty(model, 1)
    times = []
    with torch.inference_mode():
        fwd.prefill_text(ctx, [torch.randint(vocab, (args.context,), generator=g).tolist()])
        token = torch.tensor([fwd.bos])
        for _ in range(args.tokens):  # as generate_text decodes
            t = time.perf_counter()
            hidden = fwd.text_forward(ctx, token[:, None], ctx.rope[:, None]).hidden[:, -1]
            ctx.rope = ctx.rope + 1
            token = model.logits(hidden).argmax(-1)
            times.append(time.perf_counter() - t)
    print(json.dumps({"preset": args.preset, "context": args.context, "tokens": args.tokens,
                      "decode_step_ms_median": 1e3 * statistics.median(times),
                      "decode_step_ms_last_quarter": 1e3 * statistics.median(times[-args.tokens // 4:])}))


if __name__ == "__main__":
    main()
