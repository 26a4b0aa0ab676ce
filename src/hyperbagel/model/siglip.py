"""The understanding encoder: a SigLIP vision tower in BAGEL's NaViT form (bagel.md §1.3).

Differences from a stock SigLIP, all as in BAGEL's release: the patch embedding is a Linear over
flattened 14×14×3 patches in (row-in-patch, col-in-patch, channel) order; positions come from a learned
table of ``side²`` rows indexed ``row·side + col`` (no interpolation, no RoPE); several images are packed
into one sequence and each attends only to itself; there is no pooling head, and ``post_layernorm`` follows
the last *built* layer (BAGEL's loader drops the config's last layer, so ``ViTConfig.num_layers`` counts the
layers that exist).

Parameter names follow the checkpoint (``vision_model.embeddings.patch_embedding.weight`` …), so BAGEL's
``vit_model.*`` tensors load with the prefix stripped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperbagel.model.config import ViTConfig
from hyperbagel.model.embeddings import lookup_table


def patchify_image(pixels: Tensor, patch_size: int = 14) -> Tensor:
    """Pixels [C, H, W] → patches [(H/p)·(W/p), p·p·C]: row-major, each flattened (row, col, channel)."""
    c, h, w = pixels.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image sides must be multiples of the patch size {p}, got {h}×{w}")
    x = pixels.reshape(c, h // p, p, w // p, p)
    x = torch.einsum("chpwq->hwpqc", x)
    return x.reshape((h // p) * (w // p), p * p * c)


def vit_position_ids(h: int, w: int, side: int) -> Tensor:
    """Position ids of an h×w patch grid in a side×side table: ``row·side + col``, row-major. [h·w] int64."""
    if h > side or w > side:
        raise ValueError(f"a {h}×{w} patch grid does not fit the {side}×{side} position table")
    rows = torch.arange(h).unsqueeze(1)
    cols = torch.arange(w).unsqueeze(0)
    return (rows * side + cols).reshape(-1)


def block_diagonal_mask(seq_lens: list[int], device: torch.device | None = None) -> Tensor:
    """Boolean [N, N] mask, True where query and key belong to the same packed sequence."""
    ids = torch.repeat_interleave(torch.arange(len(seq_lens), device=device),
                                  torch.tensor(seq_lens, device=device))
    return ids.unsqueeze(0) == ids.unsqueeze(1)


class SiglipEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.patch_embedding = nn.Linear(config.patch_dim, config.hidden_size)
        self.position_embedding = lookup_table(config.num_positions, config.hidden_size)

    def forward(self, pixel_tokens: Tensor, position_ids: Tensor) -> Tensor:
        return self.patch_embedding(pixel_tokens) + self.position_embedding(position_ids)


class SiglipAttention(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        d = config.hidden_size
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``x [..., n, D]``; ``mask [n, n]`` or None (every token sees every other)."""
        *lead, n, _ = x.shape
        q, k, v = (proj(x).reshape(*lead, n, self.num_heads, self.head_dim).transpose(-2, -3)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(-2, -3).reshape(*lead, n, -1))


class SiglipMLP(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    """Pre-LN transformer layer."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(config) for _ in range(config.num_layers))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class SiglipVisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.embeddings = SiglipEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_tokens: Tensor, position_ids: Tensor, seq_lens: list[int]) -> Tensor:
        """Images of one size run as a batch without a mask; mixed sizes are packed under a block-diagonal one."""
        x = self.embeddings(pixel_tokens, position_ids)
        if len(set(seq_lens)) == 1:
            x = self.encoder(x.view(len(seq_lens), seq_lens[0], -1), None).flatten(0, 1)
        else:
            x = self.encoder(x, block_diagonal_mask(seq_lens, device=pixel_tokens.device))
        return self.post_layernorm(x)


class SiglipVisionModel(nn.Module):
    """Packed patches of several images → per-patch features, each image attending only to itself."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.vision_model = SiglipVisionTransformer(config)

    def forward(self, pixel_tokens: Tensor, position_ids: Tensor, seq_lens: list[int]) -> Tensor:
        """``pixel_tokens`` [N, p·p·3] (:func:`patchify_image` of each image, concatenated),
        ``position_ids`` [N] (:func:`vit_position_ids`), ``seq_lens`` the patch count of each image (summing
        to N) → features [N, hidden]."""
        if sum(seq_lens) != pixel_tokens.shape[0]:
            raise ValueError(f"seq_lens sum to {sum(seq_lens)}, but there are {pixel_tokens.shape[0]} tokens")
        return self.vision_model(pixel_tokens, position_ids, seq_lens)
