"""Attention masks (True = may attend), as BAGEL defines them.

Training, over one packed sample split into blocks: text blocks are causal; image blocks (ViT, clean VAE, noised
VAE) are bidirectional inside and causal towards the past; a noised VAE block is invisible to every other block
(later tokens see its clean copy instead).

Inference, a new block over a cache (``Append``): text is causal with *bottom-right* alignment (the new tokens see
the whole cache, then causal among themselves); image blocks see the whole cache and themselves bidirectionally.
``sdpa_mask`` turns that structure into the cheapest attention call; only irregular layouts get a dense mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.attention.bias import causal_lower_right

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


@dataclass(frozen=True)
class Append:
    """How ``S`` new tokens attend to ``T`` cached ones and to each other, kept as structure rather than a dense mask.

    Among themselves the new tokens are ``"full"`` (an image block), ``"causal"`` (text, bottom-right aligned) or
    follow an explicit ``[S, S]`` pattern (a token tree's ancestors). ``keys [B, T + S]`` marks the keys a query may
    see at all (None: every key): padding in the cache. Padding inside the new block is allowed only at the end of a
    causal row, where no real query sees it.
    """

    within: str | Tensor  # "full", "causal" or a bool [S, S] pattern
    keys: Tensor | None = None

    def __post_init__(self) -> None:
        if isinstance(self.within, str) and self.within not in ("full", "causal"):
            raise ValueError(f"Append.within must be 'full', 'causal' or a [S, S] mask, got {self.within!r}")

    def dense(self, S: int, K: int, device: torch.device | None = None) -> Tensor:
        """The same rule as a bool mask ``[B or 1, 1, S, K]`` (True = may attend), ``K = T + S``."""
        if isinstance(self.within, Tensor):
            within = self.within.to(device)
        else:
            within = torch.ones(S, S, dtype=torch.bool, device=device)
            if self.within == "causal":
                within = within.tril()
        mask = torch.cat([torch.ones(S, K - S, dtype=torch.bool, device=device), within], dim=1)[None, None]
        return mask if self.keys is None else mask & self.keys[:, None, None, :].to(device)


def sdpa_mask(attention: Tensor | Append | None, S: int, K: int, device: torch.device) -> dict:
    """The cheapest ``scaled_dot_product_attention`` mask arguments for ``S`` queries over ``K`` keys.

    A full block (or one causal token) gets no mask over a clean cache and a key mask broadcast over the queries
    ``[B, 1, 1, K]`` over a padded one; a causal block gets ``is_causal`` without a cache and PyTorch's lower-right
    causal bias on CUDA (fused kernels, nothing made). A dense mask is made only for an explicit pattern, a causal
    block over a padded cache, and a causal block over a cache on the CPU (whose kernel would build the same one).
    """
    if attention is None or isinstance(attention, Tensor):
        return {"attn_mask": attention}
    if isinstance(attention.within, str) and (attention.within == "full" or S == 1):
        return {"attn_mask": None if attention.keys is None else attention.keys[:, None, None, :]}
    if isinstance(attention.within, str) and attention.keys is None:
        if K == S:
            return {"is_causal": True}
        if device.type == "cuda":
            return {"attn_mask": causal_lower_right(S, K)}
    return {"attn_mask": attention.dense(S, K, device)}
