"""Attention masks (True = may attend), as BAGEL defines them.

Training, over one packed sample split into blocks: text blocks are causal; image blocks (ViT, clean VAE, noised
VAE) are bidirectional inside and causal towards the past; a noised VAE block is invisible to every other block
(later tokens see its clean copy instead).

Inference, a new block over a cache: text is causal with *bottom-right* alignment (the new tokens see the whole
cache, then causal among themselves); image blocks see the whole cache and themselves bidirectionally.
"""

from __future__ import annotations

import torch
from torch import Tensor

CAUSAL, FULL, NOISE = 0, 1, 2


def training_mask(block_ids: Tensor, block_modes: Tensor) -> Tensor:
    """``block_ids [S]`` (non-decreasing) and per-token modes ``[S]`` → ``[S, S]`` mask for one sample.

    Allowed(q, k) = (k ≤ q or same non-causal block) and not (k in a noise block other than q's).
    """
    S = block_ids.shape[0]
    idx = torch.arange(S, device=block_ids.device)
    same_block = block_ids[:, None] == block_ids[None, :]
    causal = idx[None, :] <= idx[:, None]
    bidirectional = same_block & (block_modes[:, None] != CAUSAL)
    hidden_noise = (block_modes[None, :] == NOISE) & ~same_block
    return (causal | bidirectional) & ~hidden_noise


def append_mask(cache_valid: Tensor, new_valid: Tensor, causal: bool) -> Tensor:
    """Mask ``[B, 1, S, T+S]`` for ``S`` new tokens attending to ``T`` cached ones and to each other.

    ``cache_valid [B, T]`` / ``new_valid [B, S]`` mark real (non-padding) tokens. Padding queries attend to
    themselves only, so no row is empty.
    """
    B, S = new_valid.shape
    within = new_valid[:, None, :].expand(B, S, S)
    if causal:
        within = within & torch.ones(S, S, dtype=torch.bool, device=new_valid.device).tril()
    within = within | torch.eye(S, dtype=torch.bool, device=new_valid.device)
    past = cache_valid[:, None, :].expand(B, S, cache_valid.shape[1]) & new_valid[:, :, None]
    return torch.cat([past, within], dim=2)[:, None]


def tree_mask(cache_valid: Tensor, ancestors: Tensor) -> Tensor:
    """Mask for verifying a token tree: node i sees the cache and its ancestors (``ancestors [N, N]`` bool, with
    the diagonal set). Shared by the batch: ``cache_valid [B, T]`` → ``[B, 1, N, T+N]``."""
    B, T = cache_valid.shape
    N = ancestors.shape[0]
    past = cache_valid[:, None, :].expand(B, N, T)
    return torch.cat([past, ancestors[None].expand(B, N, N)], dim=2)[:, None]
