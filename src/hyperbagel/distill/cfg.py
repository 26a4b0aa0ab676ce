"""Stage 1, CFG distillation: one student forward reproduces the teacher's guided velocity.

The target is BAGEL's exact guided velocity (``flow.guidance.combine``: text then image guidance, the renorm, the
CFG interval) at per-row guidance scales, evaluated on states the teacher's own guided sampler visits; the student
sees the scales through its guidance embedders; the loss is the mean squared error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperbagel.flow.guidance import GuidanceConfig, combine, interval_mask
from hyperbagel.flow.sampler import Branches
from hyperbagel.model.context import Forwarder


def sample_scales(batch: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """Guidance scales ``~ U[low, high]`` (``low == high`` gives that constant)."""
    return low + (high - low) * torch.rand(batch, generator=generator)


def _rows(t: Tensor | float, batch: int, device) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float32, device=device).reshape(-1).expand(batch)


def guided_target(
    v_cond: Tensor,
    v_no_text: Tensor | None,
    v_no_image: Tensor | None,
    text_scale: Tensor,
    image_scale: Tensor,
    t: Tensor | float,
    guidance: GuidanceConfig,
) -> Tensor:
    """BAGEL's guided velocity with per-row scales and times ``[B]``: rows outside the CFG interval get the
    conditional velocity, the others ``combine`` with ``guidance``'s renorm. A missing branch means that guidance is
    off (no-text: none at all; no-image: text guidance only)."""
    if v_no_text is None:
        return v_cond
    shape = (-1,) + (1,) * (v_cond.dim() - 1)
    guided = combine(v_cond, v_no_text, v_no_image, text_scale.view(shape), image_scale.view(shape),
                     guidance.renorm_type, guidance.renorm_min)
    active = interval_mask(_rows(t, v_cond.shape[0], v_cond.device), guidance.interval)
    return torch.where(active.view(shape), guided, v_cond)


def teacher_guided_velocity(
    fwd: Forwarder,
    branches: Branches,
    position_ids: Tensor,
    x: Tensor,
    t: Tensor | float,
    text_scale: Tensor,
    image_scale: Tensor,
    guidance: GuidanceConfig,
    agree: Callable[[bool], bool] = bool,
) -> Tensor:
    """Run the branches the guided velocity needs (as BAGEL's sampler does, skipping the unconditional ones when no
    row is inside the CFG interval or the image scale is 1 everywhere) and combine them per row. ``agree`` makes
    each skip a choice of all processes (``training.distributed.any_rank``) when the model is sharded."""
    tt = _rows(t, x.shape[0], x.device)
    v_cond, _ = fwd.velocity(branches.cond, x, tt, position_ids)
    if branches.no_text is None or not agree(bool(interval_mask(tt, guidance.interval).any())):
        return v_cond
    v_no_text, _ = fwd.velocity(branches.no_text, x, tt, position_ids)
    v_no_image = None
    if branches.no_image is not None and agree(bool((image_scale != 1.0).any())):
        v_no_image, _ = fwd.velocity(branches.no_image, x, tt, position_ids)
    return guided_target(v_cond, v_no_text, v_no_image, text_scale, image_scale, tt, guidance)


def cfg_distill_loss(v_student: Tensor, v_target: Tensor) -> Tensor:
    """Mean squared error to the guided velocity."""
    return F.mse_loss(v_student.float(), v_target.float())


def guidance_shares(v_student: Tensor, v_cond: Tensor, v_guided: Tensor) -> tuple[Tensor, Tensor]:
    """How much of the guidance ``d = v_guided − v_cond`` a student's velocity reproduces, per row ``[B]``:
    ``applied`` = <v_student − v_cond, d> / |d|² (1 exact, 0 the unguided velocity, below 1 under-guided) and
    ``left`` = |v_student − v_guided|² / |d|² (0 exact, 1 for the unguided velocity). Rows where guidance adds
    nothing (``d = 0``) divide by a tiny floor: leave them out."""
    d = (v_guided - v_cond).float().flatten(1)
    energy = (d * d).sum(1).clamp_min(1e-12)
    applied = ((v_student - v_cond).float().flatten(1) * d).sum(1) / energy
    left = ((v_student - v_guided).float().flatten(1) ** 2).sum(1) / energy
    return applied, left
