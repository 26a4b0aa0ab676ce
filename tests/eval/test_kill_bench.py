"""SIGKILLed mid-run (at a random moment, or while a checkpoint is being written) and restarted, every recipe on
the shared training utilities ends exactly where an uninterrupted run ends."""

import pytest
import torch

from hyperbagel.eval.kill_bench import kill_and_compare, micro_recipes
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.presets import preset
from hyperbagel.recipes.vae import save_autoencoder


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    work = tmp_path_factory.mktemp("kills")
    torch.manual_seed(0)
    save_autoencoder(AutoEncoder(preset("micro").vae), work / "ae.safetensors")
    return work, micro_recipes(work / "ae.safetensors", work)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["teacher", "vae", "reward"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(recipes, name):
    work, by_name = recipes
    result = kill_and_compare(by_name[name], work, kills=2, seed=1)
    assert any(k["killed"] for k in result.kills), result.kills
    assert result.history_equal, result
    assert result.weights_equal, result
