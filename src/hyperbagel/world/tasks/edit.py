"""Editing instructions in six GEdit-like tags, their unique target scenes, and the exact edit check (contract §4.2).

An edit names its object by the shortest phrase unique in the source (``the circle``, else ``the red circle``);
objects with no unique phrase are never edited. ``add`` and ``move`` put the object at the free spot nearest the
centre of the named region (the target), while the check accepts any non-overlapping spot inside the region.

An item is ``{"id", "tag", "instruction", "source", "target", "edit"}`` with scenes as JSON (``scene_to_json``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.detect import Detection, Found, detect
from hyperbagel.world.regions import REGIONS, region_of, region_phrase
from hyperbagel.world.render import render
from hyperbagel.world.scene import (
    Obj,
    Scene,
    boxes_clear,
    free_spots,
    nearest_spot,
    replace_object,
    sample_scene,
    scene_from_json,
    scene_to_json,
)

EDIT_TAGS: tuple[str, ...] = ("recolor", "add", "remove", "move", "reshape", "background")
KEEP_PLACE_PX = 2.0  # "same place": box centres at most this far apart (Euclidean)


@dataclass(frozen=True)
class Edit:
    """One edit of a source scene. ``obj`` is the edited source object (None for ``add`` and ``background``)."""

    tag: str
    obj: Obj | None = None
    color: str | None = None  # recolor: the new colour; add: the new object's colour
    shape: str | None = None  # reshape: the new shape; add: the new object's shape
    size: str | None = None  # add: the new object's size
    region: str | None = None  # add, move: where the object goes
    background: str | None = None  # background: the new background


# ---------------------------------------------------------------------------------------------------- text


def referring_phrase(scene: Scene, obj: Obj) -> str | None:
    """``the {shape}`` when its shape is unique, else ``the {color} {shape}`` when that is unique, else None."""
    if sum(o.shape == obj.shape for o in scene.objects) == 1:
        return f"the {obj.shape}"
    if sum(o.shape == obj.shape and o.color == obj.color for o in scene.objects) == 1:
        return f"the {obj.color} {obj.shape}"
    return None


def instruction(scene: Scene, edit: Edit) -> str:
    ref = referring_phrase(scene, edit.obj) if edit.obj is not None else None
    if edit.tag == "recolor":
        return f"make {ref} {edit.color}"
    if edit.tag == "add":
        return f"add a {edit.size} {edit.color} {edit.shape} {region_phrase(edit.region)}"
    if edit.tag == "remove":
        return f"remove {ref}"
    if edit.tag == "move":
        return f"move {ref} to the {edit.region}"
    if edit.tag == "reshape":
        return f"turn {ref} into a {edit.shape}"
    if edit.tag == "background":
        return f"make the background {edit.background}"
    raise ValueError(f"unknown edit tag {edit.tag!r}")


# ---------------------------------------------------------------------------------------------------- targets


def apply_edit(scene: Scene, edit: Edit) -> Scene | None:
    """The unique target scene, or None when the edit is impossible (no free spot, too many or too few objects)."""
    R = scene.resolution
    if edit.obj is not None and referring_phrase(scene, edit.obj) is None:
        return None
    if edit.tag == "recolor":
        return (
            None
            if edit.color == edit.obj.color
            else replace_object(scene, edit.obj, replace(edit.obj, color=edit.color))
        )
    if edit.tag == "reshape":
        return (
            None
            if edit.shape == edit.obj.shape
            else replace_object(scene, edit.obj, replace(edit.obj, shape=edit.shape))
        )
    if edit.tag == "remove":
        return replace_object(scene, edit.obj, None) if len(scene.objects) > P.MIN_OBJECTS else None
    if edit.tag == "background":
        return None if edit.background == scene.background else replace(scene, background=edit.background)
    if edit.tag == "add":
        if len(scene.objects) >= P.MAX_OBJECTS:
            return None
        s = P.side(edit.size, R)
        spot = nearest_spot(free_spots(scene.objects, s, R), edit.region, s, R)
        if spot is None:
            return None
        return replace(scene, objects=scene.objects + (Obj(edit.shape, edit.color, edit.size, *spot),))
    if edit.tag == "move":
        if edit.region == edit.obj.region(R):
            return None
        s = edit.obj.side(R)
        others = tuple(o for o in scene.objects if o != edit.obj)
        spot = nearest_spot(free_spots(others, s, R), edit.region, s, R)
        if spot is None:
            return None
        return replace_object(scene, edit.obj, replace(edit.obj, x=spot[0], y=spot[1]))
    raise ValueError(f"unknown edit tag {edit.tag!r}")


def candidate_edits(scene: Scene, tag: str) -> list[Edit]:
    """Every edit of ``tag`` the instruction grammar can express on ``scene`` (possible or not), in a fixed order."""
    referable = [o for o in scene.objects if referring_phrase(scene, o) is not None]
    if tag == "recolor":
        return [Edit(tag, o, color=c) for o in referable for c in P.COLORS if c != o.color]
    if tag == "reshape":
        return [Edit(tag, o, shape=s) for o in referable for s in P.SHAPES if s != o.shape]
    if tag == "remove":
        return [Edit(tag, o) for o in referable]
    if tag == "background":
        return [Edit(tag, background=b) for b in P.BACKGROUND_NAMES if b != scene.background]
    if tag == "move":
        return [Edit(tag, o, region=r) for o in referable for r in REGIONS]
    if tag == "add":
        return [
            Edit(tag, shape=s, color=c, size=z, region=r)
            for s in P.SHAPES
            for c in P.COLORS
            for z in P.SIZES
            for r in REGIONS
        ]
    raise ValueError(f"unknown edit tag {tag!r}")


def sample_edit(rng: np.random.Generator, scene: Scene, tag: str) -> tuple[Edit, Scene] | None:
    """A uniformly random possible edit of ``tag`` on ``scene`` and its target, or None when none is possible."""
    candidates = candidate_edits(scene, tag)
    for i in rng.permutation(len(candidates)):
        target = apply_edit(scene, candidates[i])
        if target is not None:
            return candidates[i], target
    return None


def edit_to_json(edit: Edit) -> dict:
    data = {k: v for k, v in asdict(edit).items() if v is not None}
    if edit.obj is not None:
        data["obj"] = asdict(edit.obj)
    return data


def edit_from_json(data: dict) -> Edit:
    fields = dict(data)
    if "obj" in fields:
        fields["obj"] = Obj(**fields["obj"])
    return Edit(**fields)


def make_item(scene: Scene, edit: Edit, target: Scene, item_id: str = "") -> dict:
    return {
        "id": item_id,
        "tag": edit.tag,
        "instruction": instruction(scene, edit),
        "source": scene_to_json(scene),
        "target": scene_to_json(target),
        "edit": edit_to_json(edit),
    }


def sample_edit_item(
    rng: np.random.Generator, tag: str, resolution: int = P.DEFAULT_RESOLUTION, item_id: str = ""
) -> dict:
    """A random source scene with a random possible edit of ``tag``, as a suite item."""
    while True:
        scene = sample_scene(rng, resolution)
        sampled = sample_edit(rng, scene, tag)
        if sampled is not None:
            return make_item(scene, *sampled, item_id=item_id)


# ---------------------------------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class EditScore:
    edit_ok: bool  # the edited object does what the instruction says
    preserved: bool  # every other object found again unchanged, nothing extra, background as it should be
    sc: float  # edit_ok and preserved
    pq: float  # 1 − unexplained fraction
    o: float  # sqrt(sc · pq)
    masked_l1: float | None  # mean |output − source| outside the edited boxes (None for background edits)
    l1_target: float  # mean |output − target render|


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _match(kept: list[Obj], found: tuple[Found, ...], resolution: int) -> tuple[int, list[Found]]:
    """How many ``kept`` objects are found again (same shape, colour, size, centre within 2 px), and the leftovers."""
    left = list(found)
    matched = 0
    for o in kept:
        for f in left:
            if (f.obj.shape, f.obj.color, f.obj.size) == (o.shape, o.color, o.size) and _distance(
                f.centre, o.centre(resolution)
            ) <= KEEP_PLACE_PX:
                left.remove(f)
                matched += 1
                break
    return matched, left


def check_edit(item: dict, image: np.ndarray, detection: Detection | None = None) -> EditScore:
    """Score one edited image against its item (contract §4.2)."""
    source, target = scene_from_json(item["source"]), scene_from_json(item["target"])
    edit = edit_from_json(item["edit"])
    R = source.resolution
    detection = detect(image) if detection is None else detection
    kept = [o for o in source.objects if o != edit.obj]
    matched, left = _match(kept, detection.found, R)
    new = 0 if edit.tag in ("remove", "background") else 1
    preserved = matched == len(kept) and len(left) == new and detection.scene.background == target.background
    o = edit.obj
    if edit.tag == "recolor":
        edit_ok = any(
            f.obj.shape == o.shape and f.obj.color == edit.color and _distance(f.centre, o.centre(R)) <= KEEP_PLACE_PX
            for f in left
        )
    elif edit.tag == "reshape":
        edit_ok = any(
            f.obj.color == o.color and f.obj.shape == edit.shape and _distance(f.centre, o.centre(R)) <= KEEP_PLACE_PX
            for f in left
        )
    elif edit.tag == "move":
        edit_ok = any(
            (f.obj.shape, f.obj.color) == (o.shape, o.color) and region_of(*f.centre, R) == edit.region for f in left
        )
    elif edit.tag == "add":
        edit_ok = any(
            (f.obj.shape, f.obj.color) == (edit.shape, edit.color)
            and region_of(*f.centre, R) == edit.region
            and all(boxes_clear(f.box, g.box, gap=0) for g in detection.found if g is not f)
            for f in left
        )
    elif edit.tag == "remove":
        edit_ok = not any((f.obj.shape, f.obj.color) == (o.shape, o.color) for f in detection.found)
    else:  # background
        edit_ok = detection.scene.background == edit.background
    sc = float(edit_ok and preserved)
    pq = 1.0 - detection.unexplained_fraction
    out = image.astype(np.float32)
    l1_target = float(np.abs(out - render(target)).mean())
    masked_l1 = None
    if edit.tag != "background":
        mask = np.ones((R, R), dtype=bool)
        boxes = [f.box for f in left]
        if o is not None:
            boxes.append(o.box(R))
        boxes += [t.box(R) for t in target.objects if t not in source.objects]
        for x0, y0, x1, y1 in boxes:
            mask[y0:y1, x0:x1] = False
        if mask.any():
            masked_l1 = float(np.abs(out - render(source))[mask].mean())
    return EditScore(bool(edit_ok), bool(preserved), sc, pq, math.sqrt(sc * pq), masked_l1, l1_target)
