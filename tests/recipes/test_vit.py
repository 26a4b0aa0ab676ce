"""ViT pre-training: exact per-patch labels from the scene, and a few steps that learn."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.presets import preset
from hyperbagel.recipes.vit import ViTPretrainConfig, patch_targets, pretrain_vit
from hyperbagel.world import palette as P
from hyperbagel.world.scene import Obj, Scene
from runs import assert_weights_close, launch


def test_patch_targets_label_the_centre_patch_and_colour_presence():
    # a large (20 px) red circle with its centre at (30, 14): patch row 0, col 1 of a 4×4 grid of 16-px patches
    scene = Scene((Obj("circle", "red", "large", 20, 4),), background="gray", resolution=64)
    t = patch_targets(scene, 16)
    centre = 0 * 4 + 1
    assert t["shape"][centre] == P.SHAPES.index("circle") + 1
    assert t["color"][centre] == P.COLORS.index("red") + 1
    assert t["size"][centre] == P.SIZES.index("large") + 1
    assert np.count_nonzero(t["shape"]) == np.count_nonzero(t["color"]) == 1
    red, gray = P.PALETTE_NAMES.index("red"), P.PALETTE_NAMES.index("gray")
    assert t["present"][:, gray].all()  # the background shows in every patch
    assert set(np.flatnonzero(t["present"][:, red])) == {1, 2, 5, 6}  # box x 20..39 (cols 1, 2), y 4..23 (rows 0, 1)
    assert t["present"].sum(1).max() == 2


def test_pretraining_lowers_the_patch_loss():
    cfg = preset("micro")
    vit = build_model(cfg).vit_model.vision_model
    before = [p.detach().clone() for p in vit.parameters()]
    hist = pretrain_vit(vit, ViTPretrainConfig(steps=40, batch=16, lr=3e-3, warmup=5), 64, cfg.vit.patch_size,
                        cfg.vit_max_num_patch_per_side)
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert any(not torch.equal(a, b) for a, b in zip(before, vit.parameters()))


def test_parallel_scene_workers_pretrain_the_same_vit():
    cfg = preset("micro")
    vits = []
    for workers in (0, 2):
        torch.manual_seed(0)
        vit = build_model(cfg).vit_model.vision_model
        pretrain_vit(vit, ViTPretrainConfig(steps=3, batch=4), 64, cfg.vit.patch_size, cfg.vit_max_num_patch_per_side,
                     workers=workers)
        vits.append(vit)
    for a, b in zip(vits[0].parameters(), vits[1].parameters()):
        assert torch.equal(a, b)


SCRIPT = """
import json, sys, torch
from safetensors.torch import save_file
from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.presets import preset
from hyperbagel.recipes.vit import ViTPretrainConfig, pretrain_vit
from hyperbagel.training.distributed import init, is_main
init()
cfg = preset("micro")
torch.manual_seed(0)
vit = build_model(cfg).vit_model.vision_model
hist = pretrain_vit(vit, ViTPretrainConfig(steps=5, batch=4, warmup=2), 64, cfg.vit.patch_size,
                    cfg.vit_max_num_patch_per_side)
if is_main():
    save_file(vit.state_dict(), sys.argv[1] + ".safetensors")
    open(sys.argv[1] + ".json", "w").write(json.dumps(hist))
"""


@pytest.mark.slow
def test_two_processes_pretrain_the_one_process_vit(tmp_path):
    runs = {}
    for procs in (1, 2):
        launch(procs, SCRIPT, [(tmp_path / str(procs),)], port=29559)
        history = json.loads((tmp_path / f"{procs}.json").read_text())
        runs[procs] = (history, load_file(tmp_path / f"{procs}.safetensors"))
    (h1, w1), (h2, w2) = runs[1], runs[2]
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [1, 5]
    for a, b in zip(h1, h2):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5), k
    # a key bias has no effect on attention, so its gradient is zero up to rounding: AdamW's steps on it differ
    keep = [k for k in w1 if not k.endswith("k_proj.bias")]
    assert_weights_close({k: w1[k] for k in keep}, {k: w2[k] for k in keep})
