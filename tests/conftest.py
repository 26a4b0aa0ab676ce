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
