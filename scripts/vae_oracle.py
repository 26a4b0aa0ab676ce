#!/usr/bin/env python3
"""The ceiling an autoencoder puts on every teacher that generates through it: the judges' scores of the oracle's
images (perfect answers; 1.0 by construction) after one encode–decode round trip (posterior sample, seeded).

    python scripts/vae_oracle.py runs/vae/ae.safetensors --json docs/results/vae-oracle.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.recipes.vae import load_autoencoder
from hyperbagel.world.folders import Record
from hyperbagel.world.oracle import gedit_records, geneval_records
from hyperbagel.world.scoring import score_gedit, score_geneval
from hyperbagel.world.suites import load_suite


def round_trip(vae, images: list[np.ndarray], generator: torch.Generator) -> list[np.ndarray]:
    x = torch.stack([to_model_pixels(im) for im in images])
    with torch.no_grad():
        out = vae.decode(vae.encode(x, generator=generator, sample=True))
    return [((o.clamp(-1, 1) * 0.5 + 0.5) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for o in out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vae")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    vae = load_autoencoder(args.vae).eval()
    generator = torch.Generator().manual_seed(0)
    report = {"vae": args.vae}
    for suite, records, score in (("geneval-shapes", geneval_records(load_suite("geneval-shapes"), "oracle", 1),
                                   score_geneval),
                                  ("gedit-shapes", gedit_records(load_suite("gedit-shapes"), "oracle"), score_gedit)):
        trip = [Record(r.item, tuple(round_trip(vae, list(r.samples), generator)), r.source) for r in records]
        s = score(trip)
        report[suite] = {"oracle": score(records)["overall"], "through_vae": s["overall"], "tags": s["tags"]}
        print(suite, json.dumps(report[suite]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
