"""vqa-shapes accuracy per template and per number of objects in the scene, from an eval's predictions: where
understanding fails as scenes get crowded.

    python scripts/vqa_by_objects.py OUT/predictions.jsonl     # OUT: an `eval-model --suite vqa-shapes` folder
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from hyperbagel.world import suites
from hyperbagel.world.tasks import vqa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions")
    args = ap.parse_args()
    items = {it["id"]: it for it in suites.load_suite("vqa-shapes")}
    right, seen = defaultdict(int), defaultdict(int)
    with open(args.predictions) as f:
        for line in f:
            pred = json.loads(line)
            item = items[pred["id"]]
            n = len(item["scene"]["objects"])
            keys = [item["template"]] + (["all questions"] if item["template"] != vqa.DESCRIBE else [])
            for key in keys:
                right[key, n] += vqa.is_correct(item, pred["answer"])
                seen[key, n] += 1
    counts = sorted({n for _, n in seen})
    print("| template | " + " | ".join(f"{n} object{'s' * (n > 1)}" for n in counts) + " |")
    print("|---" * (len(counts) + 1) + "|")
    for template in (*vqa.TEMPLATES, vqa.DESCRIBE, "all questions"):
        cells = [f"{right[template, n]}/{seen[template, n]}" if seen[template, n] else "" for n in counts]
        if any(cells):
            print(f"| {template} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
