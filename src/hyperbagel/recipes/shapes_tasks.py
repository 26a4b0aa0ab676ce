"""Shapes World training samples for the unified model, as block lists (``model/sequence.py``).

Three groups, each batched on its own so padding stays small:
- ``gen``: text-to-image (GenEval-tag prompts and full captions) and think mode (prompt, plan with loss, image);
- ``edit``: [clean VAE source, ViT source, instruction, noised target];
- ``und``: [ViT image, question, answer with loss] (VQA and descriptions), and the interleaved case where the context
  also holds the clean latents of the image, as after a generation or an edit.
CFG dropout drops the text (generation, editing) or both source images (editing), so the unconditional branches the
samplers use at inference are trained. Dropped blocks do not advance the RoPE counter, as at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.model.sequence import Block, Text, VaeImage, VitImage
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.world.captions import caption
from hyperbagel.world.palette import MAX_OBJECTS
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene, scene_from_json
from hyperbagel.world.tasks import edit as edit_tasks
from hyperbagel.world.tasks import t2i, think, vqa

GROUPS = ("gen", "edit", "und")


@dataclass(frozen=True)
class TaskMix:
    caption_prompts: float = 0.4  # of text-to-image prompts, the share that are full captions
    think: float = 0.2  # of generation samples, the share in think mode
    describe: float = 0.3  # of understanding samples, the share that are descriptions
    interleaved: float = 0.2  # of understanding samples, the share with clean latents in context
    drop_text: float = 0.1
    drop_images: float = 0.1
    caption_objects: int = 0  # at most this many objects in caption-prompt scenes (0: the world's range)
    # of question samples, the share drawn as yes/no questions (exist, compare) on scenes of 1..yes_no_objects
    # objects: a curriculum phase, since on the world's scenes they stay at chance (docs/teacher.md, "Yes/no")
    yes_no: float = 0.0
    yes_no_objects: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.yes_no <= 1.0:
            raise ValueError(f"TaskMix.yes_no must be in [0, 1], got {self.yes_no}")
        if not 1 <= self.yes_no_objects <= MAX_OBJECTS:
            raise ValueError(f"TaskMix.yes_no_objects must be in 1..{MAX_OBJECTS}, got {self.yes_no_objects}")


def _pixels(scene):
    return to_model_pixels(render(scene))


def gen_sample(rng: np.random.Generator, tok: ShapesTokenizer, resolution: int, mix: TaskMix) -> list[Block]:
    if rng.random() < mix.caption_prompts:
        n = int(rng.integers(1, mix.caption_objects + 1)) if mix.caption_objects else None
        scene = sample_scene(rng, resolution, n_objects=n)
        prompt = caption(scene)
        item = {"tag": t2i.CAPTION_TAG, "prompt": prompt}
    else:
        item = t2i.sample_prompt(rng)
        scene = None
    if rng.random() < mix.think:
        plan, scene = think.think_plan(item, rng, resolution)
        return [Text(tok.encode(item["prompt"])), Text(tok.encode(plan), loss=True), VaeImage(_pixels(scene), True)]
    if scene is None:
        scene = t2i.scene_for_prompt(item, rng, resolution)
    image = VaeImage(_pixels(scene), noised=True)
    if rng.random() < mix.drop_text:
        return [image]
    return [Text(tok.encode(item["prompt"])), image]


def edit_sample(rng: np.random.Generator, tok: ShapesTokenizer, resolution: int, mix: TaskMix) -> list[Block]:
    tag = edit_tasks.EDIT_TAGS[rng.integers(len(edit_tasks.EDIT_TAGS))]
    item = edit_tasks.sample_edit_item(rng, tag, resolution)
    src = _pixels(scene_from_json(item["source"]))
    target = VaeImage(_pixels(scene_from_json(item["target"])), noised=True)
    text = Text(tok.encode(item["instruction"]))
    u = rng.random()
    if u < mix.drop_text:
        return [VaeImage(src), VitImage(src), target]
    if u < mix.drop_text + mix.drop_images:
        return [text, target]
    return [VaeImage(src), VitImage(src), text, target]


def und_sample(rng: np.random.Generator, tok: ShapesTokenizer, resolution: int, mix: TaskMix) -> list[Block]:
    if rng.random() < mix.describe:
        item = vqa.sample_description(rng, resolution)
    elif mix.yes_no and rng.random() < mix.yes_no:  # no draw at all when off: the default data stay as they were
        template = vqa.FREE_SCENE[rng.integers(len(vqa.FREE_SCENE))]
        n = int(rng.integers(1, mix.yes_no_objects + 1))
        item = vqa.sample_question(rng, template, resolution=resolution, n_objects=n)
    else:
        item = vqa.sample_question(rng, vqa.TEMPLATES[rng.integers(len(vqa.TEMPLATES))], resolution=resolution)
    px = _pixels(scene_from_json(item["scene"]))
    qa = [Text(tok.encode(item["question"])), Text(tok.encode(item["answer"]), loss=True)]
    if rng.random() < mix.interleaved:
        return [VaeImage(px), VitImage(px), *qa]
    return [VitImage(px), *qa]


SAMPLERS = {"gen": gen_sample, "edit": edit_sample, "und": und_sample}
