"""Turning a trained model folder into a shipped one: weights (optionally rounded to bf16), the files a model folder
needs, the run's records, a model card and ``SHA256SUMS``."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save_file

from hyperbagel.errors import HyperBagelError
from hyperbagel.model.checkpoint import AE_FILE, CONFIG_FILE, MODEL_FILE, read_tensors
from hyperbagel.pretrained import write_sums

FOLDER_FILES = (CONFIG_FILE, "tokenizer.json", AE_FILE)
RECORDS = ("train_config.json", "vit_pretrain.json")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows of it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def _score_rows(scores: list[dict]) -> list[str]:
    rows = ["| suite | overall | per tag | images | sampler, precision |", "|---|---|---|---|---|"]
    for s in scores:
        tags = " / ".join(f"{k} {v:.3f}" for k, v in (s.get("tags") or {}).items())
        extra = f"; description exact {s['description_exact']:.3f}" if s.get("description_exact") is not None else ""
        n = s.get("n_images") or (s.get("n_questions", 0) + s.get("n_descriptions", 0))
        rows.append(f"| {s.get('benchmark', '?')} | {s['overall']:.3f}{extra} | {tags} | {n} | "
                    f"{s.get('sampler', '?')}, {s.get('run', {}).get('precision', s.get('precision', '?'))} |")
    return rows


def ship(run: Path, out: Path, scores: list[Path], command: str, bf16: bool = True) -> dict[str, str]:
    """Write ``out`` from the model folder ``run`` (as ``train teacher`` leaves it); returns the files' SHA-256."""
    for name in (MODEL_FILE, *FOLDER_FILES):
        if not (run / name).is_file():
            raise HyperBagelError(f"{run} is not a trained model folder: {name} is missing")
    results = [json.loads(Path(p).read_text()) for p in scores]
    out.mkdir(parents=True, exist_ok=True)
    tensors = read_tensors(run / MODEL_FILE, torch.bfloat16 if bf16 else torch.float32)
    config = (run / CONFIG_FILE).read_text()
    save_file(tensors, str(out / MODEL_FILE), metadata={"config": config.strip(), "format": "pt"})
    for name in FOLDER_FILES:
        shutil.copyfile(run / name, out / name)
    for name in RECORDS:
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    state_file = run / "train" / "train_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if state:
        (out / "history.json").write_text(json.dumps(state["history"]) + "\n")
    for stale in out.glob("scores-*.json"):  # a folder shipped again carries only this shipping's scores
        stale.unlink()
    for p, s in zip(scores, results):
        (out / f"scores-{s.get('benchmark', Path(p).stem)}.json").write_text(json.dumps(s, indent=1) + "\n")
    hours = state.get("seconds", 0.0) / 3600
    card = [
        f"# {out.name}", "",
        "The Shapes World teacher: a BAGEL-architecture MoT model (understanding, text-to-image, editing) trained "
        "from scratch by `hyperbagel train teacher`. Weights: `ema.safetensors` "
        f"({'bf16' if bf16 else 'fp32'}, loaded as fp32), autoencoder `ae.safetensors`.", "",
        "## How it was made", "",
        f"- command: `{command}`",
        f"- commit: `{_commit()}`",
        f"- steps: {state.get('step', '?')}; training wall clock {hours:.2f} h "
        "(ViT pre-training and any pauses included)",
        f"- machine of the shipping step: {platform.machine()}, {_cpu_name()}, "
        f"torch {torch.__version__}",
        "- configuration: `train_config.json`; losses per step: `history.json`", "",
        "## Scores (full suites, BAGEL's default samplers)", "",
        *(_score_rows(results) if results else ["Not scored yet."]), "",
        "## Files", "", "SHA-256 of every file: `SHA256SUMS` (`sha256sum -c SHA256SUMS`).", "",
    ]
    (out / "MODEL_CARD.md").write_text("\n".join(card))
    return write_sums(out)
