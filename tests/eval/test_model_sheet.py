"""The model sheet: the first item of each tag, judged, one PNG."""

import json

import torch
from PIL import Image

from hyperbagel.cli import main
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.presets import preset
from hyperbagel.recipes.vae import save_autoencoder


def test_sheet_command_writes_a_judged_png(tmp_path, capsys):
    torch.manual_seed(0)
    save_autoencoder(AutoEncoder(preset("micro").vae), tmp_path / "ae.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"batch": {"gen": 1, "edit": 1, "und": 1}, "warmup": 1,
                                                   "vit_pretrain": {"steps": 1, "batch": 2}}))
    assert main(["train", "teacher", "--preset", "micro", "--vae", str(tmp_path / "ae.safetensors"), "--out",
                 str(tmp_path / "m"), "--steps", "1", "--config", str(tmp_path / "cfg.json")]) == 0
    assert main(["sheet", "--ckpt", str(tmp_path / "m"), "--out", str(tmp_path / "s.png"), "--per-row", "2"]) == 0
    out = capsys.readouterr().out
    assert "generate: " in out and "/2 judged correct" in out
    width, height = Image.open(tmp_path / "s.png").size
    assert width > 2 * 256 and height > 3 * 128
