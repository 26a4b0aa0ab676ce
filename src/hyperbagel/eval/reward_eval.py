"""How well a reward agrees with the exact judge: Spearman's rank correlation (ties get average ranks, so a
pass/fail judge gives the rank-biserial form), the AUC of telling passes from failures, and mean rewards by verdict."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ; NaN when either side is constant (no ranking to agree with)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random pass > score of a random failure), ties counting ½; NaN without both kinds."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def agreement(scores: np.ndarray, labels: np.ndarray, kinds: list[str] | None = None) -> dict:
    """Spearman, AUC, the judge's pass rate and mean reward of passes and failures (per kind too, when given)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if len(x) else math.nan

    out = {"n": int(len(scores)), "judge_mean": mean(labels.astype(np.float64)),
           "spearman": spearman(scores, labels), "auc": auc(scores, labels),
           "reward_pass": mean(scores[labels]), "reward_fail": mean(scores[~labels])}
    if kinds is not None:
        k = np.asarray(kinds)
        out["by_kind"] = {name: agreement(scores[k == name], labels[k == name]) for name in dict.fromkeys(kinds)}
    return out
