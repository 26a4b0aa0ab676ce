"""Incremental decoding with the KV cache equals one full forward; RoPE positions and routing on a mixed sequence."""

import torch

from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import build_model, load_pretrained, save_pretrained
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.presets import preset


def _model():
    torch.manual_seed(0)
    model = build_model(preset("micro")).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model


@torch.no_grad()
def test_cached_decoding_equals_full_forward():
    model = _model()
    fwd = Forwarder(model)
    ids = [0, 5, 9, 12, 7, 1]
    full = Context.empty(model)
    ref = fwd.prefill_text(full, [ids]).hidden[0]
    ctx = Context.empty(model)
    fwd.prefill_text(ctx, [ids[:2]])
    states = []
    for k in range(2, len(ids)):
        out = fwd.text_forward(ctx, torch.tensor([[ids[k]]]), torch.tensor([[k]]))
        states.append(out.hidden[0, -1])
    assert torch.allclose(torch.stack(states), ref[2:], atol=1e-5)


@torch.no_grad()
def test_image_block_shares_one_position_and_advances_by_one():
    model = _model()
    fwd = Forwarder(model)
    ctx = Context.empty(model, batch=2)
    fwd.prefill_text(ctx, [[0, 5, 1], [0, 5, 6, 7, 1]])  # rows of different lengths
    assert ctx.rope.tolist() == [3, 5]
    latents = torch.randn(2, 16, model.cfg.patch_latent_dim)
    ids = torch.arange(16)
    fwd.prefill_vae(ctx, latents, ids)
    assert ctx.rope.tolist() == [4, 6]
    assert ctx.valid.sum(1).tolist() == [3 + 18, 5 + 18]
    before = ctx.length
    v, _ = fwd.velocity(ctx, latents, torch.tensor([0.5, 0.5]), ids)
    assert ctx.length == before and v.shape == latents.shape  # a denoised block never enters the cache
    # row 0 in a padded batch equals row 0 alone
    alone = Context.empty(model)
    fwd.prefill_text(alone, [[0, 5, 1]])
    fwd.prefill_vae(alone, latents[:1], ids)
    v0, _ = fwd.velocity(alone, latents[:1], torch.tensor([0.5]), ids)
    assert torch.allclose(v0[0], v[0], atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    vae = AutoEncoder(model.cfg.vae)
    save_pretrained(tmp_path, model, vae)
    loaded, loaded_vae = load_pretrained(tmp_path)
    assert loaded.cfg == model.cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(vae.state_dict().items(), loaded_vae.state_dict().items()):
        assert torch.equal(a, b), k
