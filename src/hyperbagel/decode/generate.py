"""Plain autoregressive decoding over a context, as BAGEL's ``generate_text`` does it.

Decoding starts by feeding ``<|im_start|>`` at the context's next position; each step feeds the previous token and
appends its keys to the cache; a row stops when it produces ``<|im_end|>`` (not returned) or after ``max_new_tokens``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hyperbagel.decode.sampling import SamplingConfig, next_token
from hyperbagel.model.context import Context, Forwarder

GREEDY = SamplingConfig()


@dataclass
class TextResult:
    tokens: list[list[int]]  # per row, without the start token and without <|im_end|>
    forwards: int  # language-model forwards made
    seconds: float
    stopped: list[bool]  # whether each row ended on <|im_end|>


@torch.no_grad()
def generate_text(
    fwd: Forwarder,
    ctx: Context,
    max_new_tokens: int,
    sampling: SamplingConfig = GREEDY,
    generator: torch.Generator | None = None,
) -> TextResult:
    """Decode from ``ctx`` (which is extended in place; pass ``ctx.copy()`` to keep it)."""
    start, before = time.perf_counter(), fwd.forwards
    B = ctx.batch
    token = torch.full((B,), fwd.bos, dtype=torch.long, device=fwd.device)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for _ in range(max_new_tokens):
        hidden = fwd.text_forward(ctx, token[:, None], ctx.rope[:, None]).hidden[:, -1]
        ctx.rope = ctx.rope + 1
        token = next_token(fwd.model.logits(hidden), sampling, generator)
        for b, tok in enumerate(token.tolist()):
            if done[b]:
                continue
            if tok == fwd.eos:
                done[b] = True
            else:
                out[b].append(tok)
        if all(done):
            break
    return TextResult(out, fwd.forwards - before, time.perf_counter() - start, done)
