"""One picture of what a model does: text-to-image, edits and answers on the first items of each suite, judged.

Items are the first of each tag of geneval-shapes, gedit-shapes and vqa-shapes (``suites.spread``: never cherry-picked),
seeds follow the evaluation rule (``eval/model_eval.py``), and every tile carries the judge's verdict (ok / x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hyperbagel.eval.model_eval import sample_seed
from hyperbagel.pipeline import Pipeline
from hyperbagel.world import suites
from hyperbagel.world.detect import detect
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json
from hyperbagel.world.tasks import t2i, vqa
from hyperbagel.world.tasks.edit import check_edit

TILE, GAP, CAPTION, WIDTH = 128, 8, 44, 40  # pixels per tile, between tiles, caption height; characters per line


def _wrap(text: str) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) >= WIDTH:
            lines.append(line)
            line = ""
        line += word + " "
    return "\n".join([*lines, line][:3])


def _tile(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((TILE, TILE), Image.NEAREST)


def model_sheet(ckpt: Path, out: Path, per_row: int = 6) -> dict:
    """Write the PNG and return the verdicts: ``{"generate": [...], "edit": [...], "understand": [...]}``."""
    pipe = Pipeline.from_pretrained(ckpt)
    rows: list[list[tuple[np.ndarray | None, np.ndarray, str, bool]]] = []
    prompts = suites.spread(suites.load_suite("geneval-shapes"), "tag", per_row)
    res = pipe.generate([it["prompt"] for _, it in prompts], [sample_seed(0, i, 0) for i, _ in prompts])
    rows.append([(None, img, it["prompt"], t2i.check_t2i(it, detect(img)))
                 for (_, it), img in zip(prompts, res.images)])
    edits = suites.spread(suites.load_suite("gedit-shapes"), "tag", per_row)
    sources = [render(scene_from_json(it["source"])) for _, it in edits]
    res = pipe.edit(sources, [it["instruction"] for _, it in edits], [sample_seed(0, i, 0) for i, _ in edits])
    rows.append([(src, img, it["instruction"], check_edit(it, img).sc == 1.0)
                 for src, (_, it), img in zip(sources, edits, res.images)])
    questions = suites.spread(suites.load_suite("vqa-shapes"), "template", per_row)
    images = [render(scene_from_json(it["scene"])) for _, it in questions]
    res = pipe.understand(images, [it["question"] for _, it in questions], 80)
    rows.append([(None, img, f"{it['question']} -> {ans}", vqa.is_correct(it, ans))
                 for img, (_, it), ans in zip(images, questions, res.texts)])

    col = 2 * TILE + GAP  # an edit shows source | result
    sheet = Image.new("RGB", (per_row * (col + GAP), len(rows) * (TILE + CAPTION + GAP)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = r * (TILE + CAPTION + GAP)
        for c, (source, image, text, ok) in enumerate(row):
            x = c * (col + GAP)
            if source is not None:
                sheet.paste(_tile(source), (x, y))
                x += TILE + 2
            sheet.paste(_tile(image), (x, y))
            draw.multiline_text((c * (col + GAP), y + TILE + 2), ("ok " if ok else "x ") + _wrap(text),
                                fill=(0, 110, 0) if ok else (170, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    names = ("generate", "edit", "understand")
    return {name: [{"text": text, "ok": bool(ok)} for _, _, text, ok in row] for name, row in zip(names, rows)}
