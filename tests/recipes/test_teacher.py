"""The teacher recipe: it learns, it resumes exactly, and torchrun with two processes computes the same losses."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperbagel.errors import HyperBagelError
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.presets import preset
from hyperbagel.recipes.teacher import TeacherConfig, train_teacher
from hyperbagel.recipes.vae import save_autoencoder
from runs import assert_weights_close, launch, run_here

BATCH = {"gen": 2, "edit": 2, "und": 2}


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vae") / "ae.safetensors"
    save_autoencoder(AutoEncoder(preset("micro").vae), path)
    return path


def _cfg(vae_file, out, steps=4, **kw):
    base = dict(preset="micro", vae=str(vae_file), out=str(out), steps=steps, batch=dict(BATCH), warmup=2,
                ckpt_every=100, log_every=100, vit_pretrain={"steps": 3, "batch": 4})
    return TeacherConfig(**{**base, **kw})


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


def test_a_run_refuses_to_resume_with_another_autoencoder(vae_file, tmp_path):
    train_teacher(_cfg(vae_file, tmp_path / "run", steps=3), progress=False, stop_after=1)
    torch.manual_seed(1)
    other = tmp_path / "other-ae.safetensors"
    save_autoencoder(AutoEncoder(preset("micro").vae), other)
    with pytest.raises(HyperBagelError, match="another autoencoder"):
        train_teacher(_cfg(other, tmp_path / "run", steps=3), progress=False)
    assert len(_history(tmp_path / "run")) == 1  # nothing trained
    train_teacher(_cfg(vae_file, tmp_path / "run", steps=3), progress=False)  # the same one resumes
    assert len(_history(tmp_path / "run")) == 3


def test_parallel_data_workers_train_the_same_run(vae_file, tmp_path):
    train_teacher(_cfg(vae_file, tmp_path / "a", steps=3), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "b", steps=3, workers=2), progress=False)
    assert _history(tmp_path / "a") == _history(tmp_path / "b")


def test_loss_decreases_and_understanding_path_learns(vae_file, tmp_path):
    cfg = _cfg(vae_file, tmp_path, steps=12, lr=3e-3)
    train_teacher(cfg, progress=False)
    h = _history(tmp_path)
    assert h[-1]["und/ce"] < h[0]["und/ce"] - 0.5


def _interactive_sigint() -> None:
    """In the child: SIGINT as a terminal's foreground command has it (the suite may run in the background with
    SIGINT ignored, which the child would inherit and keep)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_the_command_after_a_step_and_the_run_resumes_as_if_never_stopped(vae_file, tmp_path):
    """Ctrl-C reaches the whole process group, the data-loading worker included: the command finishes its step,
    writes a checkpoint there (checkpoints are every 100 steps), exits 130, and resuming loses and repeats nothing."""
    settings = dict(steps=30, batch=dict(BATCH), warmup=2, ckpt_every=100, log_every=1,
                    vit_pretrain={"steps": 3, "batch": 4})
    (tmp_path / "cfg.json").write_text(json.dumps(settings))
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperbagel.cli", "train", "teacher", "--preset", "micro", "--vae", str(vae_file),
         "--out", str(out), "--config", str(tmp_path / "cfg.json"), "--workers", "1"],
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_interactive_sigint)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "teacher step 2 " in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=300)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    done = len(_history(out))
    assert f"interrupted: stopped by SIGINT after step {done}" in stderr
    assert 2 <= done < 30 and (out / "train" / f"dcp-{done:07d}").is_dir()
    train_teacher(TeacherConfig(preset="micro", vae=str(vae_file), out=str(out), **settings), progress=False,
                  stop_after=done + 1)
    reference = TeacherConfig(preset="micro", vae=str(vae_file), out=str(tmp_path / "ref"), **settings)
    train_teacher(reference, progress=False, stop_after=done + 1)
    assert _history(out) == _history(tmp_path / "ref")


SCRIPT = f"""
import json, signal, sys
from pathlib import Path
from hyperbagel.errors import Interrupted
from hyperbagel.recipes import teacher
from hyperbagel.training.distributed import init, world

init()
out = Path(sys.argv[2])
cfg = teacher.TeacherConfig(preset="micro", vae=sys.argv[1], out=str(out), steps=5, batch={BATCH!r}, warmup=1,
                            bf16=False, vit_pretrain={{"steps": 2, "batch": 4}}, sharding=json.loads(sys.argv[4]))
signalled = int(sys.argv[5])  # this process gets a SIGTERM during step 2 (-1: none does)
Progress = teacher.Progress


class Signalled(Progress):
    def step(self, step, logged):
        super().step(step, logged)
        if step + 1 == 2 and world()[0] == signalled:
            signal.raise_signal(signal.SIGTERM)


teacher.Progress = Signalled
try:
    teacher.train_teacher(cfg, progress=False, stop_after=int(sys.argv[3]) or None)
except Interrupted as stop:
    logged = json.loads((out / "train" / "train_state.json").read_text())["history"]
    print(f"stopped after {{stop.step}}, {{len(logged)}} steps in its checkpoint")
finally:
    teacher.Progress = Progress  # the next job in this process runs unpatched
"""


def _assert_close(h1, h2, rel=1e-5):
    assert [a["step"] for a in h1] == [b["step"] for b in h2]
    for a, b in zip(h1, h2):
        assert set(a) == set(b)
        for k in a:
            if "/" in k:
                assert a[k] == pytest.approx(b[k], rel=rel), (a["step"], k)


@pytest.mark.slow
def test_two_processes_match_one_and_checkpoints_reshard_both_ways(vae_file, tmp_path):
    def job(name, stop=0, sharding=None, signalled=-1):
        """The micro teacher to ``stop`` steps or all 5; ``signalled``: the rank that gets a SIGTERM in step 2."""
        return vae_file, tmp_path / name, stop, json.dumps(sharding or {}), signalled

    run_here(SCRIPT, [job("one"), job("one-two", stop=3)])
    printed = launch(2, SCRIPT, [job("two"), job("two-stop", signalled=1), job("two-stop"), job("two-one", stop=3),
                                 job("one-two"), job("two-ac", sharding={"activation_checkpointing": True}),
                                 job("two-bf16", sharding={"param_dtype": "bfloat16"})], port=29533)
    run_here(SCRIPT, [job("two-one")])
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    _assert_close(one, two)
    assert (tmp_path / "two" / "train" / "dcp-0000005").is_dir()
    # a SIGTERM to one process of two stops both after the same step, with a checkpoint there; resumed, the same
    # losses. A 2-process run stopped mid-way resumes in 1 too, and a 1-process run in 2
    assert printed.count("stopped after") == printed.count("stopped after 2, 2 steps in its checkpoint") == 2
    _assert_close(two, _history(tmp_path / "two-stop"), rel=1e-12)
    _assert_close(one, _history(tmp_path / "two-one"))
    _assert_close(one, _history(tmp_path / "one-two"))
    # activation checkpointing recomputes each layer in backward: the same losses
    _assert_close(two, _history(tmp_path / "two-ac"), rel=1e-6)
    # bf16 gathered parameters (FSDP2's MixedPrecisionPolicy; fp32 reductions): close, not equal
    _assert_close(two, _history(tmp_path / "two-bf16"), rel=3e-3)
    # the exported model folders agree
    a, _ = load_pretrained(tmp_path / "one")
    b, _ = load_pretrained(tmp_path / "two-one")
    assert_weights_close(a.state_dict(), b.state_dict())


def test_a_run_checkpointed_in_the_older_safetensors_format_resumes_exactly(vae_file, tmp_path):
    """The long run on this machine was checkpointed as safetensors files before the distributed checkpoints."""
    train_teacher(_cfg(vae_file, tmp_path / "a"), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "b"), progress=False, stop_after=2)
    _rewrite_in_older_format(tmp_path / "b" / "train")
    train_teacher(_cfg(vae_file, tmp_path / "b"), progress=False)
    assert _history(tmp_path / "a") == _history(tmp_path / "b")


def _rewrite_in_older_format(folder: Path) -> None:
    """Turn a one-process distributed checkpoint into what ``recipes/checkpointing.save_training_state`` wrote."""
    import shutil

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from hyperbagel.files import atomic_save_tensors

    state = json.loads((folder / "train_state.json").read_text())
    dcp_to_torch_save(folder / state["checkpoint"], folder / "full.pt")
    full = torch.load(folder / "full.pt", weights_only=False)
    model = {k.removeprefix("model."): v for k, v in full["model"].items()}
    atomic_save_tensors(model, folder / "train_model.safetensors")
    atomic_save_tensors(full["ema"], folder / "train_ema.safetensors")
    optim = full["model.optim"]
    tensors = {f"{name.removeprefix('model.')}::{key}": value for name, s in optim["state"].items()
               for key, value in s.items()}
    atomic_save_tensors({k: v if torch.is_tensor(v) else torch.tensor(v) for k, v in tensors.items()},
                        folder / "optimizer.safetensors")
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optim["param_groups"]]
    state.pop("checkpoint")
    (folder / "train_state.json").write_text(json.dumps({**state, "param_groups": groups}))
    shutil.rmtree(folder / f"dcp-{state['step']:07d}")
    (folder / "full.pt").unlink()


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


def test_aligned_run_changes_training_and_plain_run_is_unchanged_by_the_options(vae_file, tmp_path):
    train_teacher(_cfg(vae_file, tmp_path / "plain"), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "off", align={"repa": 0.0, "layer": 3}, curriculum=[]), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "on", align=ALIGN), progress=False)
    plain, off, on = (_history(tmp_path / n) for n in ("plain", "off", "on"))
    assert plain == off
    assert plain[0]["gen/mse"] == on[0]["gen/mse"]  # the first forward is the same model
    assert plain[-1]["gen/mse"] != on[-1]["gen/mse"]  # the auxiliary gradient moved it


def test_the_default_curriculum_asks_yes_no_questions_on_small_scenes_in_its_phase_only():
    import numpy as np

    from hyperbagel.model.sequence import Text
    from hyperbagel.model.tokenizer import ShapesTokenizer
    from hyperbagel.recipes.shapes_tasks import TaskMix, und_sample
    from hyperbagel.recipes.teacher import phase_at
    from hyperbagel.world.vocab import all_words

    cfg = TeacherConfig()
    assert [phase_at(cfg, s)[1].yes_no for s in (0, 3709, 3710, 4689, 4690, 6999)] == [0, 0, 0.5, 0.5, 0, 0]
    assert phase_at(cfg, 4000)[0] == cfg.batch
    tok = ShapesTokenizer.build(list(all_words()))

    def questions(mix: TaskMix) -> list[str]:
        return [tok.decode([b for b in und_sample(np.random.default_rng(i), tok, 64, mix)
                            if isinstance(b, Text)][0].ids) for i in range(40)]

    assert {q.split()[0] for q in questions(TaskMix(describe=0.0, yes_no=1.0))} == {"is", "are"}  # exist, compare
    # switched off, the option draws nothing: the data are the same whatever its scene size
    assert questions(TaskMix()) == questions(TaskMix(yes_no_objects=4))
    with pytest.raises(ValueError, match="yes_no"):
        TaskMix(yes_no=1.5)


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


def test_packed_steps_train_the_same_samples_to_the_same_losses(vae_file, tmp_path):
    # fp32: under bf16 autocast the two layouts round differently (the ViT runs same-size images as a batch
    # in one, packed under a mask in the other), and training amplifies that to ~1e-4.
    train_teacher(_cfg(vae_file, tmp_path / "groups", steps=3, bf16=False), progress=False)
    train_teacher(_cfg(vae_file, tmp_path / "packed", steps=3, packed=True, bf16=False), progress=False)
    _assert_close(_history(tmp_path / "groups"), _history(tmp_path / "packed"), rel=1e-6)
    with pytest.raises(ValueError, match="packed"):
        _cfg(vae_file, tmp_path, packed=True, align=ALIGN)


def test_a_shared_pretrained_vit_starts_the_same_run(vae_file, tmp_path):
    from hyperbagel.recipes.teacher import save_pretrained_vit

    train_teacher(_cfg(vae_file, tmp_path / "own"), progress=False)
    save_pretrained_vit(_cfg(vae_file, tmp_path / "unused"), tmp_path / "vit.safetensors")
    train_teacher(_cfg(vae_file, tmp_path / "shared", vit_init=str(tmp_path / "vit.safetensors")), progress=False)
    assert _history(tmp_path / "own") == _history(tmp_path / "shared")


def test_a_frozen_vit_stays_as_pretrained_while_the_rest_trains(vae_file, tmp_path):
    from hyperbagel.recipes.teacher import save_pretrained_vit

    save_pretrained_vit(_cfg(vae_file, tmp_path / "unused"), tmp_path / "vit.safetensors")
    from safetensors.torch import load_file

    pretrained = load_file(tmp_path / "vit.safetensors")
    for freeze in (True, False):
        out = tmp_path / f"freeze-{freeze}"
        train_teacher(_cfg(vae_file, out, steps=3, vit_init=str(tmp_path / "vit.safetensors"), freeze_vit=freeze,
                           ema_decay=0.0), progress=False)
        model, _ = load_pretrained(out)
        vit = model.vit_model.vision_model.state_dict()
        same = all(torch.equal(vit[k], v) for k, v in pretrained.items())
        assert same == freeze
        assert not torch.equal(model.connector.fc1.weight, _fresh_connector(vae_file, tmp_path))


def _fresh_connector(vae_file, tmp_path):
    from hyperbagel.recipes.teacher import build_teacher
    from hyperbagel.recipes.vae import load_autoencoder

    _, model = build_teacher(_cfg(vae_file, tmp_path / "unused"), load_autoencoder(vae_file).config)
    return model.connector.fc1.weight


def test_a_full_disk_at_a_checkpoint_stops_cleanly_and_the_last_one_resumes(vae_file, tmp_path, monkeypatch):
    import errno

    import hyperbagel.training.checkpoint as ckpt
    from hyperbagel.errors import HyperBagelError

    train_teacher(_cfg(vae_file, tmp_path / "a"), progress=False)
    cfg = _cfg(vae_file, tmp_path / "b", ckpt_every=2)
    train_teacher(cfg, progress=False, stop_after=2)
    real_save = ckpt.dcp.save

    def fills_the_disk(state, checkpoint_id):
        real_save(state, checkpoint_id=checkpoint_id)  # most of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.dcp, "save", fills_the_disk)
    with pytest.raises(HyperBagelError, match="no space left"):
        train_teacher(_cfg(vae_file, tmp_path / "b", ckpt_every=2), progress=False)
    monkeypatch.undo()
    folder = tmp_path / "b" / "train"
    assert sorted(p.name for p in folder.iterdir()) == ["dcp-0000002", "train_state.json"]
    train_teacher(_cfg(vae_file, tmp_path / "b", ckpt_every=2), progress=False)
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
