"""Prompt-lookup decoding: speculative decoding with no draft model, the peer every trained draft must beat.

The drafts are copied from the text so far (the prompt's words and the answer's tokens): find the latest earlier
occurrence of the last ``n`` tokens, longest ``n`` first, and propose the tokens that followed it. The big serving
libraries ship this for free (prompt lookup, n-gram speculation). Verification and acceptance are the speculative
decoder's (``speculative.py``, steps 3–5): one target forward over ``[root, drafts]``; greedy keeps the longest
prefix equal to the target's argmax, sampling uses recursive rejection with deterministic drafts (a point-mass
``q``), so the output is the target's, token for token or in distribution. With nothing to copy, a step is a plain
decoding step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hyperbagel.decode.generate import GREEDY
from hyperbagel.decode.sampling import SamplingConfig
from hyperbagel.decode.speculative import SpecResult, accept_path, commit_path, emit, rewind
from hyperbagel.model.context import Context, Forwarder


@dataclass(frozen=True)
class LookupConfig:
    gamma: int = 5  # at most this many tokens copied per verification
    max_ngram: int = 3  # the longest tail matched
    min_ngram: int = 1  # the shortest tail matched

    def __post_init__(self) -> None:
        if self.gamma < 1:
            raise ValueError(f"LookupConfig.gamma must be ≥ 1, got {self.gamma}")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"LookupConfig needs 1 ≤ min_ngram ≤ max_ngram, got {self.min_ngram}, {self.max_ngram}")

    @property
    def label(self) -> str:
        return f"n-gram lookup n≤{self.max_ngram} γ={self.gamma}"


def propose(history: Sequence[int], cfg: LookupConfig) -> list[int]:
    """The tokens that followed the latest earlier occurrence of ``history``'s last n tokens (the longest n from
    ``max_ngram`` down to ``min_ngram`` that occurs earlier), at most ``gamma`` of them; [] when none occurs."""
    h = list(history)
    for n in range(min(cfg.max_ngram, len(h) - 1), cfg.min_ngram - 1, -1):
        tail = h[-n:]
        for i in range(len(h) - n - 1, -1, -1):  # earlier occurrences with a token after them, latest first
            if h[i : i + n] == tail:
                return h[i + n : i + n + cfg.gamma]
    return []


@torch.no_grad()
def lookup_generate(
    fwd: Forwarder,
    ctx: Context,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    sampling: SamplingConfig = GREEDY,
    cfg: LookupConfig = LookupConfig(),
    generator: torch.Generator | None = None,
) -> SpecResult:
    """Decode from ``ctx`` (batch 1) like ``generate_text``, drafting by lookup in ``prompt_ids`` (the prompt's word
    ids, without special tokens) and the answer so far; ``ctx`` ends as plain decoding leaves it."""
    if ctx.batch != 1:
        raise ValueError(f"prompt-lookup decoding runs one sequence at a time, got a context of batch {ctx.batch}")
    start, before = time.perf_counter(), fwd.forwards
    device, eos = fwd.device, fwd.eos
    start_len, start_rope = ctx.length, ctx.rope.clone()
    root, out, stopped = fwd.bos, [], False
    accepted, proposed = [], []
    while len(out) < max_new_tokens and not stopped:
        drafts = propose([*prompt_ids, *out], cfg)[: max_new_tokens - len(out) - 1]  # none past the budget
        ids = torch.tensor([root, *drafts], device=device)
        length, root_pos = ctx.length, int(ctx.rope[0])
        positions = root_pos + torch.arange(len(ids), device=device)
        hidden = fwd.text_forward(ctx, ids[None], positions[None]).hidden[0]
        path, nxt = accept_path(fwd.model.logits(hidden), ids, list(range(-1, len(drafts))), None, sampling,
                                generator)
        commit_path(ctx, length, path)
        accepted.append(len(path) - 1)
        proposed.append(len(drafts))
        stopped = emit(out, ids[path[1:]].tolist() + [nxt], eos, max_new_tokens)
        root = nxt
    rewind(ctx, start_len, start_rope, len(out), stopped)
    return SpecResult(out, stopped, fwd.forwards - before, 0, time.perf_counter() - start, accepted, proposed)
