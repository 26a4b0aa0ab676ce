"""Run a model on a Shapes World suite, write the contract's result folder (or predictions file) and score it.

Seeds derive from (base seed, item index, sample index) and are written into ``run.json``, so any image can be
regenerated on its own.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from hyperbagel.errors import HyperBagelError
from hyperbagel.flow.guidance import GuidanceConfig
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline
from hyperbagel.world import folders, scoring, suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json

SEED_RULE = "seed = base_seed * 1_000_000 + item_index * 100 + sample_index"


def sample_seed(base: int, item: int, sample: int) -> int:
    return base * 1_000_000 + item * 100 + sample


@dataclass
class EvalSettings:
    suite: str
    out: Path
    limit: int | None = None
    samples: int = 4  # images per prompt / edit
    batch: int = 8  # prompts (or edits, or questions) per model call
    seed: int = 0
    max_new_tokens: int = 80
    progress: bool = True
    precision: str = "fp32"
    guidance: GuidanceConfig | None = None  # image suites: None is the pipeline's default for the task


def suite_guidance(suite: str, text_scale: float | None = None, image_scale: float | None = None) -> GuidanceConfig:
    """The guidance an image suite samples with: the task's default (``T2I_GUIDANCE`` for generation,
    ``EDIT_GUIDANCE`` for editing) with the scales that are given replaced."""
    base = EDIT_GUIDANCE if suite == "gedit-shapes" else T2I_GUIDANCE
    given = {"text_scale": text_scale, "image_scale": image_scale}
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def _run_info(pipe_name: str, settings: EvalSettings, sampler: str, forwards: int, calls: int, images: int,
              seconds: float):
    return {
        "model": pipe_name,
        "sampler": sampler,
        "nfe": forwards / max(calls, 1),  # a forward runs a whole batch: forwards per image are forwards per call
        "forwards_total": forwards,
        "seconds": seconds,
        "seconds_per_output": seconds / max(images, 1),
        "seed_rule": SEED_RULE,
        "base_seed": settings.seed,
        "samples_per_item": settings.samples,
        "precision": settings.precision,
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "torch": torch.__version__,
    }


def default_sampler_name(pipe: Pipeline) -> str:
    """What ``pipe`` samples with by default: its student's Euler steps, else BAGEL's 50-point schedule."""
    return f"student-{pipe.student_info.steps}" if pipe.student is not None else "bagel-50"


def batches(items: list[dict], size: int, suite: str) -> list[list[int]]:
    """The indices of ``items`` a model call each, ``size`` at most. The image suites go in suite order (each
    item's seeds come from its index). In vqa-shapes the descriptions (tens of tokens) are batched together after
    the short answers (a word or two): a batch decodes until its longest answer ends, so one description among seven
    one-word answers made the whole batch decode for its length."""
    order = list(range(len(items)))
    if suite == "vqa-shapes":
        order.sort(key=lambda i: items[i]["template"] == "describe")
    return [order[lo: lo + size] for lo in range(0, len(order), size)]


def evaluate(pipe: Pipeline, model_name: str, settings: EvalSettings, sampler_name: str | None = None,
             generate_kw: dict | None = None) -> dict:
    """Generate answers for ``settings.suite`` with ``pipe`` and score them; returns the score dict."""
    sampler_name = sampler_name or default_sampler_name(pipe)
    if settings.suite not in suites.SUITES:
        raise HyperBagelError(f"unknown suite {settings.suite!r}; choose from {list(suites.SUITES)}")
    items = suites.load_suite(settings.suite, settings.limit)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    gk = dict(generate_kw or {})
    if settings.suite != "vqa-shapes":
        gk.setdefault("guidance", settings.guidance or suite_guidance(settings.suite))
    elif settings.guidance is not None:
        raise HyperBagelError("guidance applies to the image suites, not to vqa-shapes")
    bar = tqdm(total=len(items), desc=settings.suite, unit="item", disable=not settings.progress)
    start, forwards, calls, outputs = time.perf_counter(), 0, 0, 0
    answers: dict[int, str] = {}
    for idx in batches(items, settings.batch, settings.suite):
        chunk = [items[i] for i in idx]
        if settings.suite == "vqa-shapes":
            imgs = [render(scene_from_json(it["scene"])) for it in chunk]
            res = pipe.understand(imgs, [it["question"] for it in chunk], settings.max_new_tokens)
            answers.update(zip(idx, res.texts))
            forwards, calls, outputs = forwards + res.forwards, calls + 1, outputs + len(chunk)
        else:
            S = settings.samples
            seeds = [sample_seed(settings.seed, i, j) for i in idx for j in range(S)]
            if settings.suite == "geneval-shapes":
                res = pipe.generate([it["prompt"] for it in chunk for _ in range(S)], seeds, **gk)
                sources = [None] * len(chunk)
            else:
                sources = [render(scene_from_json(it["source"])) for it in chunk]
                res = pipe.edit([s for s in sources for _ in range(S)],
                                [it["instruction"] for it in chunk for _ in range(S)], seeds, **gk)
            for k, (i, it) in enumerate(zip(idx, chunk)):
                plans = res.plans[k * S:(k + 1) * S] if res.plans else None
                folders.write_record(out, i, it, res.images[k * S:(k + 1) * S], sources[k], plans)
            forwards, calls, outputs = forwards + res.forwards, calls + 1, outputs + len(res.images)
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    run = _run_info(model_name, settings, sampler_name, forwards, calls, outputs, seconds)
    if "guidance" in gk:
        run["guidance"] = asdict(gk["guidance"])
    folders.write_run(out, run)
    if settings.suite == "vqa-shapes":
        predictions = [{"id": items[i]["id"], "answer": answers[i]} for i in sorted(answers)]
        path = folders.write_predictions(out, predictions)
        return scoring.score_vqa(folders.read_predictions(path), run=run)
    if settings.suite == "geneval-shapes":
        return scoring.score_geneval_folder(out)
    return scoring.score_gedit_folder(out)
