"""Real kills: a recipe run as a subprocess, SIGKILLed at random moments and restarted, must end exactly where an
uninterrupted run ends, and must never leave a checkpoint it cannot resume from.

Each kill lands either at a random moment of the run (10–45 % of the uninterrupted run's duration after the start,
so that every start is killed before it could finish) or the moment a checkpoint write is seen under way (a
``*.tmp`` name in the run folder: a distributed checkpoint being written, or a file about to be renamed into
place; when none is seen within 90 % of that duration, the kill lands then). The first kill is of the second kind,
and they alternate; recipes without checkpoints (the ViT pre-training) get random kills only. After every kill the
same command starts again and resumes. The finished run is then compared with an uninterrupted one: the loss
history as JSON, and every tensor of its final weights, bit for bit (the recipes are deterministic on the CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.torch import load_file


@dataclass
class KillRecipe:
    name: str
    argv: Callable[[Path], list[str]]  # ``hyperbagel`` arguments that train into a folder (resuming if it holds one)
    history: Callable[[Path], list]  # the run's loss history
    weights: Callable[[Path], list[Path]]  # its final weight files
    checkpoints: bool = True  # False: nothing to catch mid-write (it restarts from its beginning)


@dataclass
class KillResult:
    recipe: str
    kills: list[dict] = field(default_factory=list)  # per kill: when, how, what the folder held
    history_equal: bool = False
    weights_equal: bool = False
    seconds_uninterrupted: float = 0.0

    @property
    def ok(self) -> bool:
        return self.history_equal and self.weights_equal


def _run(argv: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hyperbagel.cli", *argv], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, what: str) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err[-2000:]}")


def _writing(folder: Path) -> bool:
    return folder.is_dir() and any(True for _ in folder.rglob("*.tmp"))


def kill_and_compare(recipe: KillRecipe, work: Path, kills: int, seed: int = 0) -> KillResult:
    """Train ``recipe`` once uninterrupted and once with ``kills`` SIGKILLs (alternately at a random moment and
    during a checkpoint write), restarting after each; compare the two."""
    rng = np.random.default_rng(seed)
    work = work.resolve()  # the commands run in ``work``: their paths must not be relative to here
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TQDM_DISABLE": "1"}
    plain, killed = work / f"{recipe.name}-uninterrupted", work / f"{recipe.name}-killed"
    result = KillResult(recipe.name)
    t = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)  # also the commands' working directory: no default folders found there
    _finish(_run(recipe.argv(plain), env, work), f"{recipe.name} (uninterrupted)")
    result.seconds_uninterrupted = time.perf_counter() - t
    for k in range(kills):
        proc = _run(recipe.argv(killed), env, work)
        started = time.perf_counter()
        during_write = recipe.checkpoints and k % 2 == 0  # first, while the most of the run is left to write
        deadline = started + (0.9 if during_write else float(rng.uniform(0.1, 0.45))) * result.seconds_uninterrupted
        while proc.poll() is None and time.perf_counter() < deadline:
            if during_write and _writing(killed):
                break
            time.sleep(0.002 if during_write else 0.02)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        result.kills.append({"after_s": round(time.perf_counter() - started, 3),
                             "mode": "during a checkpoint write" if during_write else "random",
                             "killed": not finished, "checkpoint_write_seen": _writing(killed)})
    _finish(_run(recipe.argv(killed), env, work), f"{recipe.name} (resumed)")
    result.history_equal = recipe.history(plain) == recipe.history(killed)
    a, b = recipe.weights(plain), recipe.weights(killed)
    result.weights_equal = ([x.relative_to(plain) for x in a] == [y.relative_to(killed) for y in b] and len(a) > 0
                            and all(_same_tensors(x, y) for x, y in zip(a, b)))
    return result


def _same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)


def _state(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def _history(out: Path, key: str = "history") -> list:
    return _state(out / "train" / "train_state.json")[key]


def micro_recipes(vae_file: Path, work: Path) -> dict[str, KillRecipe]:
    """Every recipe at the ``micro`` preset, checkpointing every step, and the quickstart at its ``smoke`` preset.
    The draft and the distillation stages start from random ``micro`` folders made here (a teacher whose generation
    branch differs from its understanding one, a student, a reward model): they test resuming, not quality."""
    from hyperbagel.eval.random_folders import random_model_folder, random_reward_folder, random_student_folder
    from hyperbagel.quickstart import deterministic_results

    teacher_cfg = _write_json(work / "teacher-config.json", {"batch": {"gen": 2, "edit": 2, "und": 2}, "ckpt_every": 1,
                                                              "warmup": 2, "vit_pretrain": {"steps": 4, "batch": 4}})
    reward_cfg = _write_json(work / "reward-config.json", {
        "batch": 8, "warmup": 1, "ckpt_every": 1, "report_pairs": 16, "vae": None,
        "model": {"dim": 32, "layers": 1, "heads": 2, "mlp": 64, "stem": [8, 16]}})
    vit_cfg = _write_json(work / "vit-config.json", {"steps": 40, "batch": 8})
    draft_cfg = _write_json(work / "draft-config.json", {
        "data": {"samples": 8, "chunk_size": 2, "max_new_tokens": 8, "batch": 2}, "batch": 2, "warmup": 1,
        "ckpt_every": 1})
    bone = {"batch": {"gen": 1, "edit": 1}, "warmup": 1, "ckpt_every": 1, "log_every": 100}
    distill_cfgs = {
        "cfg": {**bone, "rollout_timesteps": 4, "states_per_rollout": 2},
        "tscd": {**bone, "steps_per_segment": 2},
        "dmdo": {**bone, "fake_updates": 1, "fake_init": "teacher"},
        "adp": bone,
        "refl": {**bone, "probe": 1},
    }
    target = work / "random-teacher"
    if not (target / "config.json").is_file():
        random_model_folder(target, generation_noise=0.05)
    student = work / "random-student"
    if not (student / "student.safetensors").is_file():
        random_student_folder(target, student)
    reward = work / "random-reward"
    if not (reward / "reward.safetensors").is_file():
        random_reward_folder(reward)

    def distill(stage: str) -> KillRecipe:
        config = _write_json(work / f"{stage}-config.json", distill_cfgs[stage])
        start = [] if stage == "cfg" else ["--init", str(student)]
        extra = ["--reward", str(reward)] if stage == "refl" else []
        return KillRecipe(
            stage,
            lambda out: ["distill", stage, "--teacher", str(target), *start, *extra, "--out", str(out), "--steps", "4",
                         "--config", str(config)],
            _history,
            lambda out: [out / "student.safetensors"])

    return {
        "vae": KillRecipe(
            "vae",
            lambda out: ["train", "vae", "--preset", "micro", "--out", str(out), "--steps", "8", "--ckpt-every", "1"],
            lambda out: _history(out, "losses"),
            lambda out: [out / "ae.safetensors"]),
        "vit": KillRecipe(  # not checkpointed (2.5 min at its default): a killed pre-training starts again
            "vit",
            lambda out: ["train", "vit", "--preset", "micro", "--vae", str(vae_file), "--out", str(out),
                         "--config", str(vit_cfg)],
            lambda out: _state(out / "vit_pretrain.json"),
            lambda out: [out / "vit.safetensors"], checkpoints=False),
        "teacher": KillRecipe(
            "teacher",
            lambda out: ["train", "teacher", "--preset", "micro", "--vae", str(vae_file), "--out", str(out),
                         "--steps", "6", "--config", str(teacher_cfg)],
            _history,
            lambda out: [out / "ema.safetensors"]),
        "draft": KillRecipe(  # its data (built first, in chunks) is part of the run
            "draft",
            lambda out: ["train", "draft", "--target", str(target), "--out", str(out), "--data", f"{out}-data",
                         "--steps", "6", "--config", str(draft_cfg)],
            _history,
            lambda out: [out / "draft.safetensors"]),
        "reward": KillRecipe(
            "reward",
            lambda out: ["train", "reward", "--out", str(out), "--steps", "6", "--config", str(reward_cfg)],
            _history,
            lambda out: [out / "reward.safetensors"]),
        **{stage: distill(stage) for stage in distill_cfgs},
        "quickstart": KillRecipe(
            "quickstart",
            lambda out: ["quickstart", "--preset", "smoke", "--out", str(out)],
            deterministic_results,
            lambda out: sorted(out.rglob("*.safetensors"))),
    }
