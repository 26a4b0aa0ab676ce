"""Where things are: the nine regions of the canvas and GenEval's left/right/above/below rule.

Pure geometry on box centres and sides; knows nothing about scenes, so the judge can use it on detected boxes.
"""

from __future__ import annotations

import math

# Region index = 3 * row + column; rows top/middle/bottom, columns left/center/right.
REGIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


def third(coordinate: float, resolution: int) -> int:
    """0, 1 or 2: which third of ``[0, resolution)`` holds ``coordinate`` (clamped to the canvas)."""
    return min(2, max(0, math.floor(3 * coordinate / resolution)))


def region_of(cx: float, cy: float, resolution: int) -> str:
    """The region phrase of a box centre."""
    return REGIONS[3 * third(cy, resolution) + third(cx, resolution)]


def region_row(region: str) -> int:
    return REGIONS.index(region) // 3


def region_centre(region: str, resolution: int) -> tuple[float, float]:
    """The centre ``(x, y)`` of a region's cell."""
    index = REGIONS.index(region)
    return ((index % 3 + 0.5) * resolution / 3, (index // 3 + 0.5) * resolution / 3)


def region_phrase(region: str) -> str:
    """``in the center`` or ``at the …``: how captions and instructions place something in a region."""
    return "in the center" if region == "center" else f"at the {region}"


def relations(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> frozenset[str]:
    """The relations in which box ``a`` stands to box ``b`` under GenEval's rule.

    Boxes are ``(cx, cy, width, height)``. Each axis of the centre offset ``a − b`` is shrunk toward 0 by
    ``0.1 × (dimA + dimB)`` (clamped at 0, sign kept) and divided by the unshrunk offset's norm; a component below
    −0.5 means ``left of`` / ``above``, above +0.5 means ``right of`` / ``below`` (y grows downward).
    """
    dx, dy = a[0] - b[0], a[1] - b[1]
    norm = math.hypot(dx, dy)
    if norm == 0:
        return frozenset()
    sx = math.copysign(max(0.0, abs(dx) - 0.1 * (a[2] + b[2])), dx) / norm
    sy = math.copysign(max(0.0, abs(dy) - 0.1 * (a[3] + b[3])), dy) / norm
    found = set()
    if sx < -0.5:
        found.add("left of")
    if sx > 0.5:
        found.add("right of")
    if sy < -0.5:
        found.add("above")
    if sy > 0.5:
        found.add("below")
    return frozenset(found)
