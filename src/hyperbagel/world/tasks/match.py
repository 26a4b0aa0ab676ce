"""Text–image pairs for a reward model: a text-to-image prompt (GenEval-style, or a full caption) with a scene that
matches it, or a mismatched or corrupted one.

``sample_pair`` draws the prompt and its scene, then keeps the pair (``matched``) or spoils it one way:
``text`` — the prompt of another scene (a same-tag prompt, or the caption of an edited scene), ``image`` — the scene
edited by one of the editing task's operations (recolour, reshape, remove, add, move, background), ``other`` — an
unrelated scene. The label is never assumed from the kind: it is the exact judge's verdict on the image
(``judge``), so a spoiled pair the prompt still describes (an extra object beside ``a red circle``) counts as a match.
"""

from __future__ import annotations

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.detect import detect
from hyperbagel.world.scene import Scene, sample_scene
from hyperbagel.world.tasks import t2i
from hyperbagel.world.tasks.edit import EDIT_TAGS, sample_edit

KINDS: tuple[str, ...] = ("matched", "text", "image", "other")
DAMAGES: tuple[str, ...] = ("erase", "blur", "noise", "tint")


def prompt_and_scene(rng: np.random.Generator, resolution: int, caption_share: float) -> tuple[dict, Scene]:
    """A text-to-image item and a scene it describes: a full caption (``caption_share``) or a GenEval-style prompt."""
    if rng.random() < caption_share:
        scene = sample_scene(rng, resolution)
        return t2i.caption_prompt(scene), scene
    item = t2i.sample_prompt(rng)
    return item, t2i.scene_for_prompt(item, rng, resolution)


def edited(rng: np.random.Generator, scene: Scene) -> Scene:
    """``scene`` after one random possible edit (a random tag among those possible on it)."""
    for i in rng.permutation(len(EDIT_TAGS)):
        sampled = sample_edit(rng, scene, EDIT_TAGS[i])
        if sampled is not None:
            return sampled[1]
    raise RuntimeError("no edit is possible on this scene")  # pragma: no cover (background always is)


def sample_pair(rng: np.random.Generator, resolution: int = P.DEFAULT_RESOLUTION, caption_share: float = 0.4,
                matched_share: float = 0.5) -> tuple[dict, Scene, str]:
    """``(item, scene, kind)``: the prompt item, the scene to show with it, and how the pair was made."""
    item, scene = prompt_and_scene(rng, resolution, caption_share)
    if rng.random() < matched_share:
        return item, scene, "matched"
    kind = KINDS[1 + rng.integers(len(KINDS) - 1)]
    if kind == "image":
        return item, edited(rng, scene), kind
    if kind == "other":
        return item, sample_scene(rng, resolution), kind
    if item["tag"] == t2i.CAPTION_TAG:
        return t2i.caption_prompt(edited(rng, scene)), scene, kind
    return t2i.sample_prompt(rng, item["tag"]), scene, kind


def damage(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Pixel damage of the kinds a generator makes: a rectangle painted over with the corner colour (a broken or
    missing shape), blur, noise or a colour cast. The judge decides whether the prompt still holds."""
    out = image.astype(np.float32)
    R = image.shape[0]
    kind = DAMAGES[rng.integers(len(DAMAGES))]
    if kind == "erase":
        h, w = rng.integers(3, 13, size=2)
        y, x = rng.integers(0, R - h), rng.integers(0, R - w)
        out[y:y + h, x:x + w] = out[0, 0]
    elif kind == "blur":
        from scipy import ndimage

        out = ndimage.gaussian_filter(out, sigma=(rng.uniform(0.7, 2.5),) * 2 + (0,))
    elif kind == "noise":
        out += rng.normal(0, rng.uniform(8, 60), out.shape)
    else:
        out += rng.uniform(-60, 60, 3)
    return np.clip(out, 0, 255).astype(np.uint8)


def judge(item: dict, image: np.ndarray) -> bool:
    """The exact judge: does the image pass the prompt's check (captions: exactly the caption's layout)?"""
    return bool(t2i.check_t2i(item, detect(image)))
