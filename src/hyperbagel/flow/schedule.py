"""Path conventions and timestep schedules.

Convention (BAGEL's): ``x_t = (1 − t)·x_0 + t·ε`` with t = 1 pure noise and t = 0 clean data; the model predicts
the velocity ``v = ε − x_0``, so an Euler step towards data is ``x ← x − v·(t_i − t_{i+1})``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shift_time(t: Tensor, shift: float) -> Tensor:
    """BAGEL/SD3 timestep shift ``s·t / (1 + (s − 1)·t)``; shift > 1 spends more steps near noise."""
    return shift * t / (1 + (shift - 1) * t)


def bagel_timesteps(num_timesteps: int, shift: float) -> Tensor:
    """``linspace(1, 0, N)`` shifted; a sampler evaluates the model at the first ``N − 1`` points."""
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps must be at least 2, got {num_timesteps}")
    return shift_time(torch.linspace(1, 0, num_timesteps), shift)


def noisy(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Point on the straight path at time ``t`` (broadcast over trailing dims)."""
    t = t.reshape(t.shape + (1,) * (x0.dim() - t.dim()))
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    return noise - x0


def x0_from_velocity(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """The clean estimate one straight step away: ``x_0 = x_t − t·v``."""
    t = t.reshape(t.shape + (1,) * (x_t.dim() - t.dim()))
    return x_t - t * v


def sample_train_times(batch: int, shift: float, generator: torch.Generator, device=None) -> Tensor:
    """Logit-normal times ``sigmoid(N(0, 1))``, then shifted (BAGEL's training distribution)."""
    u = torch.randn(batch, generator=generator, device=device)
    return shift_time(torch.sigmoid(u), shift)
