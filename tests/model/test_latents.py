"""Latent patchify / unpatchify and the pixel conventions, against hand-built values and the fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import load_fixture
from PIL import Image

from hyperbagel.model.latents import patchify_latent, patchify_latents, unpatchify_latent, unpatchify_latents
from hyperbagel.model.pixels import to_model_pixels, to_uint8


def test_token_layout():
    c, h, w = 3, 4, 6
    z = torch.arange(c * h * w, dtype=torch.float32).reshape(c, h, w)
    tokens = patchify_latent(z, p=2)
    assert tokens.shape == (6, 12)
    # Token (row 1, col 2) covers latent rows 2-3, cols 4-5; values ordered (p_row, p_col, channel).
    expected = [z[ch, 2 + pr, 4 + pc].item() for pr in range(2) for pc in range(2) for ch in range(c)]
    assert tokens[1 * 3 + 2].tolist() == expected


def test_inverse_and_batched(gen):
    z = torch.randn(2, 16, 6, 10, generator=gen)
    tokens = patchify_latents(z)
    assert tokens.shape == (2, 15, 64)
    assert torch.equal(tokens[1], patchify_latent(z[1]))
    assert torch.equal(unpatchify_latents(tokens, 3, 5, 2, 16), z)
    assert torch.equal(unpatchify_latent(tokens[0], 3, 5, 2, 16), z[0])
    with pytest.raises(ValueError):
        unpatchify_latent(tokens[0], 5, 3, 2, 8)


@pytest.mark.parametrize("name,grid", [("t2i_loop", (4, 6)), ("edit_loop", (7, 14))])
def test_final_tokens_unpatchify_to_decoded_latent(name, grid):
    # The reference unpatchifies the final tokens and hands them, still scaled, to AutoEncoder.decode.
    tensors, _ = load_fixture(name)
    z = unpatchify_latent(tensors["final_latent_tokens"], *grid, p=2, c=16)
    assert torch.equal(z, tensors["decoded_latent_nchw"][0])
    assert torch.equal(patchify_latent(z), tensors["final_latent_tokens"])


def test_pixels_round_trip_and_truncation():
    image = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    x = to_model_pixels(image)
    assert x.shape == (3, 16, 16) and x.min() == -1 and x.max() == 1
    assert np.array_equal(to_model_pixels(Image.fromarray(image)).numpy(), x.numpy())
    # uint8 → float → uint8 can lose one level to truncation (the reference's behaviour), never more.
    back = to_uint8(x).astype(np.int16)
    assert np.all((image - back >= 0) & (image - back <= 1)) and back[0, 0, 0] == 0 and back[-1, -1, 0] == 255
    assert to_uint8(x.unsqueeze(0)).shape == (1, 16, 16, 3)
    # Truncation, not rounding: 0.999 of a level stays below it.
    almost = torch.full((3, 1, 1), (2 * 10.999 / 255) - 1)
    assert to_uint8(almost)[0, 0, 0] == 10
    assert to_uint8(torch.full((3, 1, 1), 3.0))[0, 0, 0] == 255
