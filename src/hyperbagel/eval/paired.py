"""Paired statistics of a model against a baseline on the same items, seeds and initial noise.

Per image ``(item, sample)`` each run has a score (GenEval-Shapes: 0/1 correct; GEdit-Shapes: the overall
``O = √(SC·PQ)``, with SC as its 0/1 verdict). Overall scores are the unweighted mean over tags of the per-tag
means, as the scorers compute them. The bootstrap resamples items within each tag (an item's samples stay
together: they share a prompt), and McNemar's exact test compares the 0/1 verdicts of the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from hyperbagel.errors import HyperBagelError
from hyperbagel.world import folders
from hyperbagel.world.tasks import edit as edit_tasks
from hyperbagel.world.tasks.match import judge as t2i_judge


@dataclass(frozen=True)
class PerImage:
    tags: np.ndarray  # [items] tag of each item
    score: np.ndarray  # [items, samples] the suite's score per image
    verdict: np.ndarray  # [items, samples] bool: the 0/1 verdict per image


def judge_image(task: str, item: dict, image: np.ndarray) -> tuple[float, bool]:
    """One image's score and 0/1 verdict: GenEval-Shapes (``generate``) or GEdit-Shapes (``edit``: O and SC)."""
    if task == "generate":
        ok = t2i_judge(item, image)
        return float(ok), ok
    s = edit_tasks.check_edit(item, image)
    return s.o, bool(s.sc)


def per_image(out: str | Path, task: str) -> PerImage:
    """Every image of a result folder (contract layout) judged, with its item's tag."""
    records = folders.read_records(Path(out))
    counts = {len(r.samples) for r in records}
    if len(counts) != 1:
        raise HyperBagelError(f"{out}: items hold different numbers of samples ({sorted(counts)})")
    judged = [[judge_image(task, r.item, im) for im in r.samples] for r in records]
    return PerImage(np.array([r.item["tag"] for r in records]), np.array([[s for s, _ in j] for j in judged]),
                    np.array([[v for _, v in j] for j in judged], dtype=bool))


def compare_folders(base: str | Path, model: str | Path, task: str, resamples: int = 2000, seed: int = 0) -> dict:
    """``compare`` of two result folders of the same suite items and samples (e.g. the same seeds)."""
    a, b = per_image(base, task), per_image(model, task)
    try:
        paired = compare(a, b, resamples, seed)
    except ValueError:
        raise HyperBagelError(f"{base} and {model} do not hold the same items and samples") from None
    return {"base": str(base), "base_overall": overall(a.tags, a.score), **paired}


def overall(tags: np.ndarray, score: np.ndarray) -> float:
    """Mean over tags of the per-tag mean image score."""
    return float(np.mean([score[tags == t].mean() for t in np.unique(tags)]))


def mcnemar_p(base: np.ndarray, model: np.ndarray) -> float:
    """Exact two-sided McNemar p-value on paired 0/1 verdicts (1.0 when there are no discordant pairs)."""
    base, model = np.asarray(base, bool).ravel(), np.asarray(model, bool).ravel()
    b = int(np.sum(base & ~model))
    c = int(np.sum(~base & model))
    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


def bootstrap_diff_ci(tags: np.ndarray, base: np.ndarray, model: np.ndarray, resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``overall(model) − overall(base)``, resampling items within tags."""
    rng = np.random.default_rng(seed)
    diff = (model - base).mean(axis=1)  # per item: mean over its samples
    per_tag = [diff[tags == t] for t in np.unique(tags)]
    stats = np.zeros(resamples)
    for values in per_tag:
        idx = rng.integers(0, len(values), size=(resamples, len(values)))
        stats += values[idx].mean(axis=1)
    stats /= len(per_tag)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def compare(base: PerImage, model: PerImage, resamples: int = 2000, seed: int = 0) -> dict:
    """Overall difference, its bootstrap CI, McNemar's p and per-image verdict agreement."""
    if base.score.shape != model.score.shape or not np.array_equal(base.tags, model.tags):
        raise ValueError("paired runs must cover the same items and samples")
    lo, hi = bootstrap_diff_ci(base.tags, base.score, model.score, resamples, seed)
    return {
        "diff": overall(model.tags, model.score) - overall(base.tags, base.score),
        "ci95": [lo, hi],
        "mcnemar_p": mcnemar_p(base.verdict, model.verdict),
        "agreement": float(np.mean(base.verdict == model.verdict)),
        "discordant": [int(np.sum(base.verdict & ~model.verdict)), int(np.sum(~base.verdict & model.verdict))],
    }


def diff_cell(vs: dict) -> str:
    """``compare``'s difference with its 95 % CI, as the tables print it: ``+0.012 [-0.020, +0.041]``."""
    return f"{vs['diff']:+.3f} [{vs['ci95'][0]:+.3f}, {vs['ci95'][1]:+.3f}]"
