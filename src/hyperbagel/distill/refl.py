"""Stage 5, ReFL (reward feedback learning, Hyper-Bagel §3.2.5 after Hyper-SD): the 1-step model's output, decoded
to pixels, is pushed up the reward until the reward reaches ``α``.

The loss is ``E[ReLU(α − r(decode(x̂_0), text))]`` with the reward model frozen and the gradient flowing through it
and the VAE decoder into the generator (one forward from noise, so ``x̂_0`` is directly the sample). The texts are
the prompt for text-to-image and the target scene's caption for an edit. Optionally, ``anchor_mse`` keeps ``x̂_0``
near the starting (ADP) model's sample from the same noise, a guard against reward hacking.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hyperbagel.distill.reward import refl_loss


def refl_objective(rewards: Tensor, alpha: float, x0_hat: Tensor, x0_anchor: Tensor | None,
                   anchor_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, hinge, anchor)``: ``ReLU(α − r)`` averaged, plus ``anchor_weight·MSE(x̂_0, x̂_0^anchor)``."""
    hinge = refl_loss(rewards, alpha)
    anchor = F.mse_loss(x0_hat.float(), x0_anchor.float()) if x0_anchor is not None else hinge.new_zeros(())
    return hinge + anchor_weight * anchor, hinge, anchor
