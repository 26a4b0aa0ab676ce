"""Balanced draws: every choice equally often, up to one, in random order."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

T = TypeVar("T")


def balanced(rng: np.random.Generator, pool: list[T] | tuple[T, ...], n: int) -> list[T]:
    """``n`` draws from ``pool``: each element ``n // len(pool)`` times, the remainder without replacement, shuffled."""
    pool = list(pool)
    reps, rest = divmod(n, len(pool))
    chosen = pool * reps + [pool[i] for i in rng.choice(len(pool), size=rest, replace=False)]
    return [chosen[i] for i in rng.permutation(len(chosen))]
