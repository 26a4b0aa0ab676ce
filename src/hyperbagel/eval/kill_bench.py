"""Real kills: a recipe run as a subprocess, SIGKILLed at random moments and restarted, must end exactly where an
uninterrupted run ends, and must never leave a checkpoint it cannot resume from.

Each kill lands either at a random moment of the run (its time drawn from the uninterrupted run's duration) or the
moment a checkpoint write is seen under way (a ``*.tmp`` name in the run folder: a distributed checkpoint being
written, or a file about to be renamed into place). After every kill the same command starts again and resumes.
The finished run is then compared with an uninterrupted one: the loss history as JSON, and every tensor of its
final weights, bit for bit (the recipes are deterministic on the CPU).
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
        during_write = k % 2 == 1
        deadline = started + (2 * result.seconds_uninterrupted if during_write
                              else float(rng.uniform(0.2, 1.0)) * result.seconds_uninterrupted)
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
    result.weights_equal = all(_same_tensors(a, b) for a, b in zip(recipe.weights(plain), recipe.weights(killed)))
    return result


def _same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)


def _state(path: Path) -> dict:
    return json.loads(path.read_text())


def micro_recipes(vae_file: Path, work: Path) -> dict[str, KillRecipe]:
    """The recipes on the shared training utilities, at the ``micro`` preset, checkpointing every step."""
    teacher_cfg = work / "teacher-config.json"
    teacher_cfg.parent.mkdir(parents=True, exist_ok=True)
    teacher_cfg.write_text(json.dumps({"batch": {"gen": 2, "edit": 2, "und": 2}, "ckpt_every": 1, "warmup": 2,
                                       "vit_pretrain": {"steps": 4, "batch": 4}}))
    reward_cfg = work / "reward-config.json"
    reward_cfg.write_text(json.dumps({"batch": 8, "warmup": 1, "ckpt_every": 1, "report_pairs": 16, "vae": None,
                                      "model": {"dim": 32, "layers": 1, "heads": 2, "mlp": 64, "stem": [8, 16]}}))
    return {
        "teacher": KillRecipe(
            "teacher",
            lambda out: ["train", "teacher", "--preset", "micro", "--vae", str(vae_file), "--out", str(out),
                         "--steps", "6", "--config", str(teacher_cfg)],
            lambda out: _state(out / "train" / "train_state.json")["history"],
            lambda out: [out / "ema.safetensors"]),
        "vae": KillRecipe(
            "vae",
            lambda out: ["train", "vae", "--preset", "micro", "--out", str(out), "--steps", "8", "--ckpt-every", "1"],
            lambda out: _state(out / "train" / "train_state.json")["losses"],
            lambda out: [out / "ae.safetensors"]),
        "reward": KillRecipe(
            "reward",
            lambda out: ["train", "reward", "--out", str(out), "--steps", "6", "--config", str(reward_cfg)],
            lambda out: _state(out / "train" / "train_state.json")["history"],
            lambda out: [out / "reward.safetensors"]),
    }
