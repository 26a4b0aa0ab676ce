"""Each distillation recipe on ``micro``: it resumes exactly (same losses, same weights), the understanding weights
stay bit-identical, and its folder samples with the student in one forward per step."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hyperbagel.eval.random_folders import random_model_folder, random_student_folder
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.presets import preset
from hyperbagel.model.student import STUDENT_FILE, is_generation_param, read_student_info
from hyperbagel.pipeline import Pipeline
from hyperbagel.recipes.distill_cfg import CFGDistillConfig, train_cfg
from hyperbagel.recipes.distill_common import picture, scene_size, understanding_fingerprint
from hyperbagel.recipes.distill_dmdo import DMDOConfig, train_dmdo
from hyperbagel.recipes.distill_tscd import TSCDConfig, train_tscd
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene
from runs import assert_same_checkpoint

SMALL = dict(batch={"gen": 1, "edit": 1}, warmup=1, ckpt_every=100, log_every=100)
STAGES = {
    "cfg": (train_cfg, lambda teacher, out, init: CFGDistillConfig(
        teacher=str(teacher), out=str(out), steps=3, rollout_timesteps=6, states_per_rollout=2, lr=1e-3, gated=True,
        **SMALL)),
    "tscd": (train_tscd, lambda teacher, out, init: TSCDConfig(
        teacher=str(teacher), init=str(init), out=str(out), steps=3, steps_per_segment=2, lr=1e-3, **SMALL)),
    "dmdo": (train_dmdo, lambda teacher, out, init: DMDOConfig(
        teacher=str(teacher), init=str(init), out=str(out), steps=2, fake_updates=2, lr=1e-3, **SMALL)),
}


def _state(out: Path) -> dict:
    return json.loads((out / "train" / "train_state.json").read_text())


@pytest.fixture(scope="module")
def chain(micro_teacher, tmp_path_factory):
    """Each stage trained uninterrupted (``a``) and interrupted after one step then resumed (``b``)."""
    root, init, out = tmp_path_factory.mktemp("distill"), None, {}
    for stage, (train, make) in STAGES.items():
        a, b = root / f"{stage}-a", root / f"{stage}-b"
        train(make(micro_teacher, a, init), progress=False)
        train(make(micro_teacher, b, init), progress=False, stop_after=1)
        assert len(_state(b)["history"]) == 1
        train(make(micro_teacher, b, init), progress=False)
        out[stage] = (a, b)
        init = a
    return out


@pytest.mark.parametrize("stage", list(STAGES))
def test_recipe_resumes_exactly(chain, stage):
    a, b = chain[stage]
    assert _state(a)["history"] == _state(b)["history"]
    with safe_open(str(a / STUDENT_FILE), "pt") as fa, safe_open(str(b / STUDENT_FILE), "pt") as fb:
        assert sorted(fa.keys()) == sorted(fb.keys())
        for k in fa.keys():
            assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), k
    assert_same_checkpoint(a, b)  # trainable weights and optimizer moments of every trained role
    # and it learned something: the student's generation weights moved
    history = _state(a)["history"]
    assert all(h["grad_norm"] > 0 for h in history)


@pytest.mark.parametrize("stage", list(STAGES))
def test_understanding_weights_bit_identical_after_the_stage(micro_teacher, chain, stage):
    a, _ = chain[stage]
    teacher, _ = load_pretrained(micro_teacher)
    assert _state(a)["understanding_sha256"] == understanding_fingerprint(teacher)
    with safe_open(str(a / STUDENT_FILE), "pt") as f:
        keys = list(f.keys())
        assert keys and all(is_generation_param(k) for k in keys)
        changed = [k for k in keys if "scale_embedder" not in k and not torch.equal(f.get_tensor(k),
                                                                                    teacher.state_dict()[k])]
    assert changed  # the generation branch did train
    pipe = Pipeline.from_pretrained(a)
    assert pipe.student_info.stage == stage
    assert pipe.student_info.gated  # stage 1 was asked to gate its scales; every later stage keeps it
    for name, p in pipe.student.named_parameters():
        if not is_generation_param(name):
            assert torch.equal(p, teacher.state_dict()[name]), name
    res = pipe.generate("a red circle", 0)
    # one forward per step, the prompt's prefill inside the first: stage 1 samples on its rollout schedule (6 points)
    assert res.forwards == (5 if stage == "cfg" else 6)
    answer = pipe.understand(res.images[0], "how many circles are there?", max_new_tokens=2)
    base = Pipeline.from_pretrained(micro_teacher).understand(res.images[0], "how many circles are there?",
                                                              max_new_tokens=2)
    assert answer.texts == base.texts


def test_distill_commands_then_generate_and_edit_with_the_student(micro_teacher, tmp_path, capsys, monkeypatch):
    from hyperbagel.cli import main

    monkeypatch.chdir(tmp_path)  # generate/edit write their default outputs into the working directory

    small = {"batch": {"gen": 1, "edit": 1}, "warmup": 1}
    configs = {"cfg": {"rollout_timesteps": 6, "states_per_rollout": 2}, "tscd": {"steps_per_segment": 2},
               "dmdo": {"fake_updates": 1}}
    init = None
    for stage, extra in configs.items():
        (tmp_path / f"{stage}.json").write_text(json.dumps({**small, **extra}))
        args = ["distill", stage, "--teacher", str(micro_teacher), "--out", str(tmp_path / stage), "--steps", "1",
                "--config", str(tmp_path / f"{stage}.json")]
        assert main(args + (["--init", str(init)] if init else [])) == 0
        init = tmp_path / stage
    assert not read_student_info(init).gated  # the default stage 1 feeds its scales as drawn, at every t
    png = tmp_path / "g.png"
    assert main(["generate", "--ckpt", str(init), "a blue square", "--out", str(png)]) == 0
    assert "(6 model forwards" in capsys.readouterr().out
    assert main(["edit", "--ckpt", str(init), str(png), "remove the square", "--out", str(tmp_path / "e.png")]) == 0
    assert "(7 model forwards" in capsys.readouterr().out  # the VAE and ViT blocks, then 6 steps
    assert main(["generate", "--ckpt", str(micro_teacher), "--student", str(init), "a blue square"]) == 0
    assert "(6 model forwards" in capsys.readouterr().out
    assert main(["generate", "--ckpt", str(init), "a blue square", "--baseline", "--steps", "4"]) == 0
    assert "(6 model forwards, " in capsys.readouterr().out  # 3 guided steps × 2, the teacher (prompt in the first)
    assert main(["generate", "--ckpt", str(init), "a blue square", "--text-scale", "7"]) == 2
    assert "trained range" in capsys.readouterr().err
    assert main(["distill", "tscd", "--teacher", str(micro_teacher), "--init", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "previous distillation stage" in capsys.readouterr().err


def test_tscd_consistency_real_side_still_trains(micro_teacher, chain, tmp_path):
    """PCM's real side (one teacher step + the student's own jump) stays available for the MSE ablation."""
    with pytest.raises(ValueError, match="real"):
        TSCDConfig(teacher=str(micro_teacher), real="data")
    _, make = STAGES["tscd"]
    cfg = make(micro_teacher, tmp_path / "tscd-pcm", chain["cfg"][0])
    cfg.real, cfg.mse_weight, cfg.steps = "consistency", 1.0, 1
    train_tscd(cfg, progress=False)
    logged = _state(tmp_path / "tscd-pcm")["history"][0]
    assert logged["gen/mse"] > 0 and logged["gen/d_hinge"] > 0


def test_dmdo_with_the_papers_path_noise_resumes_exactly_and_trains_another_fake(micro_teacher, chain, tmp_path):
    """``fake_noise="path"`` (the paper's coupling: the fake model learns on its paths' own ``x_T``) stays available
    beside the default's fresh noise (drawn from the rows' own generators): it resumes exactly, and its losses differ
    from the default's on the same rows."""
    _, make = STAGES["dmdo"]
    init = chain["tscd"][0]

    def config(out, **kw):
        cfg = make(micro_teacher, out, init)
        for k, v in kw.items():
            setattr(cfg, k, v)
        return cfg

    assert DMDOConfig(teacher="t", init="i").fake_noise == "fresh"
    a, b = tmp_path / "a", tmp_path / "b"
    train_dmdo(config(a, fake_noise="path"), progress=False)
    train_dmdo(config(b, fake_noise="path"), progress=False, stop_after=1)
    train_dmdo(config(b, fake_noise="path"), progress=False)
    assert _state(a)["history"] == _state(b)["history"]
    default = _state(chain["dmdo"][0])["history"]
    assert _state(a)["history"][0]["gen/fake_fm"] != default[0]["gen/fake_fm"]
    with pytest.raises(ValueError, match="fake_noise"):
        DMDOConfig(teacher="t", init="i", fake_noise="x_T")


def test_a_model_of_a_size_shapes_world_does_not_draw_distils_on_its_scenes_scaled_up(tmp_path):
    """BAGEL-7B's 896 px (the GPU memory check) is not a Shapes World resolution: the recipes draw scenes at 64 px
    and scale the pictures by nearest neighbour. Here at 128 px, one DMDO step (its rollout, teacher contexts for
    text-to-image and editing)."""
    m = preset("micro")
    cfg = dataclasses.replace(m, image_size=128, max_latent_size=16, vit_max_num_patch_per_side=8,
                              vit=dataclasses.replace(m.vit, num_positions_side=8))
    random_model_folder(tmp_path / "teacher", config=cfg, generation_noise=0.05)
    random_student_folder(tmp_path / "teacher", tmp_path / "student")
    train_dmdo(DMDOConfig(teacher=str(tmp_path / "teacher"), init=str(tmp_path / "student"), out=str(tmp_path / "o"),
                          steps=1, fake_updates=1, fake_init="teacher", **SMALL), progress=False)
    assert len(_state(tmp_path / "o")["history"]) == 1

    scene = sample_scene(np.random.default_rng(0), scene_size(128))
    assert scene_size(128) == 64 and scene_size(32) == 32
    small, large = render(scene), picture(scene, 128)
    assert large.shape == (128, 128, 3) and np.array_equal(large, small.repeat(2, axis=0).repeat(2, axis=1))
    assert np.array_equal(picture(scene, 64), small)
