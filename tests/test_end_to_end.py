"""``micro`` end to end: train → generate → edit → understand → score, through the CLI and the API."""

import json

import numpy as np
import pytest
import torch

from hyperbagel.cli import main
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.presets import preset
from hyperbagel.pipeline import Pipeline, SamplerSettings
from hyperbagel.recipes.vae import save_autoencoder
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    save_autoencoder(AutoEncoder(preset("micro").vae), root / "ae.safetensors")
    cfg = root / "cfg.json"
    overrides = {"batch": {"gen": 2, "edit": 2, "und": 2}, "warmup": 1, "vit_pretrain": {"steps": 2, "batch": 4}}
    cfg.write_text(json.dumps(overrides))
    assert main(["train", "teacher", "--preset", "micro", "--vae", str(root / "ae.safetensors"),
                 "--out", str(root / "teacher"), "--steps", "2", "--config", str(cfg)]) == 0
    return root / "teacher"


def test_api_counts_forwards(teacher):
    pipe = Pipeline.from_pretrained(teacher)
    image = render(sample_scene(np.random.default_rng(0)))
    gen = pipe.generate(["a red circle", "two squares"], [0, 1], sampler=SamplerSettings(num_timesteps=6))
    assert len(gen.images) == 2 and gen.images[0].shape == (64, 64, 3)
    assert gen.forwards == 5 * 2  # cond + no-text per step (interval [0, 1]); the prompt rides in the first
    ed = pipe.edit(image, "make the background gray", 0, sampler=SamplerSettings(num_timesteps=6))
    assert ed.images[0].shape == (64, 64, 3) and ed.forwards > 5
    und = pipe.understand(image, "how many circles are there?", max_new_tokens=4)
    assert und.forwards <= 4 and isinstance(und.texts[0], str)
    # the same call gives the same images; alone or in a padded batch, the same image up to float rounding
    again = pipe.generate(["a red circle", "two squares"], [0, 1], sampler=SamplerSettings(num_timesteps=6))
    assert all(np.array_equal(a, b) for a, b in zip(again.images, gen.images))
    alone = pipe.generate(["a red circle"], [0], sampler=SamplerSettings(num_timesteps=6))
    assert np.abs(alone.images[0].astype(int) - gen.images[0]).max() <= 2


def test_cli_generate_edit_understand_and_score(teacher, tmp_path, capsys):
    assert main(["generate", "--ckpt", str(teacher), "a blue square", "--steps", "4", "--out",
                 str(tmp_path / "g.png")]) == 0
    assert main(["edit", "--ckpt", str(teacher), str(tmp_path / "g.png"), "remove the square", "--steps", "4",
                 "--out", str(tmp_path / "e.png")]) == 0
    assert main(["understand", "--ckpt", str(teacher), str(tmp_path / "e.png"), "describe the image.",
                 "--max-new-tokens", "6"]) == 0
    for suite in ("geneval-shapes", "gedit-shapes", "vqa-shapes"):
        out = tmp_path / suite
        assert main(["eval-model", "--ckpt", str(teacher), "--suite", suite, "--out", str(out), "--limit", "2",
                     "--samples", "1", "--json", str(tmp_path / f"{suite}.json")]) == 0
        scores = json.loads((tmp_path / f"{suite}.json").read_text())
        assert 0.0 <= scores["overall"] <= 1.0
        # 49 × 2 forwards, the prompt inside the first; editing: the VAE and ViT blocks in one prefill, then the
        # branches' 131 forwards, the instruction inside each branch's first
        nfe = {"geneval-shapes": 49 * 2, "gedit-shapes": 1 + 131}
        if suite in nfe:
            assert (scores["sampler"], scores["nfe"]) == ("bagel-50", nfe[suite])
    capsys.readouterr()


def test_bad_inputs_get_clear_messages(teacher, tmp_path, capsys):
    (tmp_path / "not.png").write_text("hello")
    assert main(["understand", "--ckpt", str(teacher), str(tmp_path / "not.png"), "describe the image."]) == 2
    assert "not an image file" in capsys.readouterr().err
    assert main(["generate", "--ckpt", str(teacher), "a pink elephant", "--steps", "3"]) == 2
    assert "outside the vocabulary" in capsys.readouterr().err
    assert main(["generate", "--ckpt", str(tmp_path / "missing"), "a circle"]) == 2
    assert "not found" in capsys.readouterr().err
