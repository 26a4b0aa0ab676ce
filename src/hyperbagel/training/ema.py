"""Exponential moving average of a model's trainable weights (sharded or not: both models alike)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema ← decay · ema + (1 − decay) · model`` over the trainable parameters, in place."""
    pairs = [(e, p.detach()) for e, p in zip(ema.parameters(), model.parameters()) if p.requires_grad]
    if pairs:
        torch._foreach_lerp_([e for e, _ in pairs], [p for _, p in pairs], 1 - decay)


def ema_decay(step: int, decay: float) -> float:
    """The decay at ``step`` with the usual warm-up ``(1 + step) / (10 + step)``, capped at ``decay``."""
    return min(decay, (1 + step) / (10 + step))
