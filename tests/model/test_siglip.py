"""SigLIP NaViT vision tower: helpers, packing, and parity with the reference BAGEL fixtures."""

from __future__ import annotations

import pytest
import torch
from fixtures import load_fixture, load_weights, manifest, rel_err

from hyperbagel.model.config import ViTConfig
from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.model.siglip import SiglipVisionModel, block_diagonal_mask, patchify_image, vit_position_ids


def tiny_config() -> ViTConfig:
    c = manifest()["config"]["vit"]
    side = manifest()["config"]["bagel"]["vit_max_num_patch_per_side"]
    return ViTConfig(
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_layers=manifest()["config"]["vit_overrides"]["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        patch_size=c["patch_size"],
        num_positions_side=side,
        layer_norm_eps=c["layer_norm_eps"],
    )


def tiny_vit() -> SiglipVisionModel:
    model = SiglipVisionModel(tiny_config())
    model.load_state_dict(load_weights("bagel_tiny_ema.safetensors", prefix="vit_model."), strict=True)
    return model.eval()


def test_patchify_image_order():
    # One 2×2 patch of a 3-channel image: values ordered (row, col, channel), channel fastest.
    x = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4)
    tokens = patchify_image(x, patch_size=2)
    assert tokens.shape == (2, 12)
    assert tokens[0].tolist() == [x[c, r, q].item() for r in range(2) for q in range(2) for c in range(3)]
    assert tokens[1].tolist() == [x[c, r, 2 + q].item() for r in range(2) for q in range(2) for c in range(3)]


def test_vit_position_ids():
    assert vit_position_ids(2, 3, 16).tolist() == [0, 1, 2, 16, 17, 18]
    with pytest.raises(ValueError):
        vit_position_ids(17, 1, 16)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="num_heads"):
        ViTConfig(hidden_size=30, intermediate_size=8, num_layers=1, num_heads=4)
    with pytest.raises(ValueError, match="num_layers"):
        ViTConfig(hidden_size=32, intermediate_size=8, num_layers=0, num_heads=4)


def test_packed_images_attend_only_to_themselves(gen):
    config = ViTConfig(hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2, patch_size=2,
                       num_positions_side=4)
    model = SiglipVisionModel(config).eval()
    a = torch.randn(6, config.patch_dim, generator=gen)
    b = torch.randn(4, config.patch_dim, generator=gen)
    pa, pb = vit_position_ids(2, 3, 4), vit_position_ids(2, 2, 4)
    with torch.no_grad():
        packed = model(torch.cat([a, b]), torch.cat([pa, pb]), [6, 4])
        alone_a = model(a, pa, [6])
        alone_b = model(b, pb, [4])
    torch.testing.assert_close(packed, torch.cat([alone_a, alone_b]), atol=1e-6, rtol=1e-5)


def test_same_size_images_run_as_a_batch_as_they_would_packed(gen):
    config = ViTConfig(hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2, patch_size=2,
                       num_positions_side=4)
    model = SiglipVisionModel(config).eval()
    tokens = torch.randn(3 * 6, config.patch_dim, generator=gen)
    positions = vit_position_ids(2, 3, 4).repeat(3)
    vision = model.vision_model
    with torch.no_grad():
        batched = model(tokens, positions, [6, 6, 6])
        packed = vision.post_layernorm(vision.encoder(vision.embeddings(tokens, positions),
                                                      block_diagonal_mask([6, 6, 6])))
    torch.testing.assert_close(batched, packed, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["und_image", "gen_velocity_edit", "edit_loop"])
def test_pixel_tokens_from_image_exact(name):
    tensors, meta = load_fixture(name)
    tokens = patchify_image(to_model_pixels(tensors["image_uint8"].numpy()))
    assert torch.equal(tokens, tensors["vit_pixel_tokens"])


@pytest.mark.parametrize("name", ["und_image", "gen_velocity_edit", "edit_loop"])
def test_vit_encoder_parity(name):
    tensors, meta = load_fixture(name)
    if name == "und_image":
        position_ids = meta["vit_block"]["packed_vit_position_ids"]
        seq_lens = meta["vit_block"]["vit_token_seqlens"]
        h, w = (s // 14 for s in meta["vit_block"]["image_hw"])
    else:
        position_ids = meta["vit_position_ids"]
        seq_lens = [len(position_ids)]
        h, w = (s // 14 for s in tensors["image_uint8"].shape[:2])
    position_ids = torch.tensor(position_ids)
    assert torch.equal(position_ids, vit_position_ids(h, w, 16))
    with torch.no_grad():
        out = tiny_vit()(tensors["vit_pixel_tokens"], position_ids, seq_lens)
    assert rel_err(out, tensors["vit_encoder_out"]) < 1e-5
