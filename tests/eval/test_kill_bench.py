"""SIGKILLed mid-run (at a random moment, or while a checkpoint is being written) and restarted, a recipe of each
family ends exactly where an uninterrupted run ends: the VAE, the ViT pre-training, the teacher, the draft, the
reward model, a distillation stage (TSCD: two trained roles, adversarial) and the quickstart. ``hyperbagel bench
kills`` runs every recipe with 3 kills."""

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
@pytest.mark.parametrize(("name", "kills"), [("teacher", 2), ("vae", 2), ("reward", 2), ("vit", 1), ("draft", 2),
                                             ("tscd", 2), ("quickstart", 1)])
def test_a_killed_run_resumes_to_the_uninterrupted_result(recipes, name, kills):
    work, by_name = recipes
    result = kill_and_compare(by_name[name], work, kills=kills, seed=1)
    assert any(k["killed"] for k in result.kills), result.kills
    assert result.history_equal, result
    assert result.weights_equal, result
