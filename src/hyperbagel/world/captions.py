"""Canonical scene captions and the parser that reads them back (contract §3).

``a large red circle at the top left, a small blue square in the center and a small white triangle at the bottom.``
Objects come in reading order (row region, then box centre x, then y); one object has no list, two are joined by
`` and ``, more by ``, `` with a final `` and ``. A background other than black adds `` on a gray background``.

A caption pins down a *layout*: the multiset of (shape, color, size, region) plus the background. The strict checks
compare layouts; positions inside a region are free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.regions import REGIONS, region_of, region_phrase, region_row
from hyperbagel.world.scene import Scene, place_objects, search_placement


@dataclass(frozen=True)
class Layout:
    """What a caption says: sorted ``(shape, color, size, region)`` items and the background."""

    items: tuple[tuple[str, str, str, str], ...]
    background: str = P.DEFAULT_BACKGROUND

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(sorted(self.items)))


def layout_of(scene: Scene) -> Layout:
    R = scene.resolution
    return Layout(tuple((o.shape, o.color, o.size, o.region(R)) for o in scene.objects), scene.background)


def object_phrase(shape: str, color: str, size: str, region: str) -> str:
    return f"a {size} {color} {shape} {region_phrase(region)}"


def join_list(phrases: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene) -> str:
    """The canonical caption of a scene."""
    R = scene.resolution

    def reading_key(o):
        cx, cy = o.centre(R)
        return (region_row(region_of(cx, cy, R)), cx, cy)

    phrases = [object_phrase(o.shape, o.color, o.size, o.region(R)) for o in sorted(scene.objects, key=reading_key)]
    text = join_list(phrases)
    if scene.background != P.DEFAULT_BACKGROUND:
        text += f" on a {scene.background} background"
    return text + "."


_ITEM = re.compile(
    "a (?P<size>{}) (?P<color>{}) (?P<shape>{}) (?:in the (?P<center>center)|at the (?P<region>{}))$".format(
        "|".join(P.SIZES), "|".join(P.COLORS), "|".join(P.SHAPES), "|".join(r for r in REGIONS if r != "center")
    )
)
_BACKGROUND = re.compile(r" on a ({}) background$".format("|".join(P.BACKGROUND_NAMES)))


class CaptionError(ValueError):
    """A text that is not a caption in the world's grammar."""


def parse_caption(text: str) -> Layout:
    """The layout a caption describes. Separators (``, `` / `` and ``) and object order are not checked."""
    body = text.strip()
    if not body.endswith("."):
        raise CaptionError(f"a caption ends with '.': {text!r}")
    body = body[:-1]
    background = P.DEFAULT_BACKGROUND
    match = _BACKGROUND.search(body)
    if match:
        background, body = match.group(1), body[: match.start()]
    items = []
    for part in re.split(r", | and ", body):
        m = _ITEM.match(part)
        if m is None:
            raise CaptionError(f"not an object phrase: {part!r}")
        items.append((m["shape"], m["color"], m["size"], "center" if m["center"] else m["region"]))
    if not P.MIN_OBJECTS <= len(items) <= P.MAX_OBJECTS:
        raise CaptionError(f"a caption names {P.MIN_OBJECTS}–{P.MAX_OBJECTS} objects, got {len(items)}")
    return Layout(tuple(items), background)


def scene_for_layout(layout: Layout, rng: np.random.Generator, resolution: int = P.DEFAULT_RESOLUTION) -> Scene:
    """A random valid scene with exactly this layout (objects placed uniformly inside their regions)."""
    items = sorted(layout.items, key=lambda item: P.SIZES.index(item[2]), reverse=True)  # large ones first
    specs = [(shape, color, size) for shape, color, size, _ in items]
    regions: list[str | None] = [region for *_, region in items]
    objects = place_objects(rng, specs, resolution, regions, attempts=20)
    if objects is None:  # a tight layout: search instead of sampling
        objects = search_placement(rng, specs, resolution, regions)
    if objects is None:
        raise CaptionError(f"the layout does not fit on a {resolution}px canvas: {layout}")
    scene = Scene(objects, layout.background, resolution)
    return scene


def scene_for_caption(text: str, rng: np.random.Generator, resolution: int = P.DEFAULT_RESOLUTION) -> Scene:
    """A random valid scene whose canonical caption is exactly ``text`` (so caption → scene → caption round-trips).

    Samples scenes with the caption's layout until the reading order matches too; raises ``CaptionError`` when the text
    is not a canonical caption of any scene found in 200 tries.
    """
    layout = parse_caption(text)
    for _ in range(200):
        scene = scene_for_layout(layout, rng, resolution)
        if caption(scene) == text.strip():
            return scene
    raise CaptionError(f"no scene found whose canonical caption is {text!r}")
