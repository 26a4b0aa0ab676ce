"""Controls for the judges: the oracle (perfect answers: the judges must score them 1.0) and chance (renders of
unrelated random scenes, uniformly random answers: how high a score means nothing).

Both produce records in memory (``*_records``) and write the contract's layouts (``write_control``). Sample ``j`` of
item ``i`` draws from ``numpy.random.default_rng([seed, i, j])``, so any image can be regenerated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyperbagel.errors import HyperBagelError
from hyperbagel.world.captions import caption
from hyperbagel.world.folders import Record, write_predictions, write_record, write_run
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene, scene_from_json
from hyperbagel.world.suites import SAMPLES_PER_PROMPT, SUITES, load_suite
from hyperbagel.world.tasks import vqa
from hyperbagel.world.tasks.t2i import scene_for_prompt

ORACLE_SEED = 1234
CHANCE_SEED = 4321
CONTROLS = ("oracle", "chance")


def _rng(seed: int, i: int, j: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, i, j])


def geneval_records(items: list[dict], control: str, samples: int = SAMPLES_PER_PROMPT) -> list[Record]:
    """Oracle: renders of minimal scenes satisfying each prompt (strictly). Chance: renders of random scenes."""
    records = []
    for i, item in enumerate(items):
        images = []
        for j in range(samples):
            if control == "oracle":
                scene = scene_for_prompt(item, _rng(ORACLE_SEED, i, j), extras=False)
            else:
                scene = sample_scene(_rng(CHANCE_SEED, i, j))
            images.append(render(scene))
        records.append(Record(item, tuple(images)))
    return records


def gedit_records(items: list[dict], control: str) -> list[Record]:
    """Oracle: the target render. Chance: the render of a random scene."""
    records = []
    for i, item in enumerate(items):
        source = scene_from_json(item["source"])
        if control == "oracle":
            out = scene_from_json(item["target"])
        else:
            out = sample_scene(_rng(CHANCE_SEED, i), source.resolution)
        records.append(Record(item, (render(out),), render(source)))
    return records


def vqa_predictions(items: list[dict], control: str) -> list[dict]:
    """Oracle: the true answers. Chance: a uniformly random answer of the item's template (a random scene's caption
    for descriptions)."""
    predictions = []
    for i, item in enumerate(items):
        if control == "oracle":
            answer = item["answer"]
        elif item["template"] == vqa.DESCRIBE:
            answer = caption(sample_scene(_rng(CHANCE_SEED, i)))
        else:
            pool = vqa.ANSWERS[item["template"]]
            answer = pool[_rng(CHANCE_SEED, i).integers(len(pool))]
        predictions.append({"id": item["id"], "answer": answer})
    return predictions


def run_info(control: str, suite: str, limit: int | None) -> dict:
    return {
        "model": control,
        "sampler": None,
        "nfe": 0,
        "seed": ORACLE_SEED if control == "oracle" else CHANCE_SEED,
        "suite": suite,
        "limit": limit,
    }


def write_control(control: str, suite: str, out: Path, limit: int | None = None) -> Path:
    """Write the oracle's or chance's answers for a suite in the contract's layout; returns what to score."""
    if control not in CONTROLS:
        raise HyperBagelError(f"unknown control {control!r}")
    if suite not in SUITES:
        raise HyperBagelError(f"unknown suite {suite!r}; the suites are {', '.join(SUITES)}")
    out = Path(out)
    items = load_suite(suite, limit)
    write_run(out, run_info(control, suite, limit))
    if suite == "vqa-shapes":
        return write_predictions(out, vqa_predictions(items, control))
    records = geneval_records(items, control) if suite == "geneval-shapes" else gedit_records(items, control)
    for i, record in enumerate(records):
        write_record(out, i, record.item, list(record.samples), record.source)
    return out
