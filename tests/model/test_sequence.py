"""The training path (packed blocks + block masks) must compute what the inference path (contexts) computes."""

import torch

from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.presets import preset
from hyperbagel.model.sequence import Text, VaeImage, VitImage, losses, pack


def _models():
    torch.manual_seed(0)
    cfg = preset("micro")
    model = build_model(cfg).eval()
    for p in model.parameters():  # a non-trivial random model (llm2vae etc. are not zero)
        torch.nn.init.normal_(p, std=0.05) if p.requires_grad else None
    return model, AutoEncoder(cfg.vae).eval()


def test_noised_block_velocity_matches_inference_contexts():
    model, vae = _models()
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 64, 64, generator=g) * 2 - 1
    src = torch.rand(3, 64, 64, generator=g) * 2 - 1
    sample = [VaeImage(src), VitImage(src), Text([5, 6, 7]), VaeImage(img, noised=True), Text([8, 9], loss=True)]
    batch = pack([sample], model.cfg, vae, [torch.Generator().manual_seed(2)])
    with torch.no_grad():
        from hyperbagel.model.sequence import embed

        train = model.lm(embed(model, batch), batch.positions, gen=batch.gen, mask=batch.mask).hidden
        # inference: build the same context block by block, then denoise the noised block
        fwd, ctx = Forwarder(model), Context.empty(model)
        N = batch.vae_x.shape[1]
        fwd.prefill_vae(ctx, batch.vae_x[:1], batch.vae_ids)
        fwd.prefill_vit(ctx, batch.vit_pixels, batch.vit_ids)
        fwd.prefill_text(ctx, [[0, 5, 6, 7, 1]])
        v_inf, _ = fwd.velocity(ctx, batch.vae_x[1:2], batch.vae_t[1:2], batch.vae_ids)
        start = batch.vae_index[N].item()
        v_train = model.velocity(train[0, start:start + N])
        assert torch.allclose(v_inf[0], v_train, atol=1e-5), (v_inf[0] - v_train).abs().max()
        # the text after the noised block sees the context but not the noised block
        ctx2 = ctx.copy()
        ctx2.rope = ctx2.rope  # noised block does not advance the position
        out = fwd.prefill_text(ctx2, [[0, 8, 9, 1]])
        S = batch.text_ids.shape[1]
        assert torch.allclose(out.hidden[0], train[0, S - 4:], atol=1e-5)


def test_losses_are_finite_and_backpropagate():
    model, vae = _models()
    model.train()
    g = torch.Generator().manual_seed(3)
    img = torch.rand(3, 64, 64, generator=g) * 2 - 1
    samples = [[Text([5, 6]), VaeImage(img, noised=True)], [VitImage(img), Text([7]), Text([8, 9], loss=True)]]
    out = losses(model, pack(samples, model.cfg, vae, [g, g]))
    assert out.ce_count == 3 and out.mse_count == 16 * 16
    (out.ce + out.mse).backward()
    assert model.llm2vae.weight.grad.abs().sum() > 0
    assert model.language_model.lm_head.weight.grad.abs().sum() > 0
    assert model.vit_model.vision_model.post_layernorm.weight.grad.abs().sum() > 0


def test_batch_to_moves_every_tensor_and_keeps_absent_fields():
    from dataclasses import fields

    from hyperbagel.model.sequence import Batch

    batch = Batch(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool),
                  torch.ones(1, 1, 2, 2, dtype=torch.bool), torch.zeros(1, 2), *([None] * 9))
    moved = batch.to("meta")
    for f in fields(Batch):
        before, after = getattr(batch, f.name), getattr(moved, f.name)
        assert (before is None) == (after is None)
        if after is not None:
            assert after.device.type == "meta" and after.shape == before.shape
