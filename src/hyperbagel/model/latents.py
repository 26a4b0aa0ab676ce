"""Latent patchify (bagel.md §1.5): p×p latent pixels → one token, values ordered (p_row, p_col, channel).

Tokens are row-major over the (H/p)×(W/p) grid and the channel index runs fastest inside a token, so with
BAGEL's p = 2 and 16 channels a token is a 64-vector. :func:`unpatchify_latent` is the exact inverse.
"""

from __future__ import annotations

import torch
from torch import Tensor


def patchify_latent(z: Tensor, p: int = 2) -> Tensor:
    """Latent [C, H, W] → tokens [(H/p)·(W/p), p·p·C]."""
    c, h, w = z.shape
    if h % p or w % p:
        raise ValueError(f"latent sides must be multiples of the patch size {p}, got {h}×{w}")
    x = z.reshape(c, h // p, p, w // p, p)
    x = torch.einsum("chpwq->hwpqc", x)
    return x.reshape((h // p) * (w // p), p * p * c)


def unpatchify_latent(tokens: Tensor, h: int, w: int, p: int = 2, c: int = 16) -> Tensor:
    """Tokens [h·w, p·p·c] on an h×w token grid → latent [c, h·p, w·p]."""
    if tokens.shape != (h * w, p * p * c):
        raise ValueError(f"expected tokens of shape {(h * w, p * p * c)}, got {tuple(tokens.shape)}")
    x = tokens.reshape(h, w, p, p, c)
    x = torch.einsum("hwpqc->chpwq", x)
    return x.reshape(c, h * p, w * p)


def patchify_latents(z: Tensor, p: int = 2) -> Tensor:
    """Batched :func:`patchify_latent`: [B, C, H, W] → [B, (H/p)·(W/p), p·p·C]."""
    b, c, h, w = z.shape
    if h % p or w % p:
        raise ValueError(f"latent sides must be multiples of the patch size {p}, got {h}×{w}")
    x = z.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("bchpwq->bhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify_latents(tokens: Tensor, h: int, w: int, p: int = 2, c: int = 16) -> Tensor:
    """Batched :func:`unpatchify_latent`: [B, h·w, p·p·c] → [B, c, h·p, w·p]."""
    b = tokens.shape[0]
    if tokens.shape != (b, h * w, p * p * c):
        raise ValueError(f"expected tokens of shape {(b, h * w, p * p * c)}, got {tuple(tokens.shape)}")
    x = tokens.reshape(b, h, w, p, p, c)
    x = torch.einsum("bhwpqc->bchpwq", x)
    return x.reshape(b, c, h * p, w * p)
