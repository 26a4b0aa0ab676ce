"""The VAE recipe: a micro autoencoder trains, checkpoints round-trip, and resuming reproduces the losses."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from hyperbagel.errors import Interrupted
from hyperbagel.model.config import VAEConfig
from hyperbagel.recipes.vae import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    VAETrainConfig,
    image_batch,
    load_autoencoder,
    lr_at,
    reconstruct,
    train_vae,
)
from runs import launch, run_here

MICRO = VAEConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, norm_groups=4)


def toy_image(rng: np.random.Generator) -> np.ndarray:
    """A coloured square on black: a stand-in for a Shapes World render."""
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    y, x = rng.integers(0, 10, size=2)
    image[y : y + 6, x : x + 6] = rng.integers(64, 256, size=3)
    return image


def micro_config(**overrides) -> VAETrainConfig:
    base = dict(vae=MICRO, steps=6, batch_size=4, lr=3e-3, warmup_steps=2, checkpoint_every=3, log_every=1,
                calibration_images=8)
    return VAETrainConfig(**{**base, **overrides})


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="batch_size"):
        micro_config(batch_size=0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        micro_config(min_lr_ratio=2.0)
    config = micro_config()
    assert VAETrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_lr_schedule():
    config = micro_config(steps=10, warmup_steps=2, lr=1.0, min_lr_ratio=0.1)
    assert [round(lr_at(config, s), 6) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_at(config, 10) == pytest.approx(0.1)


def test_data_stream_is_indexed():
    a = image_batch(toy_image, 7, 0, 4)
    b = image_batch(toy_image, 7, 2, 2)
    assert torch.equal(a[2:], b)
    assert a.shape == (4, 3, 16, 16) and a.min() >= -1 and a.max() <= 1


def test_train_checkpoint_and_exact_resume(tmp_path):
    config = micro_config()
    ae_full, losses_full = train_vae(config, toy_image, tmp_path / "full")
    assert len(losses_full) == 6 and losses_full[-1]["loss"] < losses_full[0]["loss"]

    # Interrupted after 3 steps, then resumed from the checkpoint: identical losses and weights.
    train_vae(config, toy_image, tmp_path / "split", stop_after=3)
    ae_resumed, losses_resumed = train_vae(config, toy_image, tmp_path / "split")
    assert [s["loss"] for s in losses_resumed] == [s["loss"] for s in losses_full]
    for (name, a), b in zip(ae_full.state_dict().items(), ae_resumed.state_dict().values()):
        assert torch.equal(a, b), name

    # Round trip: the saved weights and config (with the fitted latent scale) load back exactly.
    loaded = load_autoencoder(tmp_path / "full" / WEIGHTS_FILE)
    assert loaded.config == ae_full.config and loaded.config.scale_factor != MICRO.scale_factor
    for (name, a), b in zip(ae_full.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = image_batch(toy_image, 3, 0, 2)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    with torch.no_grad():
        assert torch.equal(ae_full.encode(x, generator=g1), loaded.encode(x, generator=g2))
    saved = VAETrainConfig.from_dict(json.loads((tmp_path / "full" / CONFIG_FILE).read_text()))
    assert saved == config


def test_a_signal_mid_run_stops_after_the_step_with_a_checkpoint_and_nothing_is_lost(tmp_path):
    config = micro_config(checkpoint_every=100)
    _, losses_full = train_vae(config, toy_image, tmp_path / "full")
    calls = 0

    def signalled_in_step_3(rng):  # the data stream is 8 calibration images, then 4 images a step
        nonlocal calls
        calls += 1
        if calls == 8 + 2 * 4 + 1:
            signal.raise_signal(signal.SIGTERM)
        return toy_image(rng)

    with pytest.raises(Interrupted) as err:
        train_vae(config, signalled_in_step_3, tmp_path / "split")
    assert err.value.step == 3 and err.value.exit_code == 143
    assert (tmp_path / "split" / "train" / "dcp-0000003").is_dir()  # though checkpoints are every 100 steps
    _, losses_resumed = train_vae(config, toy_image, tmp_path / "split")
    assert losses_resumed == losses_full


def test_a_file_without_config_is_refused_unless_a_model_config_sits_beside_it(tmp_path):
    from hyperbagel.errors import HyperBagelError
    from hyperbagel.model.autoencoder import AutoEncoder
    from hyperbagel.model.checkpoint import save_module

    bare = tmp_path / "bare" / "ae.safetensors"
    bare.parent.mkdir()
    save_module(AutoEncoder(MICRO), bare, {"format": "pt"})
    with pytest.raises(HyperBagelError, match="no embedded VAE config and no model config.json"):
        load_autoencoder(bare)
    assert load_autoencoder(bare, MICRO).config == MICRO


def test_shapes_world_training_images_cover_both_backgrounds():
    import numpy as np

    from hyperbagel.recipes.vae import shapes_world_image
    from hyperbagel.world import palette as P

    corners = {tuple(shapes_world_image(np.random.default_rng([0, i]), 64)[0, 0]) for i in range(40)}
    assert {tuple(P.BACKGROUNDS[b]) for b in P.BACKGROUND_NAMES} <= corners


VAE_SCRIPT = """
import sys, numpy as np
from hyperbagel.errors import Interrupted
from hyperbagel.model.config import VAEConfig
from hyperbagel.recipes.vae import VAETrainConfig, train_vae
from hyperbagel.training.distributed import init
init()
def toy_image(rng):
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    y, x = rng.integers(0, 10, size=2)
    image[y : y + 6, x : x + 6] = rng.integers(64, 256, size=3)
    return image
micro = VAEConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, norm_groups=4)
config = VAETrainConfig(vae=micro, steps=6, batch_size=4, lr=3e-3, warmup_steps=2, checkpoint_every=3, log_every=1,
                        calibration_images=8)
stop = int(sys.argv[2]) if len(sys.argv) > 2 else None
train_vae(config, toy_image, sys.argv[1], stop_after=stop)
"""


def _losses(out):
    return [s["loss"] for s in json.loads((out / "train" / "train_state.json").read_text())["losses"]]


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_process_counts(tmp_path):
    run_here(VAE_SCRIPT, [(tmp_path / "one",)])
    launch(2, VAE_SCRIPT, [(tmp_path / "two",), (tmp_path / "two-one", 3)], port=29541)
    run_here(VAE_SCRIPT, [(tmp_path / "two-one",)])  # stopped after step 3 in 2 processes, resumed in 1
    one = _losses(tmp_path / "one")
    assert _losses(tmp_path / "two") == pytest.approx(one, rel=1e-5)
    assert _losses(tmp_path / "two-one") == pytest.approx(one, rel=1e-5)
    # the autoencoders agree as functions (weight by weight they need not: a key bias gets no gradient but
    # rounding noise, which Adam turns into steps of the learning rate's size, and attention ignores it)
    a, b = load_autoencoder(tmp_path / "one" / WEIGHTS_FILE), load_autoencoder(tmp_path / "two-one" / WEIGHTS_FILE)
    x = image_batch(toy_image, 3, 0, 4)
    torch.testing.assert_close(reconstruct(a, x, sample=False), reconstruct(b, x, sample=False), rtol=1e-3, atol=1e-3)
