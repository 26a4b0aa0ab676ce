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
    from hyperbagel.eval.random_folders import random_model_folder

    return random_model_folder(tmp_path_factory.mktemp("micro-model"))


@pytest.fixture(scope="session")
def micro_student_folder(micro_folder, tmp_path_factory):
    """``micro_folder`` plus an (untrained) 2-step distilled student: the accelerated path exists."""
    from hyperbagel.eval.random_folders import random_student_folder

    return random_student_folder(micro_folder, tmp_path_factory.mktemp("micro-student"))


@pytest.fixture(scope="session")
def micro_draft_folder(micro_folder, tmp_path_factory):
    """An (untrained) Hyper-Bagel draft for ``micro_folder``'s model: the accelerated understanding path exists."""
    from hyperbagel.eval.random_folders import random_draft_folder

    return random_draft_folder(micro_folder, tmp_path_factory.mktemp("micro-draft"))
