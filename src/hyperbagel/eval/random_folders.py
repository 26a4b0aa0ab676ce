"""Model folders with random weights, made in a fraction of a second: for tests and benches of inputs, errors, the
demo and its load — never of quality. A ``micro`` teacher, a distilled student beside it (so the accelerated
generation path exists) and a Hyper-Bagel draft (so the accelerated understanding path exists)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch


def random_model_folder(folder: Path, preset_name: str = "micro", seed: int = 0, generation_noise: float = 0.0,
                        init_std: float = 0.05, config=None) -> Path:
    """A model folder (``config.json``, weights, a random autoencoder, the Shapes World tokenizer and its special
    tokens) of the preset, or of ``config`` (a ``BagelConfig``) when given. With ``generation_noise`` the generation
    branch is moved off its understanding twin (and ``llm2vae`` off zero) by that much Gaussian noise, so that
    velocities are not zero and the two branches can be told apart."""
    from hyperbagel.model.autoencoder import AutoEncoder
    from hyperbagel.model.checkpoint import build_model, save_pretrained
    from hyperbagel.model.presets import SHAPES_SPECIAL, preset
    from hyperbagel.model.tokenizer import ShapesTokenizer
    from hyperbagel.recipes.teacher import init_weights
    from hyperbagel.world.vocab import all_words

    torch.manual_seed(seed)
    # the folder's tokenizer is Shapes World's, so its config names that tokenizer's special tokens whatever the
    # architecture (a BAGEL-7B-width folder, as for the GPU memory check, would otherwise refuse to load)
    cfg = dataclasses.replace(config or preset(preset_name), special_tokens=SHAPES_SPECIAL)
    vae = AutoEncoder(cfg.vae).eval()
    model = build_model(dataclasses.replace(cfg, vae=vae.config))
    g = torch.Generator().manual_seed(seed)
    init_weights(model, init_std, g)
    if generation_noise:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.requires_grad and ("_moe_gen" in name or name.startswith(("llm2vae", "time_embedder"))):
                    p.add_(torch.randn(p.shape, generator=g) * generation_noise)
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
    from hyperbagel.decode.draft import TargetHead, build_draft, save_draft
    from hyperbagel.decode.draft_config import VARIANTS
    from hyperbagel.model.checkpoint import load_pretrained

    model, _ = load_pretrained(teacher)
    return save_draft(folder, build_draft(VARIANTS["hyper-bagel"], model), TargetHead.of(model))


def random_accelerated_folders(out: Path) -> tuple[Path, Path]:
    """A random micro teacher under ``out`` with a student and a draft beside it: (student folder, draft folder),
    so every task has both modes."""
    teacher = random_model_folder(out / "micro")
    return random_student_folder(teacher, out / "micro-student"), random_draft_folder(teacher, out / "micro-draft")


def random_reward_folder(folder: Path, seed: int = 0) -> Path:
    """An (untrained) small reward model with the Shapes World tokenizer."""
    from hyperbagel.distill.reward import RewardModel, RewardModelConfig, save_reward
    from hyperbagel.model.tokenizer import ShapesTokenizer
    from hyperbagel.world.vocab import all_words

    tok = ShapesTokenizer.build(list(all_words()))
    torch.manual_seed(seed)
    model = RewardModel(RewardModelConfig(vocab_size=tok.vocab_size, dim=32, layers=1, heads=2, mlp=64, stem=(8, 16)))
    save_reward(folder, model, tok)
    return folder
