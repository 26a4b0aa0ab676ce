"""Stage 3, DMDO (distribution matching distillation via ODE, Hyper-Bagel §3.2.3).

The generator keeps its deterministic 6-step Euler sampler. The *fake* model learns the generator's own
distribution by flow matching on its paths' end points ``x_0``: ``x_t = (1 − t)·x_0 + t·ε`` with velocity
``ε − x_0``, where ``ε`` is the path's own ``x_T`` in the paper and fresh noise in our default (the recipe's
``fake_noise``). The generator takes one gradient step from a stored path
point straight to ``x̂_0``, re-mixes it with the *same* ``x_T`` at a new time ``t′`` and follows the DMD gradient
``(x̂_0^fake − x̂_0^real) / mean|x̂_0 − x̂_0^real|`` (real = the teacher with true CFG), i.e. descends the reverse KL
from the generator's distribution to the teacher's. No regression or GAN regulariser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperbagel.flow.schedule import noisy


def path_mix(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``(1 − t)·x_0 + t·noise``: with the path's own ``x_T``, a point between the ends of one ODE path."""
    return noisy(x0, noise, t)


def fake_flow_loss(v_fake: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """Flow matching of the fake model on the generator's samples: velocity target ``noise − x_0`` (``noise`` is
    the path's own ``x_T`` or fresh noise, the recipe's choice)."""
    return F.mse_loss(v_fake.float(), (noise - x0).float())


def dmd_gradient(x0_hat: Tensor, x0_real: Tensor, x0_fake: Tensor) -> Tensor:
    """The per-sample normalised DMD gradient on ``x̂_0``: ``(x̂_0^fake − x̂_0^real) / mean|x̂_0 − x̂_0^real|``.

    Descending it moves a sample towards the teacher's denoised estimate and away from the fake model's: the
    score difference ``s_fake − s_real`` of the reverse KL, in x₀-prediction form.
    """
    dims = tuple(range(1, x0_hat.dim()))
    with torch.no_grad():
        norm = (x0_hat.float() - x0_real.float()).abs().mean(dim=dims, keepdim=True).clamp_min(1e-6)
        grad = (x0_fake.float() - x0_real.float()) / norm
    return torch.nan_to_num(grad)


def dmd_generator_loss(x0_hat: Tensor, grad: Tensor) -> Tensor:
    """``½·mean‖x̂_0 − sg(x̂_0 − g)‖²``: its gradient with respect to ``x̂_0`` is ``g / numel``."""
    return 0.5 * F.mse_loss(x0_hat.float(), (x0_hat.float() - grad).detach())
