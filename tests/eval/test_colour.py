"""Colour statistics on images whose answers are known by hand."""

import numpy as np
import pytest

from hyperbagel.eval.colour import colour_stats
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json


def test_known_images():
    black = np.zeros((8, 8, 3), dtype=np.uint8)
    red = black.copy()
    red[:2, :4] = (255, 0, 0)  # 8 of 64 pixels, fully saturated
    pale = black.copy()
    pale[:4, :4] = (200, 100, 100)  # 16 of 64 pixels, saturation 0.5
    dim = black.copy()
    dim[:, :] = (40, 0, 0)  # not brighter than 40: background
    stats = colour_stats([red, pale, dim])
    assert stats["bright"] == pytest.approx(24 / 192)
    assert stats["saturation"] == pytest.approx((8 * 1.0 + 16 * 0.5) / 24)
    assert np.isnan(colour_stats([black])["saturation"]) and colour_stats([black])["bright"] == 0
    with pytest.raises(ValueError, match="at least one image"):
        colour_stats([])


def test_a_render_is_its_palette_colour_on_black():
    """shapes-world.md: red is (220, 40, 40), saturation 180 / 220; a large square is 20 px wide."""
    scene = scene_from_json({"resolution": 64, "background": "black", "objects": [
        {"shape": "square", "color": "red", "size": "large", "x": 8, "y": 8}]})
    stats = colour_stats([render(scene)])
    assert stats["bright"] == pytest.approx(20 * 20 / 64**2)
    assert stats["saturation"] == pytest.approx(180 / 220)
