"""Shapes World's fixed vocabulary of things: colours, backgrounds, shapes, sizes and their pixel sides.

Every value here is part of the contract (``shared/design/shapes-world.md`` §1); change none of them without a new
world version, since suites, detectors and trained models all depend on them.
"""

from __future__ import annotations

import numpy as np

OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (200, 50, 200),
    "cyan": (40, 200, 210),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "gray": (120, 120, 120)}
DEFAULT_BACKGROUND = "black"

COLORS: tuple[str, ...] = tuple(OBJECT_COLORS)
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)
# All nine colours in one fixed order: the detector's palette (index = colour id). Backgrounds come first, so a tie
# in the border vote goes to a background colour.
PALETTE_NAMES: tuple[str, ...] = BACKGROUND_NAMES + COLORS
PALETTE_RGB = np.array([{**OBJECT_COLORS, **BACKGROUNDS}[name] for name in PALETTE_NAMES], dtype=np.int32)

SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
UNKNOWN_SHAPE = "unknown"
SIZES: tuple[str, ...] = ("small", "large")

RESOLUTIONS: tuple[int, ...] = (64, 32)
DEFAULT_RESOLUTION = 64
_SIDES = {64: {"small": 12, "large": 20}, 32: {"small": 6, "large": 10}}

MIN_OBJECTS, MAX_OBJECTS = 1, 4
MARGIN = 1  # every box lies at least this many pixels inside the canvas
GAP = 2  # any two boxes are at least this many empty pixels apart along some axis

SNAP_DISTANCE = 45.0  # a pixel farther than this (RGB Euclidean) from every palette colour is unexplained
SPECKLE_FRACTION = 0.4  # components below this fraction of the smallest legal shape area are speckle
MIN_SHAPE_IOU = 0.6  # best template IoU below this gives shape "unknown"

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")


def check_resolution(resolution: int) -> int:
    if resolution not in _SIDES:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
    return resolution


def side(size: str, resolution: int = DEFAULT_RESOLUTION) -> int:
    """The pixel side of an object of ``size`` at ``resolution``."""
    return _SIDES[check_resolution(resolution)][size]


def plural(shape: str) -> str:
    return shape + "s"
