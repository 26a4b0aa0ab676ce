"""The JSON behind a quickstart report, gathered from a run folder: the run's settings and every stage's command,
config, timings and results (``DONE.json``), the three benches' ``bench.json``, image grids read from the benches'
result folders (the same seeds, so the same initial noise, in every row), the showcase's answers and plans, the
reward model's report and ReFL's probes (reward beside the exact judge). Images
are embedded as base64 PNG, so the JSON alone is enough to render the page (``eval/report.py``)."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

GRID_COLUMNS = 8
BENCHES = {"understand": "bench-understand", "generate": "bench-generate", "edit": "bench-edit"}


def png_b64(path: Path) -> str | None:
    """A PNG file as base64, re-encoded at full compression (the result folders favour writing speed)."""
    if not path.is_file():
        return None
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as im:
        im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _columns(folder: Path, n: int) -> list[int]:
    """Up to ``n`` item indices of a bench row folder, one tag after another (first items first)."""
    by_tag: dict[str, list[int]] = {}
    for item in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
        meta = json.loads((item / "metadata.jsonl").read_text().splitlines()[0])
        by_tag.setdefault(meta.get("tag", ""), []).append(int(item.name))
    out, depth = [], 0
    while len(out) < n and any(len(v) > depth for v in by_tag.values()):
        out += [v[depth] for v in by_tag.values() if len(v) > depth][: n - len(out)]
        depth += 1
    return out


def grid(bench_dir: Path, bench: dict, n: int = GRID_COLUMNS) -> dict | None:
    """Every bench row's first sample of the same items (same seed, same noise), plus the edits' sources."""
    rows = [r["row"] for r in bench["rows"]]
    first = bench_dir / rows[0]
    if not first.is_dir():
        return None
    cols = _columns(first, n)
    columns = []
    for i in cols:
        meta = json.loads((first / f"{i:05d}" / "metadata.jsonl").read_text().splitlines()[0])
        columns.append({"index": i, "tag": meta.get("tag"), "text": meta.get("prompt") or meta.get("instruction"),
                        "source": png_b64(first / f"{i:05d}" / "source.png")})
    out_rows = []
    for r in bench["rows"]:
        images = []
        for i in cols:
            samples = sorted((bench_dir / r["row"] / f"{i:05d}" / "samples").glob("*.png"))
            images.append(png_b64(samples[0]) if samples else None)
        out_rows.append({"row": r["row"], "describe": r["describe"], "forwards_per_image": r["forwards_per_image"],
                         "images": images})
    return {"columns": columns, "rows": out_rows, "sample": 0}


def _showcase(folder: Path) -> dict | None:
    data = _json(folder / "showcase.json")
    if data is None:
        return None
    for a in data["answers"]:
        a["image"] = png_b64(folder / a["image"])
    for g in data["generations"]:
        for mode in ("baseline", "accelerated"):
            g[mode]["image"] = png_b64(folder / g[mode]["image"])
    return data


def collect(run: str | Path) -> dict:
    run = Path(run)
    info = _json(run / "quickstart.json") or {}
    stages = []
    for st in info.get("stages", []):
        marker = _json(run / st["folder"] / "DONE.json")
        entry = {"name": st["name"], "describe": st["describe"], "command": st["command"], "config": st["config"]}
        if st.get("unavailable"):
            entry.update(status="not available", reason=st["unavailable"])
        elif marker is None:
            entry.update(status="not run")
        else:
            entry.update(status="done", command=marker["command"], config=marker["config"],
                         seconds=marker["seconds"], started=marker["started"], finished=marker["finished"],
                         results=marker.get("results", {}))
        stages.append(entry)
    benches = {}
    for key, folder in BENCHES.items():
        b = _json(run / folder / "bench.json")
        if b is not None:
            b.pop("table", None)
        benches[key] = b
    grids = {task: grid(run / BENCHES[task], benches[task]) if benches[task] else None
             for task in ("generate", "edit")}
    return {
        "title": f"Hyper-Bagel on Shapes World: quickstart {info.get('preset', '?')}",
        "run": str(run),
        "preset": info.get("preset"),
        "config": info.get("config"),
        "version": info.get("version"),
        "git": info.get("git"),
        "machine": info.get("machine"),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "stages": stages,
        "total_seconds": sum(s.get("seconds", 0.0) for s in stages),
        "understand": benches["understand"],
        "generate": benches["generate"],
        "edit": benches["edit"],
        "grids": grids,
        "showcase": _showcase(run / "showcase"),
        "reward": _json(run / "reward" / "report.json"),
        "refl_probes": (_json(run / "distill-refl" / "train" / "train_state.json") or {}).get("probes"),
    }
