"""The auxiliary targets of the teacher's noised image tokens are exact and in the right places."""

import numpy as np
import torch

from hyperbagel.model.config import ViTConfig
from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.model.siglip import SiglipVisionTransformer
from hyperbagel.recipes.alignment import palette_cells, vit_token_targets
from hyperbagel.recipes.vit import patch_targets
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene


def test_palette_cells_read_the_colours_off_the_pixels_as_the_vit_labels_do():
    rng = np.random.default_rng(0)
    for cell in (8, 16):
        scenes = [sample_scene(rng, 64) for _ in range(3)]
        pixels = torch.stack([to_model_pixels(render(s)) for s in scenes])
        got = palette_cells(pixels, cell)
        want = np.stack([patch_targets(s, cell)["present"] for s in scenes])
        assert got.shape == want.shape and got.dtype == torch.bool
        assert np.array_equal(got.numpy(), want)


def test_each_token_takes_the_feature_of_the_vit_patch_it_lies_in():
    torch.manual_seed(0)
    vit = SiglipVisionTransformer(ViTConfig(hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                                            patch_size=16, num_positions_side=4)).eval()
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    per_patch = vit_token_targets(vit, pixels, patch=16, side=4, cell=16)  # [2, 16, F]
    per_token = vit_token_targets(vit, pixels, patch=16, side=4, cell=8)  # [2, 64, F]
    assert per_token.shape == (2, 64, 16)
    grid = per_token.view(2, 8, 8, 16)
    for r in range(8):
        for c in range(8):
            torch.testing.assert_close(grid[:, r, c], per_patch[:, (r // 2) * 4 + c // 2])
