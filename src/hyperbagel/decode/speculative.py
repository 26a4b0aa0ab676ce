"""Speculative decoding with a draft model: chains and EAGLE-2 dynamic trees, verified losslessly (batch 1).

Each step, as EAGLE numbers it (Li et al. 2024, 2025; chains: Leviathan et al. 2023, Algorithm 1):

1. Catch up. The draft reads the target's layer states of the rows the target verified last step
   (``Draft.features``), then runs its layers over ``(F_in[i], embed(t[i+1]))``; the last row's output predicts the
   token after the *root*, the token the target emitted last and has not read yet.
2. Draft. Chain: ``gamma`` tokens, each step feeding the draft its own previous output as the feature. Tree
   (EAGLE-2): expand the ``top_k`` best frontier nodes ``depth − 1`` times, score each path by the product of draft
   probabilities, then keep the ``total_tokens − 1`` best nodes (closed under ancestors, since a child never
   outscores its parent).
3. Verify. One target forward over ``[root, drafts]``; a tree uses its ancestor-only mask and positions
   ``root + depth``.
4. Accept. Greedy: the longest drafted path equal to the target's argmax. Sampling: the rejection rule for chains
   (``accept_chain``) and recursive rejection over siblings for trees (``accept_tree``). Either way the token after
   the accepted drafts is the target's own (bonus or residual sample), so every step commits at least one token and
   the output has exactly the target's distribution.
5. Commit. Keep the target's KV rows of ``[root, accepted drafts]`` (``Context.crop`` for a chain, ``KVCache.keep``
   for a tree path) and drop the draft's provisional rows; the kept rows' target states are the next catch-up.

The context must carry a trace of its prefill (``Context.empty(..., trace=True)``): the draft reads the target's
layer states of every context position, image tokens included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from hyperbagel.decode.draft import Draft, TargetHead
from hyperbagel.decode.generate import GREEDY
from hyperbagel.decode.sampling import SamplingConfig, probabilities, sample, uniform
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.masks import Append


@dataclass(frozen=True)
class SpecConfig:
    mode: Literal["chain", "tree"] = "chain"
    gamma: int = 5  # chain: draft tokens per verification (10 for the paper's acceptance metric)
    top_k: int = 4  # tree: children per expanded node, and nodes expanded per depth
    depth: int = 6  # tree: the deepest draft token
    total_tokens: int = 32  # tree: nodes verified, the root included

    def __post_init__(self) -> None:
        if self.mode not in ("chain", "tree"):
            raise ValueError(f"SpecConfig.mode must be 'chain' or 'tree', got {self.mode!r}")
        for name in ("gamma", "top_k", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"SpecConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.total_tokens < 2:
            raise ValueError(f"SpecConfig.total_tokens must be ≥ 2, got {self.total_tokens}")

    @property
    def label(self) -> str:
        if self.mode == "chain":
            return f"chain γ={self.gamma}"
        return f"tree k={self.top_k} d={self.depth} n={self.total_tokens}"


@dataclass
class SpecResult:
    tokens: list[int]  # without the start token and without <|im_end|>
    stopped: bool  # ended on <|im_end|>
    forwards: int  # target forwards (one verification each)
    draft_forwards: int  # draft passes (catch-ups and draft steps)
    seconds: float
    accepted: list[int]  # draft tokens accepted at each verification
    proposed: list[int]  # draft depth offered at each verification (γ, or the tree's depth)

    @property
    def committed(self) -> int:
        """Tokens the decoding produced, <|im_end|> included: what plain decoding spends one forward on each."""
        return len(self.tokens) + int(self.stopped)


# ----- acceptance rules (pure, batched over a leading dimension for the tests) -----
def accept_chain(p: Tensor, q: Tensor, drafts: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Leviathan et al. (2023), Algorithm 1, for rows ``[B]`` of γ drafts.

    ``p [B, γ+1, V]``: the target's distributions after the root and after each draft; ``q [B, γ, V]``: the
    distributions the drafts ``[B, γ]`` were sampled from. Draft j is kept with probability min(1, p/q) while all
    before it were kept; at the first rejection the next token is drawn from norm(max(p − q, 0)), and when all are
    kept from ``p[γ]`` (the bonus). Returns (accepted count ``[B]``, next token ``[B]``).
    """
    B, G = drafts.shape
    idx = drafts.unsqueeze(-1)
    p_d = p[:, :G].gather(-1, idx).squeeze(-1)
    q_d = q.gather(-1, idx).squeeze(-1)
    u = uniform((B, G), generator, p)
    n = (u * q_d < p_d).long().cumprod(-1).sum(-1)
    rows = torch.arange(B, device=p.device)
    p_n = p[rows, n]
    q_n = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)[rows, n]  # zero after the last draft: the bonus
    residual = (p_n - q_n).clamp_min(0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_n)  # p = q: rejection had probability 0
    return n, sample(residual, generator)


def _children(parents: list[int]) -> Tensor:
    """``[N, K]`` child indices of every node, in index order, padded with −1."""
    kids: list[list[int]] = [[] for _ in parents]
    for i, parent in enumerate(parents):
        if parent >= 0:
            kids[parent].append(i)
    K = max(1, max(len(k) for k in kids))
    return torch.tensor([k + [-1] * (K - len(k)) for k in kids])


def accept_tree(p: Tensor, tokens: Tensor, parents: list[int], generator: torch.Generator | None
                ) -> tuple[Tensor, Tensor]:
    """Recursive rejection over siblings with deterministic children (EAGLE-2; SpecInfer's rule with q a point mass).

    ``p [B, N, V]``: the target's distribution at every node (node 0 is the root); ``tokens [N]`` or ``[B, N]``;
    ``parents [N]`` (−1 for the root), every parent before its children. At a node, try its children in index
    order: keep child x with probability r(x), where r starts as the node's p; on rejection set r(x) = 0 and
    renormalise. A kept child becomes the current node; when every child is rejected (or at a leaf) the next token is
    drawn from r. Child j is thus kept with probability exactly p(x_j), and the fallback is p without the children,
    so the emitted token is an exact sample of p. Returns (accepted path ``[B, N]`` bool, root included, and the
    next token ``[B]``).
    """
    B, N, V = p.shape
    tokens = tokens.expand(B, N)
    kids = _children(parents).to(p.device)
    rows = torch.arange(B, device=p.device)
    cur = torch.zeros(B, dtype=torch.long, device=p.device)
    active = torch.ones(B, dtype=torch.bool, device=p.device)
    accepted = torch.zeros(B, N, dtype=torch.bool, device=p.device)
    accepted[:, 0] = True
    nxt = torch.full((B,), -1, dtype=torch.long, device=p.device)
    r = p[:, 0].clone()
    while bool(active.any()):
        moved = torch.zeros_like(active)
        new_cur = cur.clone()
        for child in kids[cur].unbind(-1):
            live = active & ~moved & (child >= 0)
            tok = tokens[rows, child.clamp_min(0)]
            r_tok = r[rows, tok]
            u = uniform((B,), generator, p)
            keep = live & (u < r_tok)
            reject = live & ~keep
            r = torch.where(reject[:, None] & (torch.arange(V, device=p.device) == tok[:, None]), 0.0, r)
            total = r.sum(-1, keepdim=True)
            r = torch.where(reject[:, None] & (total > 0), r / total, r)
            moved |= keep
            new_cur = torch.where(keep, child, new_cur)
        stop = active & ~moved
        if bool(stop.any()):
            nxt[stop] = sample(r[stop], generator)
        active, cur = moved, new_cur
        accepted[rows[moved], cur[moved]] = True
        r = torch.where(moved[:, None], p[rows, cur], r)
    return accepted, nxt


# ----- the draft's rows -----
class _DraftRows:
    """The draft's view of one sequence: its layers in decoding form, Dec's and the draft layers' KV caches, how
    many rows they hold, and the rows the target has verified but the draft has not read (states ``[1, n, L, D]``,
    next ids, positions)."""

    def __init__(self, draft: Draft, states: Tensor, next_ids: Tensor, positions: Tensor):
        self.layers = draft.fused_layers()
        self.dec_cache, self.cache = draft.new_caches()
        self.length = 0
        self.pending = (states, next_ids, positions)

    @classmethod
    def from_trace(cls, draft: Draft, ctx: Context, root: int) -> _DraftRows:
        blocks = ctx.trace
        valid = torch.cat([b.valid for b in blocks], dim=1)[0]
        states = torch.cat([b.states for b in blocks], dim=1)[:, valid]
        ids = torch.cat([b.ids for b in blocks], dim=1)[:, valid]
        positions = torch.cat([b.positions for b in blocks], dim=1)[:, valid]
        next_ids = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], root)], dim=1)
        return cls(draft, states, next_ids, positions)


def _catch_up(draft: Draft, head: TargetHead, rows: _DraftRows) -> Tensor:
    """Step 1: read the pending rows; returns the last row's output ``[1, 1, D]``."""
    states, ids, positions = rows.pending
    feature = draft.features(states, positions, Append("causal"), rows.dec_cache, rows.layers)
    out = draft(feature, head.embed(ids), positions, Append("causal"), rows.cache, layers=rows.layers)
    rows.length += ids.shape[1]
    return out[:, -1:]


def _draft_chain(draft, head, rows, out, root_pos: int, gamma: int, eos: int, sampling: SamplingConfig,
                 generator):
    """Step 2, chain: up to γ tokens ``[≤ γ]`` (none after an <|im_end|>: decoding would stop there) and, when
    sampling, the distributions they were drawn from ``[≤ γ, V]``."""
    tokens, dists = [], []
    for j in range(gamma):
        logits = head.logits(out[:, -1])
        if sampling.greedy:
            token = logits.argmax(-1)
        else:
            dists.append(probabilities(logits, sampling))
            token = sample(dists[-1], generator)
        tokens.append(token)
        if j + 1 < gamma and int(token) != eos:
            pos = torch.full((1, 1), root_pos + j, dtype=torch.long, device=token.device)
            out = draft(out, head.embed(token[:, None]), pos, None, rows.cache, layers=rows.layers)
        else:
            break
    rows.cache.crop(rows.length)
    return torch.cat(tokens), (torch.cat(dists) if dists else None)


@dataclass
class _Tree:
    tokens: Tensor  # [N] node tokens, the root first
    parents: list[int]  # [N], −1 for the root; parents precede children
    depth: np.ndarray  # [N]
    ancestors: Tensor  # [N, N] bool, the diagonal set


def _draft_tree(draft: Draft, head: TargetHead, rows: _DraftRows, out: Tensor, root: int, root_pos: int,
                eos: int, spec: SpecConfig) -> _Tree:
    """Step 2, tree (EAGLE-2): candidates with their path scores (sum of draft log-probabilities), then the best
    ``total_tokens − 1`` of them under the root."""
    k, device = spec.top_k, out.device
    logp = torch.log_softmax(head.logits(out[0, -1]).float(), -1)
    score, tok = logp.topk(k)
    cand_tok, cand_score = [tok], [score]
    cand_parent = [-1] * k
    frontier = _frontier(score, tok, eos, k, 0)  # candidate ids of the nodes to expand next
    frontier_out = out.expand(1, k, -1)  # the output each frontier node's row reads as its feature
    row_of: dict[int, int] = {}  # candidate id → its row among the processed tree rows
    row_anc = np.zeros((0, 0), dtype=bool)  # processed rows × processed rows: ancestors (self included)
    for d in range(1, spec.depth):
        P = len(row_of)
        anc = np.zeros((k, P + k), dtype=bool)
        for i, c in enumerate(frontier):
            parent = cand_parent[c]
            if parent >= 0:
                anc[i, :P] = row_anc[row_of[parent], :P]
            anc[i, P + i] = True
        grown = np.zeros((P + k, P + k), dtype=bool)
        grown[:P, :P], grown[P:] = row_anc, anc
        row_anc = grown
        for i, c in enumerate(frontier):
            row_of[c] = P + i
        mask = torch.cat([torch.ones(k, rows.length, dtype=torch.bool, device=device),
                          torch.from_numpy(anc).to(device)], dim=1)[None, None]
        ftok = torch.cat(cand_tok)[frontier]
        pos = torch.full((1, k), root_pos + d - 1, dtype=torch.long, device=device)
        new = draft(frontier_out, head.embed(ftok[None]), pos, mask, rows.cache, layers=rows.layers)  # [1, k, D]
        logp = torch.log_softmax(head.logits(new[0]).float(), -1)  # [k, V]
        s, t = (torch.cat(cand_score)[frontier][:, None] + logp).topk(k, dim=-1)  # [k, k]
        first = sum(len(x) for x in cand_tok)
        cand_tok.append(t.flatten())
        cand_score.append(s.flatten())
        cand_parent += [c for c in frontier for _ in range(k)]
        frontier = _frontier(s.flatten(), t.flatten(), eos, k, first)
        best = torch.tensor(frontier) - first
        frontier_out = new[:, best // k]
    rows.cache.crop(rows.length)

    scores = torch.cat(cand_score)
    order = torch.sort(scores, descending=True, stable=True).indices[: spec.total_tokens - 1]
    chosen = sorted(order.tolist())  # ties keep index order, so every parent precedes its children
    node_of = {c: i + 1 for i, c in enumerate(chosen)}
    parents = [-1] + [node_of[cand_parent[c]] if cand_parent[c] >= 0 else 0 for c in chosen]
    N = len(parents)
    depth = np.zeros(N, dtype=np.int64)
    ancestors = np.eye(N, dtype=bool)
    for i in range(1, N):
        depth[i] = depth[parents[i]] + 1
        ancestors[i] |= ancestors[parents[i]]
    all_tok = torch.cat(cand_tok)
    tokens = torch.cat([torch.tensor([root], device=device), all_tok[chosen]])
    return _Tree(tokens, parents, depth, torch.from_numpy(ancestors).to(device))


def _frontier(score: Tensor, tok: Tensor, eos: int, k: int, first: int) -> list[int]:
    """The ``k`` best new candidates to expand (an <|im_end|> only if nothing else is left: decoding stops there)."""
    return (first + score.masked_fill(tok == eos, -torch.inf).topk(k).indices).tolist()


def _greedy_path(best: list[int], tokens: list[int], parents: list[int]) -> list[int]:
    """Step 4, greedy tree: follow the child whose token is the target's argmax while there is one."""
    child_by_token: dict[tuple[int, int], int] = {}
    for i in range(1, len(parents)):
        child_by_token.setdefault((parents[i], tokens[i]), i)
    path = [0]
    while (nxt := child_by_token.get((path[-1], best[path[-1]]))) is not None:
        path.append(nxt)
    return path


def accept_path(logits: Tensor, ids: Tensor, parents: list[int], q: Tensor | None, sampling: SamplingConfig,
            generator) -> tuple[list[int], int]:
    """Step 4: the accepted path (node indices, the root first) and the target's token after it."""
    if sampling.greedy:
        best = logits.argmax(-1).tolist()
        path = _greedy_path(best, ids.tolist(), parents)
        return path, best[path[-1]]
    p = probabilities(logits, sampling)
    if q is not None:  # a chain of sampled drafts
        n, nxt = accept_chain(p[None], q[None], ids[None, 1:], generator)
        return list(range(int(n[0]) + 1)), int(nxt[0])
    accepted, nxt = accept_tree(p[None], ids, parents, generator)
    return accepted[0].nonzero().flatten().tolist(), int(nxt[0])


def commit_path(ctx: Context, length: int, path: list[int]) -> None:
    """Step 5: keep the target's KV rows of the accepted path (``length`` rows were cached before the step)."""
    if path == list(range(len(path))):
        ctx.crop(length + len(path))
    else:
        keep = torch.cat([torch.arange(length), length + torch.tensor(path)]).to(ctx.valid.device)
        ctx.cache.keep(keep)
        ctx.valid = ctx.valid[:, keep]
    ctx.rope = ctx.rope + len(path)


def emit(out: list[int], tokens: list[int], eos: int, max_new_tokens: int) -> bool:
    """Append one verification's tokens to ``out`` until <|im_end|> (True: decoding stops there) or the budget."""
    for token in tokens:
        if token == eos:
            return True
        out.append(token)
        if len(out) == max_new_tokens:
            break
    return False


def rewind(ctx: Context, start_len: int, start_rope: Tensor, emitted: int, stopped: bool) -> None:
    """Leave ``ctx`` as plain decoding does: it fed the start token and every emitted token but the last."""
    fed = emitted + 1 if stopped else emitted
    ctx.crop(start_len + fed)
    ctx.rope = start_rope + fed


@torch.no_grad()
def speculative_generate(
    fwd: Forwarder,
    draft: Draft,
    ctx: Context,
    max_new_tokens: int,
    sampling: SamplingConfig = GREEDY,
    spec: SpecConfig = SpecConfig(),
    generator: torch.Generator | None = None,
) -> SpecResult:
    """Decode from ``ctx`` (batch 1, traced) like ``generate_text``; ``ctx`` ends as plain decoding leaves it."""
    if ctx.batch != 1:
        raise ValueError(f"speculative decoding runs one sequence at a time, got a context of batch {ctx.batch}")
    if ctx.trace is None or sum(b.length for b in ctx.trace) != ctx.length:
        raise ValueError("speculative decoding needs a context traced from its first position: build it with "
                         "Context.empty(model, trace=True) and prefill only")
    start, before = time.perf_counter(), fwd.forwards
    head, device, eos = TargetHead.of(fwd.model), fwd.device, fwd.eos
    rows = _DraftRows.from_trace(draft, ctx, fwd.bos)
    start_len, start_rope = ctx.length, ctx.rope.clone()
    root, out, stopped = fwd.bos, [], False
    accepted, proposed, draft_forwards = [], [], 0
    while len(out) < max_new_tokens and not stopped:
        last = _catch_up(draft, head, rows)  # 1
        length, root_pos = ctx.length, int(ctx.rope[0])
        if spec.mode == "chain":  # 2
            drafts, q = _draft_chain(draft, head, rows, last, root_pos, spec.gamma, eos, sampling, generator)
            ids = torch.cat([torch.tensor([root], device=device), drafts])
            parents, depth, within = list(range(-1, len(drafts))), torch.arange(len(ids)), None
        else:
            tree = _draft_tree(draft, head, rows, last, root, root_pos, eos, spec)
            ids, parents, within, q = tree.tokens, tree.parents, tree.ancestors, None
            depth = torch.from_numpy(tree.depth)
        draft_forwards += len(ids) - 1 if spec.mode == "chain" else spec.depth
        positions = root_pos + depth.to(device)
        target = fwd.text_forward(ctx, ids[None], positions[None], within=within, layer_states=True)  # 3
        path, nxt = accept_path(fwd.model.logits(target.hidden[0]), ids, parents, q, sampling, generator)  # 4
        commit_path(ctx, length, path)  # 5
        accepted.append(len(path) - 1)
        proposed.append(int(depth.max()))
        emitted = ids[path[1:]].tolist() + [nxt]
        index = torch.tensor(path, device=device)
        rows.pending = (torch.stack(target.layer_states, dim=2)[:, index], torch.tensor([emitted], device=device),
                        positions[index][None])
        stopped = emit(out, emitted, eos, max_new_tokens)
        root = nxt
    rewind(ctx, start_len, start_rope, len(out), stopped)
    return SpecResult(out, stopped, fwd.forwards - before, draft_forwards, time.perf_counter() - start, accepted,
                      proposed)
