#!/usr/bin/env python3
"""The probes' table and projection (issue 17 item 1) from what ``gpu_probes.py`` exported.

For every arm: its step time on the GPU, each suite's score at every snapshot, and a least-squares fit of the score
against log2(steps) over the snapshots, extrapolated to the steps the arm makes in the 12-hour budget on this CPU
(``--cpu-seconds ARM=S``: its measured seconds per step here; the budget minus the ViT pre-training). A log-linear
fit is what the runs so far look like (docs/teacher.md); it is a projection, not a measurement.

    python scripts/probe_table.py docs/results/probes-h200-2 --cpu-seconds base=5.4,narrow-12=3.9
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

SUITES = ("vqa-shapes", "geneval-shapes", "gedit-shapes")
SHORT = {"vqa-shapes": "vqa", "geneval-shapes": "GenEval", "gedit-shapes": "GEdit"}


def step_seconds(log: list[str]) -> float | None:
    """Seconds per step between the first and the last log line of a run (``step N ... (T s)``)."""
    points = [(int(m[1]), float(m[2])) for line in log if (m := re.search(r"step (\d+) .*\(([\d.]+) s\)", line))]
    if len(points) < 2:
        return None
    (s0, t0), (s1, t1) = points[0], points[-1]
    return (t1 - t0) / (s1 - s0)


def log_fit(steps: list[int], scores: list[float]) -> tuple[float, float]:
    """Least squares ``score ≈ a + b·log2(steps)``; returns (a, b)."""
    xs = [math.log2(s) for s in steps]
    mx, my = sum(xs) / len(xs), sum(scores) / len(scores)
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, scores)) / var if var else 0.0
    return my - b * mx, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--cpu-seconds", default="", help="ARM=SECONDS_PER_STEP,... measured on this CPU")
    ap.add_argument("--budget-hours", type=float, default=12.0)
    ap.add_argument("--vit-seconds", type=float, default=200.0, help="the ViT pre-training's share of the budget")
    args = ap.parse_args()
    cpu = {k: float(v) for k, v in (item.split("=") for item in args.cpu_seconds.split(",") if item)}
    budget = args.budget_hours * 3600 - args.vit_seconds
    print("| arm | GPU s / step | " + " | ".join(f"{SHORT[s]} by step" for s in SUITES)
          + " | CPU s / step | steps in budget | projected vqa / GenEval / GEdit |")
    print("|---" * 7 + "|")
    for path in sorted(args.folder.glob("*.json")):
        report = json.loads(path.read_text())
        if "arm" not in report:
            continue
        arm, scores = report["arm"], report.get("scores", {})
        steps = sorted(int(s) for s in scores)
        cells = [", ".join(f"{s}: {scores[str(s)][suite]['overall']:.3f}" for s in steps) for suite in SUITES]
        gpu = step_seconds(report.get("log", []))
        projected = "—"
        if arm in cpu and len(steps) >= 3:
            n = budget / cpu[arm]
            fits = [log_fit(steps, [scores[str(s)][suite]["overall"] for s in steps]) for suite in SUITES]
            projected = " / ".join(f"{a + b * math.log2(n):.2f}" for a, b in fits)
        row = [arm, f"{gpu:.2f}" if gpu else "—", *cells, f"{cpu[arm]:.2f}" if arm in cpu else "—",
               f"{budget / cpu[arm]:,.0f}" if arm in cpu else "—", projected]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
