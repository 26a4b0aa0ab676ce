"""Understanding tasks: seven question templates with short canonical answers, and descriptions (contract §4.3).

An item is ``{"id", "template", "question", "answer", "scene"}`` (scene as JSON; the image is its render).
``answer_for(question, scene)`` answers any question in the grammar from the scene graph, or returns None when the
question is ill-posed there (its object phrase is not unique, or a relation has no single answer).
"""

from __future__ import annotations

import re

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.captions import CaptionError, caption, parse_caption
from hyperbagel.world.regions import REGIONS, RELATIONS, relations
from hyperbagel.world.scene import Obj, Scene, random_spec, sample_scene, scene_to_json, scene_with
from hyperbagel.world.tasks.edit import referring_phrase

TEMPLATES: tuple[str, ...] = ("exist", "count", "color", "shape", "region", "relation", "compare")
DESCRIBE = "describe"
DESCRIBE_QUESTION = "describe the image."
ANSWERS: dict[str, tuple[str, ...]] = {
    "exist": ("yes", "no"),
    "count": P.NUMBER_WORDS,
    "color": P.COLORS,
    "shape": P.SHAPES,
    "region": REGIONS,
    "relation": P.SHAPES,
    "compare": ("yes", "no"),
}

_SHAPE = "|".join(P.SHAPES)
_COLOR = "|".join(P.COLORS)
_REF = rf"the (?:(?P<rcolor>{_COLOR}) )?(?P<rshape>{_SHAPE})"
_QUESTIONS = {
    "exist": re.compile(rf"is there a (?P<color>{_COLOR}) (?P<shape>{_SHAPE})\?$"),
    "count": re.compile(rf"how many (?P<shape>{_SHAPE})s are there\?$"),
    "color": re.compile(rf"what color is the (?P<shape>{_SHAPE})\?$"),
    "shape": re.compile(rf"what shape is the (?P<color>{_COLOR}) object\?$"),
    "region": re.compile(rf"where is {_REF}\?$"),
    "relation": re.compile(rf"what shape is (?P<relation>{'|'.join(RELATIONS)}) {_REF}\?$"),
    "compare": re.compile(rf"are there more (?P<shape1>{_SHAPE})s than (?P<shape2>{_SHAPE})s\?$"),
}


def question_template(question: str) -> str | None:
    if question == DESCRIBE_QUESTION:
        return DESCRIBE
    return next((t for t, pattern in _QUESTIONS.items() if pattern.match(question)), None)


def _the(scene: Scene, shape: str, color: str | None) -> Obj | None:
    matches = [o for o in scene.objects if o.shape == shape and (color is None or o.color == color)]
    return matches[0] if len(matches) == 1 else None


def _geometry(o: Obj, resolution: int) -> tuple[float, float, float, float]:
    s = o.side(resolution)
    return (*o.centre(resolution), s, s)


def answer_for(question: str, scene: Scene) -> str | None:
    """The canonical answer to ``question`` about ``scene``, or None when it has no single answer."""
    R = scene.resolution
    if question == DESCRIBE_QUESTION:
        return caption(scene)
    template = question_template(question)
    if template is None:
        return None
    m = _QUESTIONS[template].match(question)
    objs = scene.objects
    if template == "exist":
        return "yes" if any(o.shape == m["shape"] and o.color == m["color"] for o in objs) else "no"
    if template == "count":
        return P.NUMBER_WORDS[sum(o.shape == m["shape"] for o in objs)]
    if template == "color":
        o = _the(scene, m["shape"], None)
        return None if o is None else o.color
    if template == "shape":
        matches = [o for o in objs if o.color == m["color"]]
        return matches[0].shape if len(matches) == 1 else None
    if template == "compare":
        count = {s: sum(o.shape == s for o in objs) for s in P.SHAPES}
        return "yes" if count[m["shape1"]] > count[m["shape2"]] else "no"
    ref = _the(scene, m["rshape"], m["rcolor"])
    if ref is None:
        return None
    if template == "region":
        return ref.region(R)
    # relation
    hits = [o for o in objs if o != ref and m["relation"] in relations(_geometry(o, R), _geometry(ref, R))]
    return hits[0].shape if len(hits) == 1 else None


def normalise(answer: str) -> str:
    """How predictions are compared: lowercase, surrounding whitespace and one trailing ``.`` dropped."""
    text = answer.strip().lower()
    return text[:-1].strip() if text.endswith(".") else text


def is_correct(item: dict, prediction: str) -> bool:
    """Exact match after ``normalise``; a description is right when it parses back to exactly the scene's layout."""
    if item["template"] == DESCRIBE:
        try:
            return parse_caption(prediction.strip().lower()) == parse_caption(item["answer"])
        except CaptionError:
            return False
    return normalise(prediction) == item["answer"]


# ---------------------------------------------------------------------------------------------------- generation


def _question(rng: np.random.Generator, template: str, answer: str, resolution: int,
              n_objects: int | None = None) -> tuple[str, Scene] | None:
    """One attempt at a question of ``template`` whose answer is ``answer``, with its scene (or None)."""
    R = resolution
    pick = lambda seq: seq[rng.integers(len(seq))]  # noqa: E731
    if template == "exist":
        scene = sample_scene(rng, R, n_objects)
        present = sorted({(o.color, o.shape) for o in scene.objects})
        absent = [(c, s) for c in P.COLORS for s in P.SHAPES if (c, s) not in present]
        color, shape = pick(present if answer == "yes" else absent)
        return f"is there a {color} {shape}?", scene
    if template == "count":
        n = P.NUMBER_WORDS.index(answer)
        shape = pick(P.SHAPES)
        others = tuple(s for s in P.SHAPES if s != shape)
        k = int(rng.integers(max(0, 1 - n), P.MAX_OBJECTS - n + 1))
        specs = [(shape, *random_spec(rng)[1:]) for _ in range(n)] + [random_spec(rng, others) for _ in range(k)]
        scene = scene_with(rng, specs, R)
        return None if scene is None else (f"how many {shape}s are there?", scene)
    if template == "color":
        shape = pick(P.SHAPES)
        others = tuple(s for s in P.SHAPES if s != shape)
        specs = [(shape, answer, pick(P.SIZES))] + [random_spec(rng, others) for _ in range(rng.integers(0, 4))]
        scene = scene_with(rng, specs, R)
        return None if scene is None else (f"what color is the {shape}?", scene)
    if template == "shape":
        color = pick(P.COLORS)
        others = [c for c in P.COLORS if c != color]
        specs = [(answer, color, pick(P.SIZES))]
        specs += [(pick(P.SHAPES), pick(others), pick(P.SIZES)) for _ in range(rng.integers(0, 4))]
        scene = scene_with(rng, specs, R)
        return None if scene is None else (f"what shape is the {color} object?", scene)
    if template == "region":
        specs = [random_spec(rng) for _ in range(rng.integers(1, 5))]
        scene = scene_with(rng, specs, R, regions=[answer] + [None] * (len(specs) - 1))
        if scene is None:
            return None
        target = next(o for o in scene.objects if o.region(R) == answer and (o.shape, o.color, o.size) == specs[0])
        ref = referring_phrase(scene, target)
        return None if ref is None else (f"where is {ref}?", scene)
    if template == "relation":
        scene = sample_scene(rng, R, n_objects=int(rng.integers(2, 5)))
        ref = referring_phrase(scene, pick(scene.objects))
        question = f"what shape is {pick(RELATIONS)} {ref}?"
        return (question, scene) if ref is not None and answer_for(question, scene) == answer else None
    if template == "compare":
        scene = sample_scene(rng, R, n_objects)
        shape1, shape2 = (P.SHAPES[i] for i in rng.choice(len(P.SHAPES), size=2, replace=False))
        question = f"are there more {shape1}s than {shape2}s?"
        return (question, scene) if answer_for(question, scene) == answer else None
    raise ValueError(f"unknown question template {template!r}")


FREE_SCENE = ("exist", "compare")  # templates whose scene is any scene (the answer is read off it afterwards)


def sample_question(
    rng: np.random.Generator,
    template: str,
    answer: str | None = None,
    resolution: int = P.DEFAULT_RESOLUTION,
    item_id: str = "",
    n_objects: int | None = None,
) -> dict:
    """A question item of ``template`` (with the given answer, else a uniformly random one) on a random scene.

    ``n_objects`` fixes the object count of the scene for the templates that draw it freely (``FREE_SCENE``: exist
    and compare); training curricula use it, the suites never do (None: the world's range, the same draws as ever).
    """
    if n_objects is not None and template not in FREE_SCENE:
        raise ValueError(f"n_objects applies to the {FREE_SCENE} templates only, not {template!r}")
    answer = ANSWERS[template][rng.integers(len(ANSWERS[template]))] if answer is None else answer
    while True:
        made = _question(rng, template, answer, resolution, n_objects)
        if made is not None:
            question, scene = made
            assert answer_for(question, scene) == answer
            return {
                "id": item_id,
                "template": template,
                "question": question,
                "answer": answer,
                "scene": scene_to_json(scene),
            }


DESCRIPTION_OBJECTS = (3, 4)  # 3–4 objects make captions of 24–36 words: the contract's 20–60-token workload


def sample_description(rng: np.random.Generator, resolution: int = P.DEFAULT_RESOLUTION, item_id: str = "") -> dict:
    """``describe the image.`` on a random scene of 3–4 objects; the answer is its canonical caption."""
    scene = sample_scene(rng, resolution, n_objects=int(rng.choice(DESCRIPTION_OBJECTS)))
    return {
        "id": item_id,
        "template": DESCRIBE,
        "question": DESCRIBE_QUESTION,
        "answer": caption(scene),
        "scene": scene_to_json(scene),
    }
