"""The 1-step recipes on ``micro``: ``train reward``, ``distill adp`` and ``distill refl`` each resume exactly (same
history, same weights), the understanding weights stay bit-identical, the result samples in one forward (plus the
context prefill) for text-to-image, editing and think mode, and the commands run end to end."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hyperbagel.errors import HyperBagelError
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.student import STUDENT_FILE, StudentInfo, is_generation_param, save_student, student_from_teacher
from hyperbagel.pipeline import Pipeline
from hyperbagel.recipes.distill_adp import ADPConfig, train_adp
from hyperbagel.recipes.distill_common import understanding_fingerprint
from hyperbagel.recipes.distill_refl import ReFLConfig, train_refl
from hyperbagel.recipes.reward import (
    POOL,
    RewardTrainConfig,
    build_pool,
    generated_pairs,
    pool_rows,
    train_reward,
)
from hyperbagel.recipes.vae import save_autoencoder
from hyperbagel.training.checkpoint import read
from hyperbagel.world.tasks.match import judge
from runs import assert_same_checkpoint

SMALL = dict(batch={"gen": 1, "edit": 1}, warmup=1, ckpt_every=100, log_every=100)
REWARD_MODEL = {"dim": 32, "layers": 1, "heads": 2, "mlp": 64, "stem": [8, 16]}


@pytest.fixture(scope="module")
def dmdo_folder(micro_teacher, tmp_path_factory):
    """A stand-in 6-step model: the teacher's generation branch, perturbed, saved as a stage-3 student."""
    folder = tmp_path_factory.mktemp("dmdo")
    teacher, _ = load_pretrained(micro_teacher)
    student = student_from_teacher(teacher)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if is_generation_param(name) and p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    save_student(folder, student, StudentInfo(stage="dmdo", lineage={"dmdo": str(folder)}), micro_teacher)
    return folder


@pytest.fixture(scope="module")
def vae_file(micro_teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "ae.safetensors"
    save_autoencoder(load_pretrained(micro_teacher)[1], path)
    return path


def _state(out: Path) -> dict:
    return json.loads((out / "train" / "train_state.json").read_text())


def _twice(train, make, root: Path, name: str) -> tuple[Path, Path]:
    """Trained uninterrupted (``a``), and interrupted after one step then resumed (``b``)."""
    a, b = root / f"{name}-a", root / f"{name}-b"
    train(make(a), progress=False)
    train(make(b), progress=False, stop_after=1)
    assert len(_state(b)["history"]) == 1
    train(make(b), progress=False)
    return a, b


@pytest.fixture(scope="module")
def chain(micro_teacher, dmdo_folder, vae_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("one-step")
    out = {"reward": _twice(train_reward, lambda o: RewardTrainConfig(
        out=str(o), vae=str(vae_file), model=REWARD_MODEL, steps=3, batch=8, warmup=1, report_pairs=16,
        generators=[str(dmdo_folder)], pool_images=6), root, "reward")}
    out["adp"] = _twice(train_adp, lambda o: ADPConfig(
        teacher=str(micro_teacher), init=str(dmdo_folder), out=str(o), steps=3, lr=1e-3, path_steps=2, **SMALL),
        root, "adp")
    out["refl"] = _twice(train_refl, lambda o: ReFLConfig(
        teacher=str(micro_teacher), init=str(out["adp"][0]), reward=str(out["reward"][0]), out=str(o), steps=3,
        lr=1e-3, probe=2, **SMALL), root, "refl")
    second = root / "reward-seed1"  # a second reward model, on its own seed, for the ensemble
    train_reward(RewardTrainConfig(out=str(second), vae=str(vae_file), model=REWARD_MODEL, steps=3, batch=8, warmup=1,
                                   report_pairs=16, generators=[str(dmdo_folder)], pool_images=6, seed=1),
                 progress=False)
    out["refl-hardened"] = _twice(train_refl, lambda o: ReFLConfig(
        teacher=str(micro_teacher), init=str(out["adp"][0]), reward=str(out["reward"][0]), ensemble=[str(second)],
        views=2, max_shift=3, out=str(o), steps=3, lr=1e-3, probe=2, **SMALL), root, "refl-hardened")
    return out


@pytest.mark.parametrize("recipe", ["reward", "adp", "refl", "refl-hardened"])
def test_recipe_resumes_exactly(chain, recipe):
    a, b = chain[recipe]
    assert _state(a)["history"] == _state(b)["history"]
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors")) and files
    for name in files:
        with safe_open(str(a / name), "pt") as fa, safe_open(str(b / name), "pt") as fb:
            assert sorted(fa.keys()) == sorted(fb.keys())
            for k in fa.keys():
                assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), (name, k)
    assert_same_checkpoint(a, b)
    assert all(h["grad_norm"] > 0 for h in _state(a)["history"])  # and it trained


def test_reward_pool_is_the_generators_samples_judged(chain, dmdo_folder):
    a, _ = chain["reward"]
    cfg = RewardTrainConfig(out=str(a), model=REWARD_MODEL, generators=[str(dmdo_folder)], pool_images=6)
    pool = build_pool(cfg, a)  # read back from a/pool
    assert len(pool.items) == 6 and pool.kinds == [f"generated:{dmdo_folder}"] * 6
    assert list(pool.labels) == [judge(it, im) for it, im in zip(pool.items, pool.images)]
    fresh = generated_pairs(dmdo_folder, cfg, 6, stream=POOL, index=0, first_seed=1_000_000, bf16=True)
    assert all(np.array_equal(x, y) for x, y in zip(fresh.images, pool.images))  # the samples, not stand-ins
    h = _state(a)["history"]
    assert all(0 <= r["pool_positives"] <= 1 for r in h)
    assert len(pool_rows(cfg, 0, pool)) == round(cfg.batch * cfg.pool_share)
    with pytest.raises(HyperBagelError, match="delete"):  # a pool built for other settings is not reused
        build_pool(dataclasses.replace(cfg, pool_images=5), a)


def test_adding_a_generator_keeps_the_pool_built_for_the_others(chain, dmdo_folder, tmp_path):
    shutil.copytree(chain["reward"][0] / "pool", tmp_path / "pool")
    first = tmp_path / "pool" / "0.safetensors"
    built = first.stat().st_mtime_ns
    cfg = RewardTrainConfig(out=str(tmp_path), generators=[str(dmdo_folder)] * 2, pool_images=6)
    pool = build_pool(cfg, tmp_path)
    assert len(pool.items) == 12 and (tmp_path / "pool" / "1.safetensors").is_file()
    assert first.stat().st_mtime_ns == built  # read back, not rebuilt
    assert pool.items[:6] != pool.items[6:]  # each generator samples its own prompts


def test_adp_trains_both_discriminators_and_the_generator(chain):
    a, _ = chain["adp"]
    roles = {k.split(".")[0] for k in read(a / "train")}
    assert roles == {"generator", "disc", "pixel_disc"}
    h = _state(a)["history"]
    assert all(r["disc_grad_norm"] > 0 and r["pixel_grad_norm"] > 0 for r in h)
    assert all(k in h[0] for k in ("gen/g_adv", "gen/d_latent", "gen/d_pixel", "edit/g_adv"))


def test_a_hardened_reward_is_another_objective(chain):
    plain, hardened = (_state(chain[name][0])["history"] for name in ("refl", "refl-hardened"))
    assert [h["gen/reward"] for h in plain] != [h["gen/reward"] for h in hardened]
    assert json.loads((chain["refl-hardened"][0] / "distill_config.json").read_text())["ensemble"]


def test_refl_logs_the_exact_judge_beside_the_reward(chain):
    a, _ = chain["refl"]
    state = _state(a)
    assert all(f"{g}/{k}" in h for h in state["history"] for g in ("gen", "edit") for k in ("reward", "judge"))
    probes = state["probes"]
    assert [p["step"] for p in probes] == [0, 3]  # the ADP model before feedback, then each checkpoint
    assert all(0 <= p["probe/gen_judge"] <= 1 and "probe/edit_reward" in p for p in probes)


@pytest.mark.parametrize("stage", ["adp", "refl"])
def test_understanding_bit_identical_and_one_forward_sampling(micro_teacher, chain, stage):
    a, _ = chain[stage]
    teacher, _ = load_pretrained(micro_teacher)
    assert _state(a)["understanding_sha256"] == understanding_fingerprint(teacher)
    with safe_open(str(a / STUDENT_FILE), "pt") as f:
        keys = list(f.keys())
        assert keys and all(is_generation_param(k) for k in keys)
        assert any(not torch.equal(f.get_tensor(k), teacher.state_dict()[k]) for k in keys
                   if "scale_embedder" not in k)
    pipe = Pipeline.from_pretrained(a)
    assert pipe.student_info.stage == stage and pipe.student_info.steps == 1
    for name, p in pipe.student.named_parameters():
        if not is_generation_param(name):
            assert torch.equal(p, teacher.state_dict()[name]), name
    gen = pipe.generate(["a red circle", "two blue squares"], [0, 1])
    assert gen.forwards == 1  # one denoising forward for the whole batch, the prompt's prefill inside it
    edit = pipe.edit(gen.images[:1], "remove the circle", 0)
    assert edit.forwards == 1 + 1  # the VAE and ViT blocks, then one denoising forward with the instruction
    think = pipe.generate("a red circle", 0, think=True, max_think_tokens=3)
    assert think.plans is not None and think.forwards <= 1 + 3 + 1 + 1  # prefill, ≤ 3 plan tokens, plan, 1 step
    base = Pipeline.from_pretrained(micro_teacher)
    q = "how many circles are there?"
    assert pipe.understand(gen.images[0], q, max_new_tokens=2).texts == \
        base.understand(gen.images[0], q, max_new_tokens=2).texts


def test_one_step_commands_end_to_end(micro_teacher, dmdo_folder, vae_file, tmp_path, capsys):
    from hyperbagel.cli import main

    (tmp_path / "reward.json").write_text(json.dumps({"model": REWARD_MODEL, "batch": 8, "warmup": 1,
                                                      "report_pairs": 16}))
    assert main(["train", "reward", "--out", str(tmp_path / "reward"), "--vae", str(vae_file), "--steps", "1",
                 "--config", str(tmp_path / "reward.json"), "--judge-model", str(dmdo_folder),
                 "--judge-images", "4"]) == 0
    report = json.loads((tmp_path / "reward" / "report.json").read_text())
    assert report["renders"]["n"] == 16 and report["generated"]["n"] == 4
    assert "Spearman" in capsys.readouterr().out
    small = json.dumps({"batch": {"gen": 1, "edit": 1}, "warmup": 1, "path_steps": 2})
    (tmp_path / "adp.json").write_text(small)
    assert main(["distill", "adp", "--teacher", str(micro_teacher), "--init", str(dmdo_folder), "--out",
                 str(tmp_path / "adp"), "--steps", "1", "--config", str(tmp_path / "adp.json")]) == 0
    (tmp_path / "refl.json").write_text(json.dumps({"batch": {"gen": 1, "edit": 1}, "warmup": 1, "probe": 1}))
    assert main(["distill", "refl", "--teacher", str(micro_teacher), "--init", str(tmp_path / "adp"), "--reward",
                 str(tmp_path / "reward"), str(tmp_path / "reward"), "--out", str(tmp_path / "refl"), "--steps", "1",
                 "--config", str(tmp_path / "refl.json")]) == 0  # two reward folders: an ensemble
    written = json.loads((tmp_path / "refl" / "distill_config.json").read_text())
    assert (written["reward"], written["ensemble"]) == (str(tmp_path / "reward"), [str(tmp_path / "reward")])
    capsys.readouterr()
    png = tmp_path / "g.png"
    assert main(["generate", "--ckpt", str(tmp_path / "refl"), "a blue square", "--out", str(png)]) == 0
    assert "(1 model forwards" in capsys.readouterr().out
    assert main(["edit", "--ckpt", str(tmp_path / "refl"), str(png), "remove the square", "--out",
                 str(tmp_path / "e.png")]) == 0
    assert "(2 model forwards" in capsys.readouterr().out  # the VAE and ViT blocks, then the one step
    assert main(["eval-model", "--ckpt", str(tmp_path / "refl"), "--suite", "geneval-shapes", "--out",
                 str(tmp_path / "ev"), "--limit", "6", "--samples", "2", "--batch", "3", "--json",
                 str(tmp_path / "ev.json")]) == 0
    scores = json.loads((tmp_path / "ev.json").read_text())
    # per image, not batch; a call of more than 4 images prefills the prompt apart
    assert (scores["sampler"], scores["nfe"], scores["n_images"]) == ("student-1", 2, 12)
    assert main(["distill", "refl", "--teacher", str(micro_teacher), "--init", str(tmp_path / "adp"), "--reward",
                 str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "no reward model" in capsys.readouterr().err
    assert main(["train", "reward", "--out", str(tmp_path / "r2"), "--vae", str(vae_file), "--generator",
                 str(tmp_path / "missing")]) == 2
    assert "generator model folder not found" in capsys.readouterr().err


def test_bench_rows_sample_one_step_models_in_one_forward(chain):
    from hyperbagel.eval.bench import bench_rows

    rows = {r.name: r for r in bench_rows("generate", {"dmdo": None, "adp": chain["adp"][0], "refl": None})}
    assert rows["dmdo-6"].sampler.num_timesteps == 7
    assert rows["adp-1"].sampler.num_timesteps == 2 and rows["adp-1"].accelerated  # from its student file
    assert rows["refl-1"].sampler.num_timesteps == 2  # by name


def test_bench_edit_runs_the_one_step_row(micro_teacher, chain, tmp_path, capsys):
    from hyperbagel.cli import main
    from hyperbagel.eval.shapes_encoder import EncoderConfig, train_encoder

    enc = tmp_path / "enc.safetensors"
    train_encoder(EncoderConfig(steps=5, batch=8), enc)
    out = tmp_path / "bench"
    assert main(["bench", "edit", "--teacher", str(micro_teacher), "--stage", f"adp={chain['adp'][0]}", "--rows",
                 "adp-1", "--limit", "2", "--samples", "1", "--batch", "4", "--out", str(out), "--encoder", str(enc),
                 "--bootstrap", "20"]) == 0
    rows = {r["row"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    assert list(rows) == ["teacher", "adp-1"]
    assert rows["adp-1"]["forwards_per_image"] == 1 + 1  # VAE + ViT blocks, one denoising forward with the text
    assert rows["adp-1"]["speedup"] > 1 and "ci95" in rows["adp-1"]["vs_teacher"]
    capsys.readouterr()
