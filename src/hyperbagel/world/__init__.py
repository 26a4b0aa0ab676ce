"""Shapes World: scenes, renderer, detector (the judge), task generators, benchmark suites and scoring.

The names most code needs are re-exported here; see ``docs/world.md`` for the whole map and every rule.
"""

from hyperbagel.world.captions import Layout, caption, layout_of, parse_caption, scene_for_caption
from hyperbagel.world.detect import Detection, Found, detect
from hyperbagel.world.render import render
from hyperbagel.world.scene import Obj, Scene, is_valid, sample_scene, scene_from_json, scene_to_json
from hyperbagel.world.vocab import all_words, join_words, split_words

__all__ = [
    "Detection",
    "Found",
    "Layout",
    "Obj",
    "Scene",
    "all_words",
    "caption",
    "detect",
    "is_valid",
    "join_words",
    "layout_of",
    "parse_caption",
    "render",
    "sample_scene",
    "scene_for_caption",
    "scene_from_json",
    "scene_to_json",
    "split_words",
]
