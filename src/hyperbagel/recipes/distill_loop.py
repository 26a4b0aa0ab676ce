"""The loop every distillation stage runs around its own step: resume, the learning-rate schedule, progress and
history, checkpoints (every ``ckpt_every`` steps, at the end, and when a signal asks the run to stop) and the export
of the deployable student. A recipe builds its roles and optimizers, then hands ``StageLoop.run`` one function: the
step's losses, backward passes and optimizer steps, returning what it logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from hyperbagel.model.student import StudentInfo
from hyperbagel.recipes.distill_common import (
    DistillConfig,
    Runner,
    Setup,
    check_understanding,
    export_student,
    lr_at,
    resume,
    save,
    write_config,
)
from hyperbagel.training.interrupt import graceful_stop
from hyperbagel.training.progress import Progress

log = logging.getLogger(__name__)


class StageLoop:
    """One stage's run over its trained roles (``trained[role]`` is stepped by ``optimizers[role]``). Each
    optimizer's learning rate as built is its base rate, which ``lr_at`` schedules. Building the loop restores the
    last checkpoint, if any: ``start``, ``history`` and ``state`` (None on a fresh run) say where it stands."""

    def __init__(self, stage: str, cfg: DistillConfig, setup: Setup, trained: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer]):
        if set(trained) != set(optimizers):
            raise ValueError(f"every trained role needs its optimizer: {sorted(trained)} against {sorted(optimizers)}")
        self.stage, self.cfg, self.setup = stage, cfg, setup
        self.trained, self.optimizers = trained, optimizers
        self.base_lrs = {role: opt.param_groups[0]["lr"] for role, opt in optimizers.items()}
        self.out = Path(cfg.out)
        self.state = resume(self.out, trained, optimizers)
        self.start = self.state["step"] if self.state else 0
        self.history: list[dict] = self.state["history"] if self.state else []
        write_config(cfg, self.out)

    def run(self, train_step: Callable[[int], dict[str, float]], export: Runner, info: StudentInfo,
            progress: bool = True, stop_after: int | None = None,
            checkpoint_state: Callable[[int], dict] = lambda done: {}) -> Path:
        """Steps ``start`` … ``cfg.steps − 1``: each sets every role's learning rate, clears its gradients and calls
        ``train_step(step)``. ``checkpoint_state(done)`` adds to what each checkpoint keeps; ``export``'s student is
        written with ``info`` beside every checkpoint. ``stop_after`` ends the call after that many total steps,
        with a checkpoint, as an interruption would. Returns the model folder."""
        cfg = self.cfg
        bar = Progress(f"distill {self.stage}", cfg.steps, self.start, cfg.log_every, progress, log)
        with graceful_stop(stop_after) as stop:
            for step in range(self.start, cfg.steps):
                for role, opt in self.optimizers.items():
                    for group in opt.param_groups:
                        group["lr"] = lr_at(cfg, step, self.base_lrs[role])
                    opt.zero_grad(set_to_none=True)
                logged = {"step": step + 1, "lr": lr_at(cfg, step), **train_step(step)}
                self.history.append(logged)
                bar.step(step, logged)
                stopping = stop.due(step + 1)
                if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps or stopping:
                    self._checkpoint(step + 1, checkpoint_state(step + 1), export, info)
                if stopping:
                    break
        bar.close()
        return self.out

    def _checkpoint(self, done: int, extra: dict, export: Runner, info: StudentInfo) -> None:
        check_understanding(self.setup)
        save(self.out, done, self.trained, self.optimizers,
             {"history": self.history, **extra, "understanding_sha256": self.setup.fingerprint})
        export_student(self.out, export, info, self.cfg.teacher)
