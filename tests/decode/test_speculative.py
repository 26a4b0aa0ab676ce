"""Speculative decoding is lossless: greedy output equals plain greedy decoding token for token (chain and tree, on
vqa-shapes items, fp32), and sampled output has exactly the target's distribution (χ² tests with stub models on a
small vocabulary, each with a known-wrong acceptance rule that the same test rejects)."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from hyperbagel.decode.draft import build_draft
from hyperbagel.decode.draft_config import VARIANTS
from hyperbagel.decode.generate import generate_text
from hyperbagel.decode.sampling import SamplingConfig, sample
from hyperbagel.decode.speculative import SpecConfig, accept_chain, accept_tree, speculative_generate
from hyperbagel.pipeline import Pipeline
from hyperbagel.world import suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json

SPECS = [SpecConfig("chain", gamma=1), SpecConfig("chain", gamma=5), SpecConfig("tree", top_k=3, depth=4,
                                                                                total_tokens=12),
         SpecConfig("tree", top_k=2, depth=1, total_tokens=2)]


@pytest.fixture(scope="module")
def pipe(micro_teacher):
    return Pipeline.from_pretrained(micro_teacher)


def _items(n):
    items = suites.load_suite("vqa-shapes")
    describe = [it for it in items if it["template"] == "describe"]
    short = [it for it in items if it["template"] != "describe"]
    return short[: n // 2] + describe[: n - n // 2]


@pytest.mark.parametrize("variant", ["hyper-bagel", "eagle3"])
def test_greedy_speculative_output_equals_plain_decoding(pipe, variant):
    draft = build_draft(VARIANTS[variant], pipe.model).eval()
    accepted, stopped = 0, []
    for i, it in enumerate(_items(12)):
        ctx = pipe.context_for_question([render(scene_from_json(it["scene"]))], [it["question"]], trace=True)
        max_new = 7 if i % 3 == 0 else 24  # also stop in the middle of an accepted run
        plain_ctx = ctx.copy()
        plain = generate_text(pipe.fwd, plain_ctx, max_new)
        stopped.append(plain.stopped[0])
        for spec in SPECS:
            spec_ctx = ctx.copy()
            res = speculative_generate(pipe.fwd, draft, spec_ctx, max_new, spec=spec)
            assert res.tokens == plain.tokens[0], (it["id"], spec)
            assert res.stopped == plain.stopped[0]
            assert res.forwards == len(res.accepted) <= plain.forwards
            assert res.committed <= sum(a + 1 for a in res.accepted)
            # the context ends as plain decoding leaves it
            assert spec_ctx.length == plain_ctx.length and torch.equal(spec_ctx.rope, plain_ctx.rope)
            for k_spec, k_plain in zip(spec_ctx.cache.keys, plain_ctx.cache.keys):
                torch.testing.assert_close(k_spec, k_plain, rtol=1e-4, atol=1e-5)
            accepted += sum(res.accepted)
    assert accepted > 0  # the acceptance path ran, not only rejections
    assert any(stopped) and not all(stopped)  # answers that end on <|im_end|> and answers cut by the budget


def test_pipeline_understand_with_a_draft_matches_plain(pipe, tmp_path):
    from hyperbagel.decode.draft import TargetHead, save_draft

    save_draft(tmp_path, build_draft(VARIANTS["hyper-bagel"], pipe.model), TargetHead.of(pipe.model))
    items = _items(4)
    images = [render(scene_from_json(it["scene"])) for it in items]
    questions = [it["question"] for it in items]
    plain = pipe.understand(images, questions, max_new_tokens=16)
    pipe.load_draft(tmp_path, SpecConfig("tree", top_k=3, depth=3, total_tokens=8))
    try:
        spec = pipe.understand(images, questions, max_new_tokens=16)
    finally:
        pipe.load_draft(None)
    assert spec.texts == plain.texts and spec.forwards < plain.forwards + len(items) * 16


# ----- χ²: sampling is exactly the target's distribution -----
V = 6


def _markov(seed, peaked=1.5):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(V, V, generator=g, dtype=torch.float64) * peaked, -1)


TARGET, DRAFT = _markov(1), _markov(2)  # p(x_t | x_{t−1}) and a different draft q
ROOT = 0


def _expected_pairs(n):
    joint = TARGET[ROOT][:, None] * TARGET  # p(x1) p(x2 | x1)
    return joint.flatten().numpy() * n


def _chi2_pvalue(first, second, n):
    observed = np.bincount((first * V + second).numpy(), minlength=V * V).astype(float)
    expected = _expected_pairs(n)
    order = np.argsort(expected)  # pool the smallest bins until each has ≥ 5 expected
    obs, exp, acc_o, acc_e = [], [], 0.0, 0.0
    for i in order:
        acc_o, acc_e = acc_o + observed[i], acc_e + expected[i]
        if acc_e >= 5:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e:
        obs[-1] += acc_o
        exp[-1] += acc_e
    return chisquare(obs, exp).pvalue


def _two_tokens(step, n, seed):
    """Run speculative steps from ROOT for n independent sequences until each has emitted two tokens."""
    g = torch.Generator().manual_seed(seed)
    emitted = [[] for _ in range(n)]
    root = torch.full((n,), ROOT)
    todo = torch.arange(n)
    while len(todo):
        tokens = step(root[todo], g)  # list of emitted-token tensors per row
        for row, toks in zip(todo.tolist(), tokens):
            emitted[row] += toks
        root[todo] = torch.tensor([t[-1] for t in tokens])
        todo = torch.tensor([r for r in todo.tolist() if len(emitted[r]) < 2], dtype=torch.long)
    first = torch.tensor([e[0] for e in emitted])
    second = torch.tensor([e[1] for e in emitted])
    return first, second


def _chain_step(rule, gamma=2):
    def step(root, g):
        n = len(root)
        drafts, qs, prev = [], [], root
        for _ in range(gamma):
            q = DRAFT[prev]
            d = sample(q, g)
            drafts.append(d)
            qs.append(q)
            prev = d
        drafts, q = torch.stack(drafts, 1), torch.stack(qs, 1)
        p = TARGET[torch.cat([root[:, None], drafts], 1)]  # target after the root and after each draft
        k, nxt = rule(p, q, drafts, g)
        return [drafts[i, : k[i]].tolist() + [int(nxt[i])] for i in range(n)]

    return step


def _accept_chain_resampling_from_p(p, q, drafts, g):
    """Known bug: after a rejection, sample from the target instead of the residual max(p − q, 0)."""
    n, _ = accept_chain(p, q, drafts, g)
    return n, sample(p[torch.arange(len(n)), n], g)


def _tree(root):
    """The draft's tree for a root: its top-3 children by q, each with its top-2 children (depth 2, 10 nodes)."""
    tokens, parents = [root], [-1]
    for c in DRAFT[root].topk(3).indices.tolist():
        tokens.append(c)
        parents.append(0)
        me = len(tokens) - 1
        for cc in DRAFT[c].topk(2).indices.tolist():
            tokens.append(cc)
            parents.append(me)
    return torch.tensor(tokens), parents


def _tree_step(rule):
    def step(root, g):
        out = []
        trees = {r: _tree(r) for r in range(V)}
        parents = trees[0][1]
        tokens = torch.stack([trees[int(r)][0] for r in root])  # [n, N], same shape for every root
        p = TARGET[tokens]  # the target's distribution at every node
        accepted, nxt = rule(p, tokens, parents, g)
        for i in range(len(root)):
            path = accepted[i].nonzero().flatten().tolist()
            out.append(tokens[i, path[1:]].tolist() + [int(nxt[i])])
        return out

    return step


def _accept_tree_without_renormalising(p, tokens, parents, g):
    """Known bug: after rejecting a sibling, keep trying the others with the original (unrenormalised) p."""
    B, N, _ = p.shape
    kids = [[j for j in range(N) if parents[j] == i] for i in range(N)]
    accepted = torch.zeros(B, N, dtype=torch.bool)
    nxt = torch.zeros(B, dtype=torch.long)
    for b in range(B):
        node, r = 0, p[b, 0].clone()
        accepted[b, 0] = True
        while True:
            for c in kids[node]:
                if torch.rand((), generator=g, dtype=p.dtype) < p[b, node, tokens[b, c]]:
                    node = c
                    break
                r[tokens[b, c]] = 0
            else:
                nxt[b] = torch.multinomial(r / r.sum(), 1, generator=g)
                break
            accepted[b, node] = True
            r = p[b, node].clone()
    return accepted, nxt


def _fixed_chain_step(rule):
    """Prompt lookup's drafts: deterministic (here two fixed tokens after each root), verified as a chain of
    point-mass drafts by ``rule``."""
    def step(root, g):
        tokens = torch.stack([root, (root + 1) % V, (root + 3) % V], 1)
        accepted, nxt = rule(TARGET[tokens], tokens, [-1, 0, 1], g)
        return [tokens[i, accepted[i].nonzero().flatten()[1:]].tolist() + [int(nxt[i])] for i in range(len(root))]

    return step


def _accept_fixed_chain_resampling_from_p(p, tokens, parents, g):
    """Known bug: after rejecting a deterministic draft, draw the next token from p, the rejected token included."""
    B, N, _ = p.shape
    accepted = torch.zeros(B, N, dtype=torch.bool)
    accepted[:, 0] = True
    nxt = torch.zeros(B, dtype=torch.long)
    for b in range(B):
        node = 0
        while node + 1 < N and torch.rand((), generator=g, dtype=p.dtype) < p[b, node, tokens[b, node + 1]]:
            node += 1
            accepted[b, node] = True
        nxt[b] = torch.multinomial(p[b, node], 1, generator=g)
    return accepted, nxt


N_CHAIN, N_TREE = 60_000, 40_000


def test_chain_sampling_is_the_target_distribution():
    first, second = _two_tokens(_chain_step(accept_chain), N_CHAIN, seed=0)
    assert _chi2_pvalue(first, second, N_CHAIN) > 1e-3
    first, second = _two_tokens(_chain_step(_accept_chain_resampling_from_p), N_CHAIN, seed=0)
    assert _chi2_pvalue(first, second, N_CHAIN) < 1e-6  # the same test catches the known-wrong rule


def test_tree_sampling_is_the_target_distribution():
    first, second = _two_tokens(_tree_step(accept_tree), N_TREE, seed=0)
    assert _chi2_pvalue(first, second, N_TREE) > 1e-3
    first, second = _two_tokens(_tree_step(_accept_tree_without_renormalising), 8_000, seed=0)
    assert _chi2_pvalue(first, second, 8_000) < 1e-6


def test_deterministic_drafts_sample_the_target_distribution():
    first, second = _two_tokens(_fixed_chain_step(accept_tree), N_TREE, seed=0)
    assert _chi2_pvalue(first, second, N_TREE) > 1e-3
    first, second = _two_tokens(_fixed_chain_step(_accept_fixed_chain_resampling_from_p), 8_000, seed=0)
    assert _chi2_pvalue(first, second, 8_000) < 1e-6


def test_sampled_decoding_runs_and_is_reproducible(pipe):
    draft = build_draft(VARIANTS["hyper-bagel"], pipe.model).eval()
    it = _items(2)[1]
    ctx = pipe.context_for_question([render(scene_from_json(it["scene"]))], [it["question"]], trace=True)
    sampling = SamplingConfig(temperature=0.8, top_p=0.9)
    for spec in SPECS:
        runs = [speculative_generate(pipe.fwd, draft, ctx.copy(), 12, sampling, spec,
                                     torch.Generator().manual_seed(3)).tokens for _ in range(2)]
        assert runs[0] == runs[1] and 0 < len(runs[0]) <= 12


def test_fused_target_text_steps_decode_as_the_modules(micro_teacher, pipe):
    """``fused_text``: plain and speculative decoding through fused copies of the target's layers give the
    modules' answers token for token."""
    fused = Pipeline.from_pretrained(micro_teacher, fused_text=True)
    draft = build_draft(VARIANTS["hyper-bagel"], fused.model).eval()
    for it in _items(6):
        image = [render(scene_from_json(it["scene"]))]
        plain = generate_text(pipe.fwd, pipe.context_for_question(image, [it["question"]]), 24)
        ctx = fused.context_for_question(image, [it["question"]], trace=True)
        assert generate_text(fused.fwd, ctx.copy(), 24).tokens == plain.tokens, it["id"]
        res = speculative_generate(fused.fwd, draft, ctx, 24, spec=SpecConfig(gamma=5))
        assert res.tokens == plain.tokens[0], it["id"]
