"""Model folders with random weights, made in a fraction of a second: for tests and benches of inputs, errors, the
demo and its load — never of quality. A ``micro`` teacher, a distilled student beside it (so the accelerated
generation path exists) and a Hyper-Bagel draft (so the accelerated understanding path exists)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch


def random_model_folder(folder: Path, preset_name: str = "micro", seed: int = 0) -> Path:
    """A model folder (``config.json``, weights, a random autoencoder, the Shapes World tokenizer)."""
    from hyperbagel.model.autoencoder import AutoEncoder
    from hyperbagel.model.checkpoint import build_model, save_pretrained
    from hyperbagel.model.presets import preset
    from hyperbagel.model.tokenizer import ShapesTokenizer
    from hyperbagel.recipes.teacher import init_weights
    from hyperbagel.world.vocab import all_words

    torch.manual_seed(seed)
    cfg = preset(preset_name)
    vae = AutoEncoder(cfg.vae).eval()
    model = build_model(dataclasses.replace(cfg, vae=vae.config))
    init_weights(model, 0.05, torch.Generator().manual_seed(seed))
    save_pretrained(folder, model, vae, {"tokenizer.json": ShapesTokenizer.build(list(all_words())).to_json()})
    return folder


def random_student_folder(teacher: Path, folder: Path, steps: int = 2) -> Path:
    """``teacher``'s folder plus an (untrained) ``steps``-step distilled student."""
    from hyperbagel.model.checkpoint import load_pretrained
    from hyperbagel.model.student import StudentInfo, save_student, student_from_teacher

    model, _ = load_pretrained(teacher)
    save_student(folder, student_from_teacher(model), StudentInfo(steps=steps), teacher)
    return folder


def random_draft_folder(teacher: Path, folder: Path) -> Path:
    """An (untrained) Hyper-Bagel draft for ``teacher``'s model."""
    from hyperbagel.decode.draft import VARIANTS, TargetHead, build_draft, save_draft
    from hyperbagel.model.checkpoint import load_pretrained

    model, _ = load_pretrained(teacher)
    return save_draft(folder, build_draft(VARIANTS["hyper-bagel"], model), TargetHead.of(model))


def random_accelerated_folders(out: Path) -> tuple[Path, Path]:
    """A random micro teacher under ``out`` with a student and a draft beside it: (student folder, draft folder),
    so every task has both modes."""
    teacher = random_model_folder(out / "micro")
    return random_student_folder(teacher, out / "micro-student"), random_draft_folder(teacher, out / "micro-draft")
