"""Auxiliary losses on the teacher's noised image tokens, to make its generation learn faster (docs/teacher.md).

Two kinds, each on the hidden states after one decoder layer (``AlignConfig.layer``) of every noised VAE block, so
that the tokens of a half-noised image learn early what the clean image holds and where:

- **REPA** (arXiv 2410.06940): an MLP maps each token to the feature that a frozen copy of the pre-trained scene
  ViT (``recipes/vit.py``) gives the clean image at that place; the loss is the negative cosine similarity. The ViT
  sees 16-px patches and a latent token covers 8 px, so each token takes the feature of the patch it lies in.
- **Colour-map labels**: a linear head predicts which palette colours colour each token's cell of the clean image
  (binary cross-entropy). The world is exact, so the labels are read off the pixels.

The heads are thrown away after training; only their gradient into the model stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperbagel.model.siglip import SiglipVisionTransformer, patchify_image, vit_position_ids
from hyperbagel.world import palette as P


@dataclass
class AlignConfig:
    repa: float = 0.0  # weight of the REPA loss (0: off)
    labels: float = 0.0  # weight of the colour-map loss (0: off)
    layer: int = 4  # 1-based decoder layer whose output is aligned (REPA: about a third of the depth)

    @property
    def active(self) -> bool:
        return self.repa > 0 or self.labels > 0


class AlignHeads(nn.Module):
    """The trainable read-outs: REPA's projector (hidden → 2·hidden → ViT width) and the colour-map head."""

    def __init__(self, cfg: AlignConfig, hidden: int, vit_hidden: int):
        super().__init__()
        self.projector = (nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, vit_hidden))
                          if cfg.repa > 0 else None)
        self.colours = nn.Linear(hidden, len(P.PALETTE_NAMES)) if cfg.labels > 0 else None


def palette_cells(pixels: Tensor, cell: int) -> Tensor:
    """``[N, g·g, C]`` bool: whether palette colour ``c`` (``palette.PALETTE_NAMES``) colours any pixel of each
    ``cell``-px cell (row-major) of model pixels ``[N, 3, H, W]`` in [-1, 1]."""
    rgb = torch.round((pixels * 0.5 + 0.5) * 255).to(torch.int32)  # exact inverse of pixels.to_model_pixels
    N, _, H, W = rgb.shape
    palette = torch.as_tensor(P.PALETTE_RGB, device=pixels.device)  # [C, 3]
    hit = (rgb[:, None] == palette[None, :, :, None, None]).all(2)  # [N, C, H, W]
    cells = hit.view(N, -1, H // cell, cell, W // cell, cell).any(5).any(3)  # [N, C, g, g]
    return cells.flatten(2).transpose(1, 2)


@torch.no_grad()
def vit_token_targets(vit: SiglipVisionTransformer, pixels: Tensor, patch: int, side: int, cell: int) -> Tensor:
    """``[N, g·g, F]``: the frozen ViT's feature of the patch that holds each ``cell``-px token of ``pixels``
    ``[N, 3, H, W]``."""
    N, _, H, W = pixels.shape
    gh, gw = H // patch, W // patch
    packed = torch.cat([patchify_image(px, patch) for px in pixels])
    ids = vit_position_ids(gh, gw, side).repeat(N).to(pixels.device)
    feats = vit(packed, ids, [gh * gw] * N).view(N, gh, gw, -1)
    r = patch // cell
    feats = feats.repeat_interleave(r, dim=1).repeat_interleave(r, dim=2)
    return feats.reshape(N, gh * r * gw * r, -1)


def repa_loss(projector: nn.Module, states: Tensor, targets: Tensor) -> Tensor:
    """Mean negative cosine similarity between projected token states and their targets (both ``[N, n, ·]``)."""
    return -F.cosine_similarity(projector(states).float(), targets.float(), dim=-1).mean()


def colour_loss(head: nn.Module, states: Tensor, cells: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(head(states).float(), cells.float())


def align_loss(cfg: AlignConfig, heads: AlignHeads, states: Tensor, pixels: Tensor, vit: SiglipVisionTransformer | None,
               vit_patch: int, vit_side: int, cell: int) -> tuple[Tensor, dict[str, float]]:
    """The weighted auxiliary loss of one batch's noised image tokens ``states [N, n, D]``, whose clean images are
    ``pixels [N, 3, H, W]``, and its parts for the log."""
    total, logged = states.sum() * 0.0, {}
    if heads.projector is not None:
        loss = repa_loss(heads.projector, states, vit_token_targets(vit, pixels, vit_patch, vit_side, cell))
        total = total + cfg.repa * loss
        logged["repa"] = float(loss.detach())
    if heads.colours is not None:
        loss = colour_loss(heads.colours, states, palette_cells(pixels, cell))
        total = total + cfg.labels * loss
        logged["colours"] = float(loss.detach())
    return total, logged
