"""Stage 4, ADP (adversarial diffusion pre-training, Hyper-Bagel §3.2.4 after DMDX): the 1-step generator.

The 6-step model draws ODE paths from fresh noise ``x_T`` on the fly; a path's end ``x_0`` is a *real* sample. The
generator starts from a point of that path, ``x_t = (1 − t)·x_0 + t·x_T`` (``t = 1``: the noise itself, the 1-step
sampler's only input), and jumps straight to ``x̂_0 = x_t − t·v`` in one forward: a *fake* sample. Two
discriminators tell real from fake with the hinge loss: a latent one (heads on the backbone) on both samples noised
to the same ``t′`` with the same noise, and a pixel one (a small CNN) on both decoded to images. No regression to
the paired endpoint: the generator matches the 6-step model's *distribution*, which one forward can reach where a
pointwise target (the mean of many endpoints, a blur) cannot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperbagel.distill.tscd import hinge_discriminator_loss, hinge_generator_loss
from hyperbagel.flow.schedule import shift_time


def input_times(generators: list[torch.Generator], one_share: float, power: float) -> Tensor:
    """The generator's input time per row: ``1`` (pure noise) with probability ``one_share``, else ``1 − u^power``
    with ``u ~ U[0, 1)`` (``power`` 3: DMDX's cubic schedule, biased to high noise)."""
    out = []
    for g in generators:
        pick, u = torch.rand(2, generator=g)
        out.append(torch.ones(()) if pick < one_share else 1 - u**power)
    return torch.stack(out)


def disc_times(generators: list[torch.Generator], lo: float, hi: float, shift: float) -> Tensor:
    """The latent discriminator's noise level per row: ``U[lo, hi]`` through the sampler's timestep shift."""
    u = torch.stack([torch.rand((), generator=g) for g in generators])
    return shift_time(lo + (hi - lo) * u, shift)


def adp_generator_loss(latent_fake: Tensor, pixel_fake: Tensor, latent_weight: float,
                       pixel_weight: float) -> Tensor:
    """``λ_latent·(−E[D_latent(fake)]) + λ_pixel·(−E[D_pixel(fake)])``."""
    return latent_weight * hinge_generator_loss(latent_fake) + pixel_weight * hinge_generator_loss(pixel_fake)


def adp_discriminator_loss(latent_real: Tensor, latent_fake: Tensor, pixel_real: Tensor,
                           pixel_fake: Tensor) -> tuple[Tensor, Tensor]:
    """The two discriminators' hinge losses (each trains only its own player): ``(latent, pixel)``."""
    return hinge_discriminator_loss(latent_real, latent_fake), hinge_discriminator_loss(pixel_real, pixel_fake)


def pair_mse(x0_hat: Tensor, x0: Tensor) -> Tensor:
    """The optional regression to the paired endpoint (DMD2's ODE pre-training; ``ADPConfig.pair_weight``)."""
    return F.mse_loss(x0_hat.float(), x0.float())
