"""Blocks prefilled together in one forward, and deferred into a context's next forward, compute what one block at
a time computes: the same cache, positions, validity and draft trace, and the same velocities."""

import pytest
import torch
from random_model import random_micro_model

from hyperbagel.model.context import Block, Context, Forwarder, block_pattern

ROWS = [[0, 5, 9, 1], [0, 5, 6, 7, 8, 12, 1]]  # an instruction per row, of different lengths: padding


def _edit_blocks(fwd: Forwarder, g: torch.Generator) -> list[Block]:
    """An editing context's blocks: a clean VAE block, a ViT block and the instruction."""
    cfg = fwd.model.cfg
    latents = torch.randn(2, 16, cfg.patch_latent_dim, generator=g)
    vae = fwd.latent_block(latents, torch.zeros(2), torch.arange(16))
    patches = torch.randn(2, 4, 3 * cfg.vit.patch_size ** 2, generator=g)
    vit = fwd.vit_block(patches, torch.arange(4))
    return [vae, vit, fwd.text_block(ROWS)]


def _one_at_a_time(fwd: Forwarder, blocks: list[Block], trace: bool = False) -> Context:
    ctx = Context.empty(fwd.model, 2, trace=trace)
    for b in blocks:
        fwd.prefill(ctx, [b])
    return ctx


def _same_context(a: Context, b: Context) -> None:
    """The same positions, validity and cached keys and values at every real position (padding is never read)."""
    assert a.length == b.length and a.padded == b.padded
    assert torch.equal(a.valid, b.valid) and torch.equal(a.rope, b.rope)
    for ka, kb, va, vb in zip(a.cache.keys, b.cache.keys, a.cache.values, b.cache.values):
        for row, valid in enumerate(a.valid):
            torch.testing.assert_close(ka[row][:, valid], kb[row][:, valid], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(va[row][:, valid], vb[row][:, valid], atol=1e-5, rtol=1e-5)


def test_block_pattern_is_block_causal():
    fwd = Forwarder(random_micro_model())
    x = torch.zeros(1, 2, 8)
    one = torch.ones(1, dtype=torch.long)
    full = Block(x, "full", None, torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.long), one)
    text = Block(torch.zeros(1, 3, 8), "causal", None, torch.ones(1, 3, dtype=torch.bool),
                 torch.zeros(1, 3, dtype=torch.long), 3 * one)
    assert block_pattern([full, text, full], fwd.device).int().tolist() == [
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ]


@torch.no_grad()
def test_blocks_prefilled_together_equal_one_at_a_time(gen):
    fwd = Forwarder(random_micro_model())
    blocks = _edit_blocks(fwd, gen)
    ref = _one_at_a_time(fwd, blocks, trace=True)
    before = fwd.forwards
    ctx = Context.empty(fwd.model, 2, trace=True)
    out = fwd.prefill(ctx, blocks, layer_states=True)
    assert fwd.forwards - before == 1
    _same_context(ctx, ref)
    assert ctx.rope.tolist() == [2 + 4, 2 + 7]
    assert [t.length for t in ctx.trace] == [t.length for t in ref.trace] == [18, 6, 7]
    for t, r in zip(ctx.trace, ref.trace):
        assert torch.equal(t.ids, r.ids) and torch.equal(t.positions, r.positions) and torch.equal(t.valid, r.valid)
        torch.testing.assert_close(t.states[r.valid], r.states[r.valid], atol=1e-5, rtol=1e-5)
    assert out.hidden.shape[1] == sum(b.length for b in blocks) and len(out.layer_states) == len(fwd.model.lm.layers)


@torch.no_grad()
def test_deferred_blocks_run_inside_the_first_denoising_forward(gen):
    fwd = Forwarder(random_micro_model())
    blocks = _edit_blocks(fwd, gen)
    x = torch.randn(2, 16, fwd.model.cfg.patch_latent_dim, generator=gen)
    ids, t = torch.arange(16), torch.tensor([0.7, 0.3])
    ref = _one_at_a_time(fwd, blocks)
    v_ref, _ = fwd.velocity(ref, x, t, ids)
    ctx = Context.empty(fwd.model, 2)
    assert fwd.prefill(ctx, blocks, defer=True) is None and ctx.length == 0
    before = fwd.forwards
    v, _ = fwd.velocity(ctx, x, t, ids)
    assert fwd.forwards - before == 1 and not ctx.pending
    torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
    _same_context(ctx, ref)  # the context's blocks entered the cache, the denoised block did not
    v2, _ = fwd.velocity(ctx, x, 1 - t, ids)
    torch.testing.assert_close(v2, fwd.velocity(ref, x, 1 - t, ids)[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_copy_runs_its_own_pending_blocks_and_text_steps_run_them_first(gen):
    fwd = Forwarder(random_micro_model())
    vae, vit, text = _edit_blocks(fwd, gen)
    ref = _one_at_a_time(fwd, [vae, vit, text])
    ctx = Context.empty(fwd.model, 2)
    fwd.prefill(ctx, [vae, vit])
    fwd.prefill(ctx, [text], defer=True)
    other = ctx.copy()
    x = torch.randn(2, 16, fwd.model.cfg.patch_latent_dim, generator=gen)
    fwd.velocity(ctx, x, torch.tensor([0.5, 0.5]), torch.arange(16))
    _same_context(ctx, ref)
    step, at = torch.tensor([[3], [3]]), torch.tensor([[6], [9]])  # the text ends at 2 + 4 and 2 + 7
    out = fwd.text_forward(other, step, at)  # runs the copy's pending text block first
    assert not other.pending and torch.equal(other.rope, ref.rope)
    want = fwd.text_forward(ref, step, at)
    torch.testing.assert_close(out.hidden, want.hidden, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_generation_block_is_run_only_by_the_model_that_deferred_it(gen):
    """A student shares the teacher's understanding weights, not its generation expert: the teacher's deferred VAE
    block would be computed by other weights. Text and ViT blocks (understanding only) may be."""
    teacher, student = Forwarder(random_micro_model()), Forwarder(random_micro_model())
    vae, vit, text = _edit_blocks(teacher, gen)
    x = torch.randn(2, 16, teacher.model.cfg.patch_latent_dim, generator=gen)
    ctx = Context.empty(teacher.model, 2)
    teacher.prefill(ctx, [vae, vit, text], defer=True)
    with pytest.raises(ValueError, match="generation-expert"):
        student.velocity(ctx, x, torch.tensor([0.5, 0.5]), torch.arange(16))
    ctx = Context.empty(teacher.model, 2)
    teacher.prefill(ctx, [vae])
    teacher.prefill(ctx, [vit, text], defer=True)
    student.velocity(ctx, x, torch.tensor([0.5, 0.5]), torch.arange(16))
    assert not ctx.pending and ctx.length == 18 + 6 + 7


def test_deferred_blocks_refuse_training_and_row_selection(gen):
    fwd = Forwarder(random_micro_model())
    blocks = _edit_blocks(fwd, gen)
    ctx = Context.empty(fwd.model, 2)
    fwd.prefill(ctx, blocks, defer=True)
    with pytest.raises(ValueError, match="deferred"):
        ctx.select(torch.tensor([0]))
    with pytest.raises(ValueError, match="deferred"):
        ctx.crop(0)
    x = torch.randn(2, 16, fwd.model.cfg.patch_latent_dim, generator=gen)
    with pytest.raises(ValueError, match="deferred"):
        fwd.velocity(ctx, x, torch.tensor([0.5, 0.5]), torch.arange(16))
