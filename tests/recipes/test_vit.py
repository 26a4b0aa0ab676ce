"""ViT pre-training: exact per-patch labels from the scene, and a few steps that learn."""

import numpy as np
import torch

from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.presets import preset
from hyperbagel.recipes.vit import ViTPretrainConfig, patch_targets, pretrain_vit
from hyperbagel.world import palette as P
from hyperbagel.world.scene import Obj, Scene


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
