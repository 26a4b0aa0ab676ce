"""A contact sheet of the world: sample scenes with captions, prompts, edits and questions, as one PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hyperbagel.world.captions import caption
from hyperbagel.world.render import render
from hyperbagel.world.scene import Scene, sample_scene, scene_from_json
from hyperbagel.world.tasks import edit, t2i, vqa

SCALE = 3  # a 64 px image shows as 192 px
PAD = 8
CELL = 2 * 64 * SCALE + 3 * PAD  # wide enough for an edit's source and target side by side
TEXT_LINES = 5
LINE = 13


def _cells(rng: np.random.Generator, n: int) -> list[tuple[str, list[tuple[list[np.ndarray], str]]]]:
    """Sections of (images, text) cells."""
    scenes = [sample_scene(rng) for _ in range(n)]
    prompts = [t2i.sample_prompt(rng, t2i.TAGS[i % len(t2i.TAGS)]) for i in range(n)]
    edits = [edit.sample_edit_item(rng, edit.EDIT_TAGS[i % len(edit.EDIT_TAGS)]) for i in range(n)]
    templates = vqa.TEMPLATES + (vqa.DESCRIBE,)
    questions = [
        vqa.sample_description(rng) if templates[i % len(templates)] == vqa.DESCRIBE
        else vqa.sample_question(rng, templates[i % len(templates)])
        for i in range(n)
    ]  # fmt: skip
    return [
        ("scenes and their captions", [([render(s)], caption(s)) for s in scenes]),
        (
            "text-to-image prompts (a scene that passes)",
            [([render(t2i.scene_for_prompt(p, rng))], f"[{p['tag']}] {p['prompt']}") for p in prompts],
        ),
        (
            "edits: source -> target",
            [
                (
                    [render(scene_from_json(e["source"])), render(scene_from_json(e["target"]))],
                    f"[{e['tag']}] {e['instruction']}",
                )
                for e in edits
            ],
        ),
        (
            "questions and answers",
            [
                ([render(scene_from_json(q["scene"]))], f"[{q['template']}] {q['question']} -> {q['answer']}")
                for q in questions
            ],
        ),
    ]


def contact_sheet(rng: np.random.Generator, n: int = 6) -> Image.Image:
    """``n`` samples of each kind: scenes, prompts, edits and questions, each with its text underneath."""
    sections = _cells(rng, n)
    font = ImageFont.load_default()
    cell_h = 64 * SCALE + PAD + TEXT_LINES * LINE + PAD
    title_h = 2 * LINE
    width = n * CELL + PAD
    height = len(sections) * (title_h + cell_h) + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    chars = max(20, int(CELL / max(1.0, draw.textlength("m", font=font))))
    y = PAD
    for title, cells in sections:
        draw.text((PAD, y + 4), title, fill=(0, 0, 0), font=font)
        y += title_h
        for k, (images, text) in enumerate(cells):
            x = PAD + k * CELL
            for m, image in enumerate(images):
                big = Image.fromarray(image).resize((image.shape[1] * SCALE, image.shape[0] * SCALE), Image.NEAREST)
                sheet.paste(big, (x + m * (64 * SCALE + PAD), y))
            for line_no, line in enumerate(textwrap.wrap(text, chars)[:TEXT_LINES]):
                draw.text((x, y + 64 * SCALE + PAD + line_no * LINE), line, fill=(0, 0, 0), font=font)
        y += cell_h
    return sheet


def write_contact_sheet(path: Path, seed: int = 0, n: int = 6) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(np.random.default_rng(seed), n).save(path)
    return path


def scene_image(scene: Scene, scale: int = SCALE) -> Image.Image:
    """One scene as an upscaled PIL image (nearest neighbour, so pixels stay sharp)."""
    image = render(scene)
    return Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
