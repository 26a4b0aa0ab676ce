"""What a bench has measured so far, and its resume file.

A generation bench on the `tiny` teacher runs for more than an hour; ``run_bench`` saves its tally after every batch
to ``OUT/resume.safetensors`` (one file, written atomically: the arrays as tensors, the rest as JSON metadata) and a
later run with the same settings carries on from the next batch. Rows run interleaved batch by batch, so a speed-up
stays a comparison on the same machine at the same moment even when the run spans several sessions; each session is
recorded (first item, threads, start time) in the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from hyperbagel.errors import HyperBagelError
from hyperbagel.eval.cpu_meter import CpuUse
from hyperbagel.files import atomic_save_tensors

RESUME_FILE = "resume.safetensors"


@dataclass
class Tally:
    """Per row: judge scores and verdicts ``[items, samples]``, pixel distances to the teacher, encoder features,
    timing totals and the sheet's images; plus the sheet's captions and sources and the next item to run."""

    rows: list[str]
    items: int
    samples: int
    next_item: int = 0
    score: dict[str, np.ndarray] = field(default_factory=dict)
    verdict: dict[str, np.ndarray] = field(default_factory=dict)
    pixel: dict[str, list[float]] = field(default_factory=dict)
    feats: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    stats: dict[str, dict] = field(default_factory=dict)
    shown: dict[str, list[np.ndarray]] = field(default_factory=dict)
    shown_texts: list[str] = field(default_factory=list)
    shown_sources: list[np.ndarray] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for r in self.rows:
            self.score.setdefault(r, np.zeros((self.items, self.samples)))
            self.verdict.setdefault(r, np.zeros((self.items, self.samples), dtype=bool))
            self.pixel.setdefault(r, [])
            self.feats.setdefault(r, [])
            self.stats.setdefault(r, {"forwards": 0, "calls": 0, "seconds": 0.0, "sample_seconds": 0.0,
                                      "images": 0, "own_cpu": 0.0, "others_cpu": 0.0})
            self.shown.setdefault(r, [])

    def count(self, row: str, forwards: int, seconds: float, sample_seconds: float, images: int,
              cpu: CpuUse) -> None:
        """Add one timed call to the row's totals. A tally resumed from a bench that did not meter its calls keeps
        no CPU totals; one call whose machine total was unreadable drops the row's total of other processes' CPU."""
        st = self.stats[row]
        st["forwards"] += forwards
        st["calls"] += 1
        st["seconds"] += seconds
        st["sample_seconds"] += sample_seconds
        st["images"] += images
        if "own_cpu" not in st:
            return
        st["own_cpu"] += cpu.own
        if cpu.others is None:
            st.pop("others_cpu", None)
        elif "others_cpu" in st:
            st["others_cpu"] += cpu.others


def save_tally(path: Path, tally: Tally, fingerprint: dict) -> None:
    tensors = {"shown_sources": _stack(tally.shown_sources)}
    for r in tally.rows:
        tensors[f"score/{r}"] = torch.from_numpy(tally.score[r])
        tensors[f"verdict/{r}"] = torch.from_numpy(tally.verdict[r].astype(np.uint8))
        tensors[f"pixel/{r}"] = torch.tensor(tally.pixel[r], dtype=torch.float64)
        tensors[f"feats/{r}"] = torch.cat(tally.feats[r]) if tally.feats[r] else torch.zeros(0)
        tensors[f"shown/{r}"] = _stack(tally.shown[r])
    meta = {"fingerprint": fingerprint, "rows": tally.rows, "items": tally.items, "samples": tally.samples,
            "next_item": tally.next_item, "stats": tally.stats, "shown_texts": tally.shown_texts,
            "sessions": tally.sessions}
    atomic_save_tensors(tensors, path, {"tally": json.dumps(meta)})


def load_tally(path: Path, fingerprint: dict) -> Tally | None:
    """The saved tally, None when there is none; an error when it was measured with other settings."""
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["tally"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    if meta["fingerprint"] != fingerprint:
        diff = sorted(k for k in fingerprint.keys() | meta["fingerprint"].keys()
                      if fingerprint.get(k) != meta["fingerprint"].get(k))
        raise HyperBagelError(f"{path} holds a bench with other settings ({', '.join(diff)} differ); "
                              "pass --fresh to start over, or another --out")
    rows = meta["rows"]
    return Tally(
        rows, meta["items"], meta["samples"], meta["next_item"],
        score={r: t[f"score/{r}"].numpy() for r in rows},
        verdict={r: t[f"verdict/{r}"].numpy().astype(bool) for r in rows},
        pixel={r: t[f"pixel/{r}"].tolist() for r in rows},
        feats={r: [t[f"feats/{r}"]] if t[f"feats/{r}"].numel() else [] for r in rows},
        stats=meta["stats"],
        shown={r: list(t[f"shown/{r}"].numpy()) for r in rows},
        shown_texts=meta["shown_texts"],
        shown_sources=list(t["shown_sources"].numpy()),
        sessions=meta["sessions"],
    )


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)) if images else torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
