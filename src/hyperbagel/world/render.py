"""The renderer: a scene to an exact ``uint8 [R, R, 3]`` image, without anti-aliasing.

A pixel belongs to a shape when its centre ``(c + 0.5, r + 0.5)`` (box coordinates) is inside it:
- square: the whole box;
- circle: the closed disc centred on the box centre with radius ``s / 2``;
- triangle: apex up, ``|c + 0.5 − s/2| ≤ (r + 1) / 2``, which fills the box's top and bottom rows.
Every shape therefore touches all four sides of its box.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.scene import Scene


@cache
def template(shape: str, side: int) -> np.ndarray:
    """The boolean ``[side, side]`` mask of ``shape`` rasterised into a box of ``side`` pixels (read-only)."""
    r = np.arange(side)[:, None]
    c = np.arange(side)[None, :]
    if shape == "square":
        mask = np.ones((side, side), dtype=bool)
    elif shape == "circle":
        mask = (c + 0.5 - side / 2) ** 2 + (r + 0.5 - side / 2) ** 2 <= (side / 2) ** 2
    elif shape == "triangle":
        mask = np.abs(c + 0.5 - side / 2) <= (r + 1) / 2
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.flags.writeable = False
    return mask


def color_rgb(name: str) -> np.ndarray:
    return P.PALETTE_RGB[P.PALETTE_NAMES.index(name)]


def render(scene: Scene) -> np.ndarray:
    """The scene's image, ``uint8 [R, R, 3]``; the same scene always gives the same bytes."""
    R = scene.resolution
    image = np.empty((R, R, 3), dtype=np.uint8)
    image[...] = color_rgb(scene.background)
    for o in scene.objects:
        s = o.side(R)
        image[o.y : o.y + s, o.x : o.x + s][template(o.shape, s)] = color_rgb(o.color)
    return image
