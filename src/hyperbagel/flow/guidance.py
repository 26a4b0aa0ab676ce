"""Classifier-free guidance as BAGEL combines it (bagel.md §3.4), as pure functions.

Text guidance first, ``v_txt = v_∅txt + s_txt·(v_c − v_∅txt)``, then image guidance on top,
``v = v_∅img + s_img·(v_txt − v_∅img)``. Renorm only ever shrinks, scaling by ``clamp(‖v_c‖ / (‖v‖ + 1e−8),
renorm_min, 1)``: ``global`` over all elements of one image's velocity, ``channel`` per token, ``text_channel``
per token on the text-guided velocity only (before image guidance).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

RENORM_TYPES = ("global", "channel", "text_channel")


@dataclass(frozen=True)
class GuidanceConfig:
    text_scale: float = 4.0
    image_scale: float = 1.0
    interval: tuple[float, float] = (0.0, 1.0)
    renorm_type: str = "global"
    renorm_min: float = 0.0

    def __post_init__(self) -> None:
        if self.renorm_type not in RENORM_TYPES:
            raise ValueError(f"GuidanceConfig.renorm_type must be one of {RENORM_TYPES}, got {self.renorm_type!r}")
        for name in ("text_scale", "image_scale", "renorm_min"):  # NaN and ∞ pass: the pipeline's range check
            if not _real(getattr(self, name)):                       # names them with the trained range
                raise ValueError(f"GuidanceConfig.{name} must be a number, got {getattr(self, name)!r}")
        if not (isinstance(self.interval, (tuple, list)) and len(self.interval) == 2 and all(map(_real,
                                                                                              self.interval))):
            raise ValueError(f"GuidanceConfig.interval must be two numbers (lo, hi), got {self.interval!r}")
        lo, hi = self.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"GuidanceConfig.interval must satisfy 0 ≤ lo ≤ hi ≤ 1, got {self.interval}")
        if self.text_scale < 0 or self.image_scale < 0:
            raise ValueError("GuidanceConfig scales must be non-negative")

    def active(self, t: float) -> bool:
        """CFG applies on the shifted time ``t`` when ``lo < t ≤ hi`` (BAGEL's test)."""
        return self.interval[0] < t <= self.interval[1]

    def branches(self, t: float) -> tuple[bool, bool]:
        """Which unconditional branches run at ``t``: (no-text, no-image)."""
        if not self.active(t):
            return False, False
        return self.text_scale > 1.0, self.text_scale > 1.0 and self.image_scale > 1.0


def interval_mask(t: Tensor, interval: tuple[float, float]) -> Tensor:
    """Where CFG applies, per time in ``t``: ``lo < t ≤ hi`` (BAGEL's test, as ``GuidanceConfig.active``)."""
    lo, hi = interval
    return (t > lo) & (t <= hi)


def gated_scales(t: Tensor, text_scale: Tensor, image_scale: Tensor,
                 interval: tuple[float, float] | None) -> tuple[Tensor, Tensor]:
    """The guidance scales a *gated* CFG-distilled student is fed at times ``t`` (``[B]`` or one time): the
    sampler's scales ``[B]`` where the teacher guides (``lo < t ≤ hi``), 1.0 outside the interval, where the teacher
    applies no guidance, exactly as at scale 1. So the student never has to learn the interval's jump from its time
    input. ``interval=None`` (an ungated student) returns the scales as they are."""
    if interval is None:
        return text_scale, image_scale
    on = interval_mask(t, interval)
    return torch.where(on, text_scale, 1.0), torch.where(on, image_scale, 1.0)


def _shrink(v: Tensor, ref: Tensor, dims: tuple[int, ...], renorm_min: float) -> Tensor:
    scale = ref.norm(dim=dims, keepdim=True) / (v.norm(dim=dims, keepdim=True) + 1e-8)
    return v * scale.clamp(min=renorm_min, max=1.0)


def combine(
    v_cond: Tensor,
    v_no_text: Tensor | None,
    v_no_image: Tensor | None,
    text_scale: float,
    image_scale: float,
    renorm_type: str = "global",
    renorm_min: float = 0.0,
) -> Tensor:
    """Guided velocity from the branch velocities ``[B, N, P]`` (a missing branch means its scale is unused)."""
    if v_no_text is None:
        return v_cond
    v_txt = v_no_text + text_scale * (v_cond - v_no_text)
    if renorm_type == "text_channel":
        v_txt = _shrink(v_txt, v_cond, (-1,), renorm_min)
        if v_no_image is None:
            return v_txt
        return v_no_image + image_scale * (v_txt - v_no_image)
    v = v_txt if v_no_image is None else v_no_image + image_scale * (v_txt - v_no_image)
    dims = (-1,) if renorm_type == "channel" else tuple(range(1, v.dim()))
    return _shrink(v, v_cond, dims, renorm_min)


def _real(value) -> bool:
    """A real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
