"""Stage 1, CFG distillation (Hyper-Bagel §3.2.1): one student forward per step reproduces the teacher's guided
velocity at any text scale (and image scale, for editing).

Each step, per task group: the teacher builds the three branch contexts, draws guidance scales (text ~ U[1, 5],
image ~ U[1, 2.5] for editing, 1.0 for text-to-image) and runs its own guided sampler (BAGEL's shifted Euler, CFG
interval and renorm), recording every state it visits and the exact guided velocity there. The student, given the
same context, time and scales (optionally 1.0 outside the CFG interval, where the teacher does not guide: ``gated``),
regresses ``states_per_rollout`` of those states per row (MSE). Only the generation branch and the guidance
embedders train.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperbagel.distill.cfg import cfg_distill_loss, teacher_guided_velocity
from hyperbagel.flow.sampler import euler
from hyperbagel.flow.schedule import bagel_timesteps
from hyperbagel.model.student import generation_params
from hyperbagel.recipes.distill_common import (
    DistillConfig,
    Runner,
    autocast,
    backward_share,
    conditions,
    distribute,
    group_mean,
    load_setup,
    new_student,
    student_info,
)
from hyperbagel.recipes.distill_loop import StageLoop
from hyperbagel.training.distributed import any_rank, full_tensor

log = logging.getLogger(__name__)


@dataclass
class CFGDistillConfig(DistillConfig):
    out: str = "runs/distill-cfg"
    steps: int = 200
    lr: float = 2e-4
    rollout_timesteps: int = 50  # the teacher sampler's schedule (BAGEL's: 50 points, 49 guided Euler steps)
    states_per_rollout: int = 16  # states of each rollout the student regresses (per row): a third of them
    # the student's scales are 1.0 outside the CFG interval (flow.guidance.gated_scales); None: as the init's (off
    # from the teacher). Later stages always keep their init's. No gain measured yet (docs/distillation.md)
    gated: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.states_per_rollout < self.rollout_timesteps:
            raise ValueError("CFGDistillConfig.states_per_rollout must be in [1, rollout_timesteps − 1]")


def step_loss(setup, student: Runner, cfg: CFGDistillConfig, step: int, group: str) -> dict[str, float]:
    """Backward of one group's loss; returns it."""
    ids = setup.ids
    c = conditions(setup, cfg, step, group, cfg_branches=True)
    trajectory: list = []
    with torch.no_grad(), autocast(cfg):

        def guided(x, t):
            return teacher_guided_velocity(setup.teacher, c.branches, ids, x, float(t), c.text_scale, c.image_scale,
                                           c.guidance, any_rank)

        euler(guided, c.noise, bagel_timesteps(cfg.rollout_timesteps, cfg.shift), trajectory)
    B, K = c.batch, cfg.states_per_rollout
    # K distinct steps of the rollout per row, from each row's own generator
    picks = torch.stack([torch.randperm(len(trajectory), generator=g)[:K] for g in c.generators])  # [B, K]
    rows = torch.arange(B).repeat_interleave(K)
    chosen = picks.reshape(-1)
    xs = torch.stack([step_state[1] for step_state in trajectory])  # [S, B, N, P]
    vs = torch.stack([step_state[2] for step_state in trajectory])
    ts = torch.stack([torch.as_tensor(step_state[0], dtype=torch.float32) for step_state in trajectory])
    x, target, t = xs[chosen, rows], vs[chosen, rows], ts[chosen].to(c.device)
    ctx = c.branches.cond.select(rows)
    with autocast(cfg):
        v, _ = student.velocity(ctx, x, t, ids, **c.scales(t, rows))
        loss = cfg_distill_loss(v, target)
    backward_share(loss, c, cfg)
    return group_mean({f"{group}/mse": float(loss.detach())}, c)


def train_cfg(cfg: CFGDistillConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) stage 1; returns the model folder (the teacher's files + ``student.safetensors``).
    ``stop_after`` ends the call after that many total steps with a checkpoint, as an interruption would."""
    setup = load_setup(cfg, cfg.gated)
    torch.manual_seed(cfg.seed)
    student = Runner(new_student(setup, cfg.init))
    distribute(setup, cfg, student)
    params = generation_params(student.model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    loop = StageLoop("cfg", cfg, setup, {"student": student}, {"student": opt})

    def train_step(step: int) -> dict[str, float]:
        logged = {}
        for group in cfg.groups:
            logged.update(step_loss(setup, student, cfg, step, group))
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        return {"grad_norm": float(full_tensor(gnorm)), **logged}

    info = student_info(cfg, setup, "cfg", steps=cfg.rollout_timesteps - 1)
    return loop.run(train_step, student, info, progress, stop_after)
