"""Pixel conventions shared by the VAE and the ViT (bagel.md §1.4): uint8 ↔ float in [-1, 1].

In: ``(x/255 − 0.5)/0.5``, the same torch ops as torchvision's ToTensor + Normalize(0.5, 0.5), bit for bit.
Out: ``((x·0.5 + 0.5).clamp(0, 1)·255).to(uint8)`` — truncation, not rounding, as the reference's
``decode_image``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_model_pixels(image: np.ndarray | Image.Image) -> Tensor:
    """uint8 [H, W, 3] array or RGB PIL image → float32 [3, H, W] in [-1, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).to(torch.float32).div(255)
    return x.sub(0.5).div(0.5)


def to_uint8(x: Tensor) -> np.ndarray:
    """float [3, H, W] → uint8 [H, W, 3]; float [B, 3, H, W] → uint8 [B, H, W, 3]."""
    if x.ndim not in (3, 4):
        raise ValueError(f"expected [3, H, W] or [B, 3, H, W], got {tuple(x.shape)}")
    y = (x.detach().float() * 0.5 + 0.5).clamp(0, 1).movedim(-3, -1) * 255
    return y.to(torch.uint8).cpu().numpy()
