"""Colour statistics of a set of images: how much of them the shapes cover and how saturated the shapes are.

Shapes World draws saturated palette colours on a black background (``../shared/design/shapes-world.md``), so two
numbers describe a generator's colour drift that KID only summarises: the share of pixels brighter than a threshold
(max channel > 40: covered by a shape or a non-black background) and the mean HSV saturation of those pixels. A
distilled model whose shapes grow and pale raises the first and lowers the second. ``bench generate|edit`` report
both per row, beside the real renders' values.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

BRIGHT = 40  # a pixel whose brightest channel exceeds this is not background black


def colour_stats(images: Iterable[np.ndarray], bright: int = BRIGHT) -> dict[str, float]:
    """``{"bright": share of pixels with max channel > bright, "saturation": mean (max − min) / max over them}``
    for uint8 RGB images ``[H, W, 3]``."""
    bright_px, total, sat_sum = 0, 0, 0.0
    for image in images:
        rgb = np.asarray(image, dtype=np.float32).reshape(-1, 3)
        hi, lo = rgb.max(axis=1), rgb.min(axis=1)
        mask = hi > bright
        total += rgb.shape[0]
        bright_px += int(mask.sum())
        sat_sum += float(((hi[mask] - lo[mask]) / hi[mask]).sum())
    if total == 0:
        raise ValueError("colour_stats needs at least one image")
    return {"bright": bright_px / total, "saturation": sat_sum / bright_px if bright_px else float("nan")}
