"""Text-to-image prompts in GenEval's six tags, their GenEval-format metadata, and the exact checks (contract §4.1).

An item is one GenEval metadata line: ``{"tag", "include", ["exclude"], "prompt"}``. ``check_t2i`` is the lenient,
GenEval-style verdict; ``check_strict`` also demands that the image holds nothing but what the prompt names (for a
``caption`` item: exactly the caption's layout).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.balance import balanced
from hyperbagel.world.captions import CaptionError, caption, layout_of, parse_caption, scene_for_caption
from hyperbagel.world.detect import Detection, Found, detection_of
from hyperbagel.world.regions import RELATIONS, relations
from hyperbagel.world.scene import Scene, random_spec, scene_with

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
CAPTION_TAG = "caption"  # training prompts that are full captions; not part of the GenEval-style suite
COUNTS: tuple[int, ...] = (2, 3, 4)


# ---------------------------------------------------------------------------------------------------- items


def _clause(shape: str, count: int = 1, color: str | None = None, position: list | None = None) -> dict:
    clause: dict = {"class": shape, "count": count}
    if color is not None:
        clause["color"] = color
    if position is not None:
        clause["position"] = position
    return clause


def single_object(shape: str) -> dict:
    return {"tag": "single_object", "include": [_clause(shape)], "prompt": f"a {shape}"}


def two_object(shape1: str, shape2: str) -> dict:
    return {"tag": "two_object", "include": [_clause(shape1), _clause(shape2)], "prompt": f"a {shape1} and a {shape2}"}


def counting(shape: str, count: int) -> dict:
    return {
        "tag": "counting",
        "include": [_clause(shape, count)],
        "exclude": [_clause(shape, count + 1)],
        "prompt": f"{P.NUMBER_WORDS[count]} {P.plural(shape)}",
    }


def colors(shape: str, color: str) -> dict:
    return {"tag": "colors", "include": [_clause(shape, color=color)], "prompt": f"a {color} {shape}"}


def position(shape1: str, relation: str, shape2: str) -> dict:
    """``a {shape1} {relation} a {shape2}``; as in GenEval, the reference object is clause 0."""
    return {
        "tag": "position",
        "include": [_clause(shape2), _clause(shape1, position=[relation, 0])],
        "prompt": f"a {shape1} {relation} a {shape2}",
    }


def color_attr(shape1: str, color1: str, shape2: str, color2: str) -> dict:
    return {
        "tag": "color_attr",
        "include": [_clause(shape1, color=color1), _clause(shape2, color=color2)],
        "prompt": f"a {color1} {shape1} and a {color2} {shape2}",
    }


def caption_prompt(scene: Scene) -> dict:
    """A training prompt that is a full canonical caption; checked strictly against its layout."""
    return {"tag": CAPTION_TAG, "include": [], "prompt": caption(scene)}


def all_prompts(tag: str) -> list[dict]:
    """Every distinct prompt of a tag, in a fixed order."""
    pairs = [(a, b) for a, b in itertools.permutations(P.SHAPES, 2)]
    if tag == "single_object":
        return [single_object(s) for s in P.SHAPES]
    if tag == "two_object":
        return [two_object(a, b) for a, b in pairs]
    if tag == "counting":
        return [counting(s, n) for s in P.SHAPES for n in COUNTS]
    if tag == "colors":
        return [colors(s, c) for s in P.SHAPES for c in P.COLORS]
    if tag == "position":
        return [position(a, r, b) for a, b in pairs for r in RELATIONS]
    if tag == "color_attr":
        return [color_attr(a, c1, b, c2) for a, b in pairs for c1 in P.COLORS for c2 in P.COLORS]
    raise ValueError(f"unknown text-to-image tag {tag!r}")


def sample_prompts(rng: np.random.Generator, tag: str, n: int) -> list[dict]:
    """``n`` prompts of a tag, as balanced over its distinct prompts as possible (``balanced``)."""
    return balanced(rng, all_prompts(tag), n)


def sample_prompt(rng: np.random.Generator, tag: str | None = None) -> dict:
    """One random prompt: a uniform tag (unless given), then a uniform prompt of that tag."""
    tag = TAGS[rng.integers(len(TAGS))] if tag is None else tag
    pool = all_prompts(tag)
    return pool[rng.integers(len(pool))]


# ---------------------------------------------------------------------------------------------------- checks


def _of(found: tuple[Found, ...], shape: str) -> list[Found]:
    return [f for f in found if f.obj.shape == shape]


def check_t2i(item: dict, detection: Detection) -> bool:
    """The lenient, GenEval-style verdict on one image (contract §4.1's table)."""
    tag, inc, found = item["tag"], item["include"], detection.found
    if tag == CAPTION_TAG:
        return check_strict(item, detection)
    if tag == "single_object":
        return len(_of(found, inc[0]["class"])) >= 1
    if tag == "two_object":
        return all(len(_of(found, c["class"])) >= 1 for c in inc)
    if tag == "counting":
        return len(_of(found, inc[0]["class"])) == inc[0]["count"]
    if tag == "colors":
        mine = _of(found, inc[0]["class"])
        if not mine:
            return False
        largest = max(f.area for f in mine)
        return all(f.obj.color == inc[0]["color"] for f in mine if f.area == largest)
    if tag == "position":
        refs, subjects, relation = _of(found, inc[0]["class"]), _of(found, inc[1]["class"]), inc[1]["position"][0]
        return bool(refs and subjects) and all(
            any(relation in relations(a.geometry, b.geometry) for b in refs) for a in subjects
        )
    if tag == "color_attr":
        return all(any(f.obj.color == c["color"] for f in _of(found, c["class"])) for c in inc)
    raise ValueError(f"unknown text-to-image tag {tag!r}")


def check_strict(item: dict, detection: Detection) -> bool:
    """The lenient verdict, and the image holds exactly the objects the prompt names on the default background.

    For a ``caption`` item: the detected layout equals the caption's (object multiset with regions, background).
    """
    if item["tag"] == CAPTION_TAG:
        try:
            return layout_of(detection.scene) == parse_caption(item["prompt"])
        except CaptionError:
            return False
    if detection.scene.background != P.DEFAULT_BACKGROUND or not check_t2i(item, detection):
        return False
    named = sorted((c["class"], c.get("color")) for c in item["include"] for _ in range(c["count"]))
    seen = sorted(
        (f.obj.shape, f.obj.color if any("color" in c for c in item["include"]) else None) for f in detection.found
    )
    return named == seen


# ---------------------------------------------------------------------------------------------------- scenes


def _required(item: dict, rng: np.random.Generator) -> tuple[list[tuple[str, str, str]], tuple[str, ...]]:
    """The objects a prompt needs (random colour/size where it names none) and the shapes extras may take."""
    specs = []
    for clause in item["include"]:
        for _ in range(clause["count"]):
            _, color, size = random_spec(rng)
            specs.append((clause["class"], clause.get("color", color), size))
    if item["tag"] == "counting":
        extra_shapes = tuple(s for s in P.SHAPES if s != item["include"][0]["class"])
    else:
        extra_shapes = P.SHAPES
    return specs, extra_shapes


def scene_for_prompt(
    item: dict, rng: np.random.Generator, resolution: int = P.DEFAULT_RESOLUTION, extras: bool = True
) -> Scene:
    """A random valid scene that passes the prompt's check.

    With ``extras`` (training data) up to 4 objects in all, unrelated ones added at random, as long as the check still
    passes; without (the oracle), exactly the named objects, so the strict check passes too.
    """
    if item["tag"] == CAPTION_TAG:
        return scene_for_caption(item["prompt"], rng, resolution)
    check: Callable[[dict, Detection], bool] = check_t2i if extras else check_strict
    for _ in range(10_000):
        specs, extra_shapes = _required(item, rng)
        if extras:
            specs += [random_spec(rng, extra_shapes) for _ in range(rng.integers(0, P.MAX_OBJECTS - len(specs) + 1))]
        scene = scene_with(rng, [specs[i] for i in rng.permutation(len(specs))], resolution)
        if scene is not None and check(item, detection_of(scene)):
            return scene
    raise RuntimeError(f"no scene found for prompt {item['prompt']!r}")  # pragma: no cover
