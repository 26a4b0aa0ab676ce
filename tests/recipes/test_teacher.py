"""The teacher recipe: it learns, it resumes exactly, and torchrun with two processes computes the same losses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.presets import preset
from hyperbagel.recipes.teacher import TeacherConfig, train_teacher
from hyperbagel.recipes.vae import save_autoencoder

BATCH = {"gen": 2, "edit": 2, "und": 2}


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vae") / "ae.safetensors"
    save_autoencoder(AutoEncoder(preset("micro").vae), path)
    return path


def _cfg(vae_file, out, steps=4, **kw):
    return TeacherConfig(preset="micro", vae=str(vae_file), out=str(out), steps=steps, batch=dict(BATCH),
                         warmup=2, ckpt_every=100, log_every=100, vit_pretrain={"steps": 3, "batch": 4}, **kw)


def _history(out):
    return json.loads((Path(out) / "train" / "train_state.json").read_text())["history"]


def test_interrupted_run_resumes_with_identical_losses(vae_file, tmp_path):
    train_teacher(_cfg(vae_file, tmp_path / "a"), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "b"), progress=False, stop_after=2)
    assert len(_history(tmp_path / "b")) == 2
    train_teacher(_cfg(vae_file, tmp_path / "b"), progress=False)
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
    model_a, _ = load_pretrained(tmp_path / "a")
    model_b, _ = load_pretrained(tmp_path / "b")
    for (k, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), k


def test_parallel_data_workers_train_the_same_run(vae_file, tmp_path):
    train_teacher(_cfg(vae_file, tmp_path / "a", steps=3), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "b", steps=3, workers=2), progress=False)
    assert _history(tmp_path / "a") == _history(tmp_path / "b")


def test_loss_decreases_and_understanding_path_learns(vae_file, tmp_path):
    cfg = _cfg(vae_file, tmp_path, steps=12, lr=3e-3)
    train_teacher(cfg, progress=False)
    h = _history(tmp_path)
    assert h[-1]["und/ce"] < h[0]["und/ce"] - 0.5


@pytest.mark.slow
def test_two_processes_match_one(vae_file, tmp_path):
    script = (
        "import sys, json; from hyperbagel.recipes.teacher import *; init_distributed();"
        f"cfg = TeacherConfig(preset='micro', vae=sys.argv[1], out=sys.argv[2], steps=2, batch={BATCH!r},"
        "warmup=1, bf16=False, vit_pretrain={'steps': 2, 'batch': 4}); train_teacher(cfg, progress=False)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-c", script, str(vae_file), str(tmp_path / "one")], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          "--no-python", sys.executable, "-c", script, str(vae_file),
                          str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    for a, b in zip(h1, h2):
        for k in a:
            if "/" in k:
                assert a[k] == pytest.approx(b[k], rel=1e-4), k


def test_init_sets_qk_norm_gain_fan_in_scale_and_moe_twins():
    from hyperbagel.model.checkpoint import build_model
    from hyperbagel.recipes.teacher import init_weights

    model = build_model(preset("micro"))
    init_weights(model, 0.02, torch.Generator().manual_seed(0), ("connector.",), qk_norm_init=3.0)
    state = model.state_dict()
    qk = [k for k in state if ".q_norm" in k or ".k_norm" in k]
    assert len(qk) == 4 * preset("micro").llm.num_layers  # q and k, understanding and generation copies
    assert all(torch.equal(state[k], torch.full_like(state[k], 3.0)) for k in qk)
    final_norm = state["language_model.model.norm.weight"]
    assert torch.equal(final_norm, torch.ones_like(final_norm))
    w = state["connector.fc1.weight"]
    assert abs(w.std().item() * w.shape[1] ** 0.5 - 1.0) < 0.1
    gen = [k for k in state if "_moe_gen" in k]
    assert gen and all(torch.equal(state[k], state[k.replace("_moe_gen", "")]) for k in gen)


ALIGN = {"repa": 0.5, "labels": 1.0, "layer": 2}
CURRICULUM = [{"until": 0.5, "batch": {"gen": 3, "edit": 1}, "mix": {"caption_objects": 1}}]


def test_aligned_curriculum_run_resumes_exactly_and_logs_its_losses(vae_file, tmp_path):
    kw = {"align": ALIGN, "curriculum": CURRICULUM}
    train_teacher(_cfg(vae_file, tmp_path / "a", **kw), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "b", **kw), progress=False, stop_after=2)
    train_teacher(_cfg(vae_file, tmp_path / "b", **kw), progress=False)
    a, b = _history(tmp_path / "a"), _history(tmp_path / "b")
    assert a == b
    assert {"gen/repa", "gen/colours", "edit/repa", "edit/colours"} <= set(a[0])
    assert (tmp_path / "b" / "train" / "train_aux.safetensors").is_file()


def test_aligned_run_changes_training_and_plain_run_is_unchanged_by_the_options(vae_file, tmp_path):
    train_teacher(_cfg(vae_file, tmp_path / "plain"), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "off", align={"repa": 0.0, "layer": 3}, curriculum=[]), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "on", align=ALIGN), progress=False)
    plain, off, on = (_history(tmp_path / n) for n in ("plain", "off", "on"))
    assert plain == off
    assert plain[0]["gen/mse"] == on[0]["gen/mse"]  # the first forward is the same model
    assert plain[-1]["gen/mse"] != on[-1]["gen/mse"]  # the auxiliary gradient moved it


def test_snapshots_keep_the_ema_model_of_every_nth_step(vae_file, tmp_path):
    train_teacher(_cfg(vae_file, tmp_path, snapshot_every=2), progress=False)
    snaps = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert snaps == ["000002", "000004"]
    load_pretrained(tmp_path / "snapshots" / "000002")


def test_curriculum_and_shape_overrides_are_checked(vae_file, tmp_path):
    with pytest.raises(ValueError, match="curriculum"):
        _cfg(vae_file, tmp_path, curriculum=[{"until": 0.8}, {"until": 0.4}])
    with pytest.raises(ValueError, match="unknown groups"):
        _cfg(vae_file, tmp_path, curriculum=[{"until": 0.5, "batch": {"images": 2}}])
    train_teacher(_cfg(vae_file, tmp_path, steps=1, llm={"hidden_size": 32, "intermediate_size": 64}), progress=False)
    model, _ = load_pretrained(tmp_path)
    assert model.cfg.llm.hidden_size == 32
