"""BAGEL's small embedding modules: token tables, timestep embedder, fixed 2-D sin-cos position tables, the ViT
connector."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``[sin(pos·ω_k), cos(pos·ω_k)]`` with ω_k = 10000^(−k/(dim/2)), in float64."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, side: int) -> np.ndarray:
    """Row ``r·side + c`` holds ``[E(c), E(r)]``: the column coordinate fills the first half (BAGEL's layout)."""
    cols, rows = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def lookup_table(rows: int, dim: int) -> nn.Embedding:
    """``nn.Embedding(rows, dim)``, its weight drawn from N(0, 1) as torch draws it, except on the meta device: there
    torch's ``normal_`` imports ``torch._dynamo`` (about 1.8 s on a two-core machine), and every loaded model is built
    on the meta device first."""
    table = nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))
    if not table.weight.is_meta:
        nn.init.normal_(table.weight)
    return table


class PositionEmbedding(nn.Module):
    """A frozen 2-D sin-cos table with ``side²`` rows, indexed by ``row·side + col``.

    The table is filled at construction, except on the meta device (nothing to fill; a checkpoint load supplies
    it). BAGEL's checkpoints store it rounded to bf16, so loading it, not recomputing it, is what matches them.
    """

    def __init__(self, side: int, dim: int):
        super().__init__()
        self.side = side
        self.pos_embed = nn.Parameter(torch.empty(side * side, dim), requires_grad=False)
        if self.pos_embed.device.type != "meta":
            with torch.no_grad():
                self.pos_embed.copy_(torch.from_numpy(sincos_2d(dim, side)))

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.pos_embed[position_ids]


class TimestepEmbedder(nn.Module):
    """DiT-style: 256 sinusoidal features of t ∈ [0, 1] (cos first, no ×1000), then Linear → SiLU → Linear."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    @staticmethod
    def features(t: Tensor, dim: int) -> Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        feats = self.features(t, self.freq_dim)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class MLPConnector(nn.Module):
    """ViT features → LLM width: Linear, GELU (tanh), Linear."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
