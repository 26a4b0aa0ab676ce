"""Learning-rate schedules as pure functions of the step (0-based)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, lr: float, warmup: int, steps: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then a cosine to ``min_ratio × lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def warmup_constant(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then constant."""
    return lr * min(1.0, (step + 1) / max(1, warmup))


def warmup_constant_decay(step: int, lr: float, warmup: int, steps: int, decay: int) -> float:
    """``warmup_constant``, then over the last ``decay`` of ``steps`` a linear fall towards 0 (``lr / decay`` at the
    last step); ``decay = 0`` is ``warmup_constant``."""
    ramp = min(1.0, (step + 1) / max(1, warmup))
    if decay <= 0:
        return lr * ramp
    return lr * min(ramp, (steps - step) / decay)


def warmup_min_cosine(step: int, lr: float, warmup: int, steps: int) -> float:
    """``lr`` times the smaller of a linear warm-up, ``(step + 1) / warmup``, and a cosine from 1 to 0 over
    ``steps``."""
    return lr * min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps)))
