"""Prompt-lookup decoding: what it proposes (pure), and that it is lossless: greedy output equals plain greedy
decoding token for token on vqa-shapes items and think prompts, and the context ends as plain decoding leaves it.
(Sampling with its deterministic drafts is exact by ``accept_tree``'s χ² test in ``test_speculative.py``.)"""

import pytest
import torch

from hyperbagel.decode.generate import generate_text
from hyperbagel.decode.lookup import LookupConfig, lookup_generate, propose
from hyperbagel.decode.sampling import SamplingConfig
from hyperbagel.model.context import Context
from hyperbagel.pipeline import Pipeline
from hyperbagel.world import suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json


def test_proposes_what_followed_the_latest_longest_match():
    cfg = LookupConfig(gamma=3, max_ngram=2)
    #            0  1  2  3  4  5  6  7  8  9
    history = [7, 1, 2, 9, 1, 2, 8, 5, 3, 1, 2]
    assert propose(history, cfg) == [8, 5, 3]  # "1 2" last seen at 4–5, then 8 5 3 (not 9 from the older match)
    assert propose([4, 1, 2, 6, 6, 3, 2], cfg) == [6, 6, 3]  # "3 2" never seen: falls back to "2", seen at 2
    assert propose([1, 2, 3], cfg) == []  # no earlier occurrence of any tail
    assert propose([5, 5], LookupConfig(gamma=4)) == [5]  # only what exists after the match
    assert propose([], cfg) == [] and propose([3], cfg) == []
    assert propose([1, 2, 1], LookupConfig(gamma=2, min_ngram=2)) == []  # a 1-gram match is below min_ngram


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="gamma"):
        LookupConfig(gamma=0)
    with pytest.raises(ValueError, match="min_ngram"):
        LookupConfig(max_ngram=1, min_ngram=2)


@pytest.fixture(scope="module")
def pipe(micro_teacher):
    return Pipeline.from_pretrained(micro_teacher)


def _contexts(pipe, n):
    items = suites.load_suite("vqa-shapes")
    short = [it for it in items if it["template"] != "describe"][: n // 2]
    describe = [it for it in items if it["template"] == "describe"][: n // 2]
    for it in short + describe:
        yield (pipe.context_for_question([render(scene_from_json(it["scene"]))], [it["question"]]),
               pipe.tokenizer.encode(it["question"]))
    for prompt in ("a red circle and a blue square", "two green triangles"):  # think mode's context: the prompt
        ctx = Context.empty(pipe.model, 1)
        pipe.fwd.prefill_text(ctx, [pipe._text_block(prompt)])
        yield ctx, pipe.tokenizer.encode(prompt)


@pytest.mark.parametrize("cfg", [LookupConfig(gamma=1), LookupConfig(gamma=5), LookupConfig(gamma=8, max_ngram=1)])
def test_greedy_output_equals_plain_decoding(pipe, cfg):
    accepted = 0
    for i, (ctx, prompt) in enumerate(_contexts(pipe, 10)):
        max_new = 7 if i % 3 == 0 else 30  # also stop in the middle of an accepted run
        plain_ctx = ctx.copy()
        plain = generate_text(pipe.fwd, plain_ctx, max_new)
        look_ctx = ctx.copy()
        res = lookup_generate(pipe.fwd, look_ctx, prompt, max_new, cfg=cfg)
        assert res.tokens == plain.tokens[0] and res.stopped == plain.stopped[0], i
        assert res.forwards == len(res.accepted) <= plain.forwards and res.draft_forwards == 0
        assert all(a <= p <= cfg.gamma for a, p in zip(res.accepted, res.proposed))
        assert look_ctx.length == plain_ctx.length and torch.equal(look_ctx.rope, plain_ctx.rope)
        for k_look, k_plain in zip(look_ctx.cache.keys, plain_ctx.cache.keys):
            torch.testing.assert_close(k_look, k_plain, rtol=1e-4, atol=1e-5)
        accepted += sum(res.accepted)
    assert accepted > 0  # copies were accepted, not only proposed


def test_sampled_decoding_is_reproducible_and_rejects_batches(pipe):
    ctx, prompt = next(_contexts(pipe, 2))
    sampling = SamplingConfig(temperature=0.8, top_p=0.9)
    runs = [lookup_generate(pipe.fwd, ctx.copy(), prompt, 12, sampling, LookupConfig(),
                            torch.Generator().manual_seed(3)).tokens for _ in range(2)]
    assert runs[0] == runs[1] and 0 < len(runs[0]) <= 12
    with pytest.raises(ValueError, match="one sequence at a time"):
        lookup_generate(pipe.fwd, Context.empty(pipe.model, 2), prompt, 4)
