"""Samplers: Euler over a timestep list, BAGEL's guided velocity over the three branch contexts, and a CFG-distilled
student's velocity (one forward on the full context, the guidance scales as inputs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hyperbagel.flow.guidance import GuidanceConfig, combine, gated_scales
from hyperbagel.model.context import Context, Forwarder

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def euler(velocity: VelocityFn, x: Tensor, timesteps: Tensor, trajectory: list | None = None) -> Tensor:
    """Integrate from ``timesteps[0]`` to ``timesteps[-1]``: one velocity evaluation per step, ``x ← x − v·dt``.

    ``trajectory`` (optional) receives ``(t, x_t, v_t)`` for every step.
    """
    for i in range(len(timesteps) - 1):
        t = timesteps[i]
        v = velocity(x, t)
        if trajectory is not None:
            trajectory.append((t, x, v))
        x = x - v * (t - timesteps[i + 1])
    return x


@dataclass
class Branches:
    """The contexts CFG needs: full conditioning, without the last text, without images."""

    cond: Context
    no_text: Context | None = None
    no_image: Context | None = None


def guided_velocity(fwd: Forwarder, branches: Branches, position_ids: Tensor, guidance: GuidanceConfig) -> VelocityFn:
    """BAGEL's per-step velocity: run the branches CFG needs at ``t`` (sequentially, as the reference) and combine."""

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        tt = torch.full((x.shape[0],), float(t), device=x.device)
        run_text, run_image = guidance.branches(float(t))
        v_cond, _ = fwd.velocity(branches.cond, x, tt, position_ids)
        v_no_text = fwd.velocity(branches.no_text, x, tt, position_ids)[0] if run_text else None
        v_no_image = fwd.velocity(branches.no_image, x, tt, position_ids)[0] if run_image else None
        return combine(v_cond, v_no_text, v_no_image, guidance.text_scale, guidance.image_scale,
                       guidance.renorm_type, guidance.renorm_min)

    return velocity


def distilled_velocity(
    fwd: Forwarder, ctx: Context, position_ids: Tensor, text_scale: float | Tensor, image_scale: float | Tensor = 1.0,
    interval: tuple[float, float] | None = None,
) -> VelocityFn:
    """A CFG-distilled student's velocity: one forward per step on the full context; scales are floats or ``[B]``.
    A gated student takes the task's CFG ``interval`` (``gated_scales``); an ungated one None."""

    def rows(value: float | Tensor, x: Tensor) -> Tensor:
        return torch.as_tensor(value, dtype=torch.float32, device=x.device).expand(x.shape[0])

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        tt = torch.full((x.shape[0],), float(t), device=x.device)
        text, image = gated_scales(tt, rows(text_scale, x), rows(image_scale, x), interval)
        v, _ = fwd.velocity(ctx, x, tt, position_ids, text_scale=text, image_scale=image)
        return v

    return velocity
