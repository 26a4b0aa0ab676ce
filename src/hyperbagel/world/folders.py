"""Result folders in GenEval's layout, which every generator writes and every scorer reads (contract §5).

```
OUT/run.json                     optional provenance: {"model", "sampler", "nfe", "seed", …}, copied into scores
OUT/00000/metadata.jsonl         the item's JSON line (a GenEval metadata line, or a gedit-shapes item)
OUT/00000/source.png             edit items only: the source image
OUT/00000/samples/0000.png …     the generated images (any all-digit name)
OUT/00000/samples/0000.txt       optional think-mode plan written before image 0000
OUT/predictions.jsonl            VQA: one {"id", "answer"} per line (run.json beside it)
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hyperbagel.config_types import read_json_object
from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_write_text

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.jsonl"


@dataclass(frozen=True)
class Record:
    """One item folder read back: the item, its images (in name order), the source image and plans, if any."""

    item: dict
    samples: tuple[np.ndarray, ...]
    source: np.ndarray | None = None
    plans: tuple[str | None, ...] = ()


def save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(path, optimize=False, compress_level=1)


def load_png(path: Path, resolution: int | None = None) -> np.ndarray:
    """An RGB uint8 array; resized (nearest neighbour) to ``resolution`` when the file has another size."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if resolution is not None and img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.NEAREST)
            return np.asarray(img, dtype=np.uint8).copy()
    except OSError as err:
        raise HyperBagelError(f"cannot read image {path}: {err}") from None


def write_run(out: Path, run: dict) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(run, indent=2) + "\n", Path(out) / RUN_FILE)


def read_run(out: Path) -> dict:
    path = Path(out) / RUN_FILE
    if not path.exists():
        return {}
    return read_json_object(path, RUN_FILE)


def write_record(
    out: Path,
    index: int,
    item: dict,
    samples: list[np.ndarray],
    source: np.ndarray | None = None,
    plans: list[str] | None = None,
) -> Path:
    folder = Path(out) / f"{index:05d}"
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text(json.dumps(item) + "\n")
    if source is not None:
        save_png(source, folder / "source.png")
    for j, image in enumerate(samples):
        save_png(image, folder / "samples" / f"{j:04d}.png")
        if plans is not None and plans[j] is not None:
            (folder / "samples" / f"{j:04d}.txt").write_text(plans[j] + "\n")
    return folder


def _resolution(item: dict, where: Path) -> int:
    try:
        for key in ("source", "scene"):
            if key in item:
                return int(item[key].get("resolution", 64))
        return int(item.get("resolution", 64))
    except (AttributeError, TypeError, ValueError):
        raise HyperBagelError(f"{where}: the item's resolution is not a whole number") from None


def read_records(out: Path) -> list[Record]:
    """Every item folder under ``out``, in index order."""
    out = Path(out)
    if not out.is_dir():
        raise HyperBagelError(f"result folder not found: {out}")
    folders = sorted(p for p in out.iterdir() if p.is_dir() and p.name.isdigit())
    if not folders:
        raise HyperBagelError(f"{out} holds no item folders (00000/, 00001/, …)")
    records = []
    for folder in folders:
        meta = folder / "metadata.jsonl"
        if not meta.exists():
            raise HyperBagelError(f"{meta} is missing")
        try:
            item = json.loads(meta.read_text().splitlines()[0])
        except (ValueError, IndexError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise HyperBagelError(f"{meta} is not one JSON line: {err}") from None
        if not isinstance(item, dict):
            raise HyperBagelError(f"{meta}: expected a JSON object, got {type(item).__name__}")
        R = _resolution(item, meta)
        pngs = sorted(p for p in (folder / "samples").glob("*.png") if p.stem.isdigit())
        if not pngs:
            raise HyperBagelError(f"{folder / 'samples'} holds no images")
        plans = tuple(
            p.with_suffix(".txt").read_text().strip() if p.with_suffix(".txt").exists() else None for p in pngs
        )
        source = folder / "source.png"
        records.append(
            Record(
                item,
                tuple(load_png(p, R) for p in pngs),
                load_png(source, R) if source.exists() else None,
                plans,
            )
        )
    return records


def write_predictions(out: Path, predictions: list[dict]) -> Path:
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / PREDICTIONS_FILE
    atomic_write_text("".join(json.dumps(p) + "\n" for p in predictions), path)
    return path


def read_predictions(path: Path) -> dict[str, str]:
    """``{id: answer}`` from a predictions JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise HyperBagelError(f"predictions file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise HyperBagelError(f"{path} is not UTF-8 text: {err}") from None
    answers: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answers[str(row["id"])] = str(row["answer"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise HyperBagelError(f'{path}:{n}: expected {{"id", "answer"}}, got {line[:80]!r} ({err})') from None
    return answers
