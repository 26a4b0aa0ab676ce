import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# HYPERBAGEL_TEST_THREADS=1 keeps tests from fighting a training run for the two cores (oversubscribed
# threads on a busy machine slow small models down by orders of magnitude).
torch.set_num_threads(int(os.environ.get("HYPERBAGEL_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded generator: every random function in the package takes one."""
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def micro_folder(tmp_path_factory):
    """A ``micro`` model folder in a fraction of a second: random small weights, a random autoencoder and the
    Shapes World tokenizer (for tests of inputs, errors and the demo, not of quality)."""
    import dataclasses

    from hyperbagel.model.autoencoder import AutoEncoder
    from hyperbagel.model.checkpoint import build_model, save_pretrained
    from hyperbagel.model.presets import preset
    from hyperbagel.model.tokenizer import ShapesTokenizer
    from hyperbagel.recipes.teacher import init_weights
    from hyperbagel.world.vocab import all_words

    folder = tmp_path_factory.mktemp("micro-model")
    torch.manual_seed(0)
    cfg = preset("micro")
    vae = AutoEncoder(cfg.vae).eval()
    model = build_model(dataclasses.replace(cfg, vae=vae.config))
    init_weights(model, 0.05, torch.Generator().manual_seed(0))
    save_pretrained(folder, model, vae, {"tokenizer.json": ShapesTokenizer.build(list(all_words())).to_json()})
    return folder


@pytest.fixture(scope="session")
def micro_student_folder(micro_folder, tmp_path_factory):
    """``micro_folder`` plus an (untrained) 2-step distilled student: the accelerated path exists."""
    from hyperbagel.model.checkpoint import load_pretrained
    from hyperbagel.model.student import StudentInfo, save_student, student_from_teacher

    folder = tmp_path_factory.mktemp("micro-student")
    model, _ = load_pretrained(micro_folder)
    save_student(folder, student_from_teacher(model), StudentInfo(steps=2), micro_folder)
    return folder


@pytest.fixture(scope="session")
def micro_draft_folder(micro_folder, tmp_path_factory):
    """An (untrained) Hyper-Bagel draft for ``micro_folder``'s model: the accelerated understanding path exists."""
    from hyperbagel.decode.draft import VARIANTS, TargetHead, build_draft, save_draft
    from hyperbagel.model.checkpoint import load_pretrained

    model, _ = load_pretrained(micro_folder)
    return save_draft(tmp_path_factory.mktemp("micro-draft"), build_draft(VARIANTS["hyper-bagel"], model),
                      TargetHead.of(model))
