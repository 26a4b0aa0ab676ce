"""A ``micro`` teacher folder built without training: random init with a generation branch that differs from the
understanding one (so tests can tell the two apart), a random autoencoder and the Shapes World tokenizer."""

from __future__ import annotations

import pytest

from hyperbagel.eval.random_folders import random_model_folder


@pytest.fixture(scope="session")
def micro_teacher(tmp_path_factory):
    return random_model_folder(tmp_path_factory.mktemp("micro-teacher"), generation_noise=0.05)
