"""Stage 1, CFG distillation (Hyper-Bagel §3.2.1): one student forward per step reproduces the teacher's guided
velocity at any text scale (and image scale, for editing).

Each step, per task group: the teacher builds the three branch contexts, draws guidance scales (text ~ U[1, 5],
image ~ U[1, 2.5] for editing, 1.0 for text-to-image) and runs its own guided sampler (BAGEL's shifted Euler, CFG
interval and renorm), recording every state it visits and the exact guided velocity there. The student, given the
same context, time and scales, regresses ``states_per_rollout`` of those states per row (MSE). Only the
generation branch and the guidance embedders train.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperbagel.distill.cfg import cfg_distill_loss, teacher_guided_velocity
from hyperbagel.flow.sampler import euler
from hyperbagel.flow.schedule import bagel_timesteps
from hyperbagel.model.context import Forwarder
from hyperbagel.model.student import generation_params, save_student
from hyperbagel.recipes.distill_common import (
    GROUPS,
    DistillConfig,
    autocast,
    check_understanding,
    conditions,
    load_roles,
    load_setup,
    log_step,
    lr_at,
    new_student,
    progress_bar,
    save_roles,
    student_info,
    understanding_fingerprint,
    write_config,
)

log = logging.getLogger(__name__)


@dataclass
class CFGDistillConfig(DistillConfig):
    out: str = "runs/distill-cfg"
    steps: int = 200
    lr: float = 2e-4
    rollout_timesteps: int = 50  # the teacher sampler's schedule (BAGEL's: 50 points, 49 guided Euler steps)
    states_per_rollout: int = 16  # states of each rollout the student regresses (per row): a third of them

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.states_per_rollout < self.rollout_timesteps:
            raise ValueError("CFGDistillConfig.states_per_rollout must be in [1, rollout_timesteps − 1]")


def step_loss(setup, student_fwd: Forwarder, cfg: CFGDistillConfig, step: int, group: str) -> float:
    """Backward of one group's loss; returns it."""
    pipe, ids = setup.pipe, setup.ids
    c = conditions(setup, cfg, step, group, cfg_branches=True)
    trajectory: list = []
    with torch.no_grad(), autocast(cfg):

        def guided(x, t):
            return teacher_guided_velocity(pipe.fwd, c.branches, ids, x, float(t), c.text_scale, c.image_scale,
                                           c.guidance)

        euler(guided, c.noise, bagel_timesteps(cfg.rollout_timesteps, cfg.shift), trajectory)
    B, K = c.batch, cfg.states_per_rollout
    # K distinct steps of the rollout per row, from each row's own generator
    picks = torch.stack([torch.randperm(len(trajectory), generator=g)[:K] for g in c.generators])  # [B, K]
    rows = torch.arange(B).repeat_interleave(K)
    chosen = picks.reshape(-1)
    xs = torch.stack([step_state[1] for step_state in trajectory])  # [S, B, N, P]
    vs = torch.stack([step_state[2] for step_state in trajectory])
    ts = torch.stack([torch.as_tensor(step_state[0], dtype=torch.float32) for step_state in trajectory])
    x, target, t = xs[chosen, rows], vs[chosen, rows], ts[chosen]
    ctx = c.branches.cond.select(rows)
    with autocast(cfg):
        v, _ = student_fwd.velocity(ctx, x, t, ids, text_scale=c.text_scale[rows], image_scale=c.image_scale[rows])
        loss = cfg_distill_loss(v, target)
    n = sum(cfg.batch.values())
    (loss * c.batch / n).backward()
    return float(loss.detach())


def train_cfg(cfg: CFGDistillConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) stage 1; returns the model folder (the teacher's files + ``student.safetensors``).
    ``stop_after`` ends the call after that many total steps with a checkpoint, as an interruption would."""
    out = Path(cfg.out)
    setup = load_setup(cfg)
    fingerprint = understanding_fingerprint(setup.pipe.model)
    torch.manual_seed(cfg.seed)
    student = new_student(setup, cfg.init)
    student_fwd = Forwarder(student)
    params = generation_params(student)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    state = load_roles(out / "train", {"student": student}, {"student": opt})
    start, history = (state["step"], state["history"]) if state else (0, [])
    if state:
        log.info("resuming %s at step %d", out, start)
    write_config(cfg, out)
    bar = progress_bar(progress, cfg.steps, start, "distill cfg")
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        opt.zero_grad(set_to_none=True)
        logged = {}
        for group in GROUPS:
            if cfg.batch.get(group, 0):
                logged[f"{group}/mse"] = step_loss(setup, student_fwd, cfg, step, group)
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        logged = {"step": step + 1, "lr": lr_at(cfg, step), "grad_norm": float(gnorm), **logged}
        history.append(logged)
        log_step(bar, logged, step, cfg, t0, "cfg")
        stopping = stop_after is not None and step + 1 >= stop_after
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps or stopping:
            check_understanding(setup, fingerprint)
            save_roles(out / "train", {"student": student}, {"student": opt},
                       {"step": step + 1, "history": history, "understanding_sha256": fingerprint})
            save_student(out, student, student_info(cfg, setup, "cfg", steps=cfg.rollout_timesteps - 1), cfg.teacher)
        if stopping:
            break
    if bar is not None:
        bar.close()
    return out
