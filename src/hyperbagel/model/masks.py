"""Attention masks (True = may attend), as BAGEL defines them.

Training, over one packed sample split into blocks (``Packed``): text blocks are causal; image blocks (ViT, clean
VAE, noised VAE) are bidirectional inside and causal towards the past; a noised VAE block is invisible to every other
block (later tokens see its clean copy instead).

Inference, a new block over a cache (``Append``): text is causal with *bottom-right* alignment (the new tokens see
the whole cache, then causal among themselves); image blocks see the whole cache and themselves bidirectionally.
``resolve_attention`` turns either structure into the cheapest attention call (``attend``); only irregular layouts get a
dense mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CAUSAL, FULL, NOISE = 0, 1, 2


@dataclass(frozen=True)
class Packed:
    """Training's layout of a padded batch, kept as structure: each token's block id and mode ``[B, S]``.

    Allowed(q, k) = (k ≤ q or same non-causal block) and not (k in a noise block other than q's). Block id −1 marks
    padding, which sees only itself and is seen by no other token. On CUDA the rule becomes a flex-attention block
    mask (``flex``: None = on CUDA), which skips the tiles it hides and never makes the ``[S, S]`` mask.
    """

    block_ids: Tensor  # [B, S] long, non-decreasing along each row's real tokens; −1 for padding
    modes: Tensor  # [B, S]: CAUSAL, FULL or NOISE
    flex: bool | None = None

    def to(self, device: torch.device | str) -> Packed:
        return Packed(self.block_ids.to(device), self.modes.to(device), self.flex)

    def allowed(self, b: Tensor, q: Tensor, k: Tensor) -> Tensor:
        """The rule on (broadcasting) row, query and key indices: a flex-attention ``mask_mod``."""
        bq, bk = self.block_ids[b, q], self.block_ids[b, k]
        same = bq == bk
        rule = ((k <= q) | (same & (self.modes[b, q] != CAUSAL))) & ~((self.modes[b, k] == NOISE) & ~same)
        pad = (bq < 0) | (bk < 0)
        return (pad & (q == k)) | (~pad & rule)

    def dense(self) -> Tensor:
        """The rule as a bool mask ``[B, 1, S, S]``."""
        B, S = self.block_ids.shape
        idx = torch.arange(S, device=self.block_ids.device)
        rows = torch.arange(B, device=self.block_ids.device)[:, None, None]
        return self.allowed(rows, idx[None, :, None], idx[None, None, :])[:, None]

    def block_mask(self):
        """The flex-attention block mask; compiled on CUDA, so that the rule is evaluated per tile and the
        ``[S, S]`` mask never exists (eager ``create_block_mask`` builds it first)."""
        from torch.nn.attention.flex_attention import create_block_mask

        B, S = self.block_ids.shape
        make = _compiled(create_block_mask) if self.block_ids.device.type == "cuda" else create_block_mask
        return make(lambda b, h, q, k: self.allowed(b, q, k), B, None, S, S, device=self.block_ids.device)


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


@dataclass(frozen=True)
class Attend:
    """The mask arguments of one attention call, resolved once per forward for every layer: a mask and
    ``is_causal`` for ``scaled_dot_product_attention``, PyTorch's lower-right causal bias (``lower_right``: the
    queries are the last of the keys), or a flex-attention block mask.

    The bias is made inside ``attend``, not held here: the layers' arguments pass through FSDP2's input casting,
    which would cast a ``CausalBias`` (a float tensor subclass) to bf16 and lose its sizes."""

    mask: Tensor | None = None
    causal: bool = False
    lower_right: bool = False
    block_mask: object | None = None  # torch.nn.attention.flex_attention.BlockMask


def resolve_attention(attention: Tensor | Append | Packed | Attend | None, S: int, K: int,
                      device: torch.device) -> Attend:
    """The cheapest attention arguments for ``S`` queries over ``K`` keys.

    A full block (or one causal token) gets no mask over a clean cache and a key mask broadcast over the queries
    ``[B, 1, 1, K]`` over a padded one; a causal block gets ``is_causal`` without a cache and PyTorch's lower-right
    causal bias on CUDA (fused kernels, nothing made). A dense mask is made only for an explicit pattern, a causal
    block over a padded cache, a causal block over a cache on the CPU (whose kernel would build the same one), and
    training's packed layout on the CPU.
    """
    if isinstance(attention, Attend):
        return attention
    if attention is None or isinstance(attention, Tensor):
        return Attend(attention)
    if isinstance(attention, Packed):
        flex = attention.flex if attention.flex is not None else device.type == "cuda"
        return Attend(block_mask=attention.block_mask()) if flex else Attend(attention.dense())
    if isinstance(attention.within, str) and (attention.within == "full" or S == 1):
        return Attend(None if attention.keys is None else attention.keys[:, None, None, :])
    if isinstance(attention.within, str) and attention.keys is None:
        if K == S:
            return Attend(causal=True)
        if device.type == "cuda":
            return Attend(lower_right=True)
    return Attend(attention.dense(S, K, device))


@functools.cache
def _compiled(fn):
    """``torch.compile(fn)``, made once per function (flex attention's functions are only fused when compiled)."""
    return torch.compile(fn)


def attend(q: Tensor, k: Tensor, v: Tensor, a: Attend, enable_gqa: bool) -> Tensor:
    """Attention ``[B, H, S, d]`` of queries over keys and values (``[B, Hkv, K, d]``) under ``a``."""
    if a.block_mask is not None:
        from torch.nn.attention.flex_attention import flex_attention

        flex = _compiled(flex_attention) if q.device.type == "cuda" else flex_attention  # eager: the CPU's reference
        return flex(q, k, v, block_mask=a.block_mask, enable_gqa=enable_gqa)
    mask, dense = a.mask, a.mask is not None
    if a.lower_right:
        S, K = q.shape[-2], k.shape[-2]
        if torch.compiler.is_compiling():  # dynamo cannot build the bias inside a graph: the mask it stands for
            mask, dense = Append("causal").dense(S, K, q.device), True
        else:
            from torch.nn.attention.bias import causal_lower_right  # here: importing it imports dynamo (about 1.8 s)

            mask = causal_lower_right(S, K)
    if dense and enable_gqa and q.device.type == "cuda":
        # CUDA's kernels for grouped keys (flash) take no mask; the math kernel would make fp32 scores [B, H, S, K].
        # With the keys repeated per query head the memory-efficient kernel takes the mask.
        groups = q.shape[1] // k.shape[1]
        k, v, enable_gqa = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=a.causal, enable_gqa=enable_gqa)
