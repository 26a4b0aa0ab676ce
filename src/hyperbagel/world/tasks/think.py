"""Think plans (BAGEL's think mode, contract §4.4): before drawing, write the canonical caption of a scene that
satisfies the prompt, then draw that scene.

A think-mode sample passes when its image passes the prompt's check; plan–image agreement is the strict check of the
image against the plan (``plan_agrees``).
"""

from __future__ import annotations

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.captions import caption
from hyperbagel.world.detect import Detection
from hyperbagel.world.scene import Scene
from hyperbagel.world.tasks.t2i import CAPTION_TAG, check_strict, scene_for_prompt


def think_plan(
    item: dict, rng: np.random.Generator, resolution: int = P.DEFAULT_RESOLUTION, extras: bool = True
) -> tuple[str, Scene]:
    """A plan for a text-to-image item and the scene it describes (draw that scene to follow the plan)."""
    scene = scene_for_prompt(item, rng, resolution, extras=extras)
    return caption(scene), scene


def plan_agrees(plan: str, detection: Detection) -> bool:
    """Whether the image shows exactly what the plan says (its layout; positions inside regions are free)."""
    return check_strict({"tag": CAPTION_TAG, "include": [], "prompt": plan}, detection)
