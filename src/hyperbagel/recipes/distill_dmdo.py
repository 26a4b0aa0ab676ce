"""Stage 3, DMDO (Hyper-Bagel §3.2.3): distribution matching distillation on the generator's own ODE paths, giving
the 6-step model.

Roles: ``generator`` = the student, from stage 2; ``fake`` = a trainable generation branch (from stage 1 by default:
it starts at the guided field the generator was distilled from) that learns the generator's distribution;
``real`` = the teacher with true CFG (exact guided velocity, renorm and interval, the same scales as the
generator). One step = ``fake_updates`` fake updates, then one generator update (``distill/dmdo.py``):

- fake update: roll the generator's 6-step Euler ODE from fresh noise ``x_T`` without gradient, keep the path;
  flow matching on ``(1 − t)·x_0 + t·ε`` with velocity ``ε − x_0``, ``ε`` fresh noise by default (``fake_noise``;
  the paper's ``ε = x_T`` pales the pictures, docs/distillation.md);
- generator update, on the last fake update's paths: from a stored point ``x_k`` one gradient step straight to
  ``x̂_0``, re-mixed with the same ``x_T`` at ``t′``; DMD gradient from the real and fake ``x̂_0`` estimates there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperbagel.distill.cfg import teacher_guided_velocity
from hyperbagel.distill.dmdo import dmd_generator_loss, dmd_gradient, fake_flow_loss, path_mix
from hyperbagel.errors import HyperBagelError
from hyperbagel.flow.sampler import distilled_velocity, euler
from hyperbagel.flow.schedule import bagel_timesteps, x0_from_velocity
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
class DMDOConfig(DistillConfig):
    init: str | None = "runs/distill-tscd"
    out: str = "runs/distill-dmdo"
    steps: int = 300  # generator updates
    lr: float = 2e-5  # generator
    fake_lr: float = 1e-4
    fake_init: str = "cfg"  # the fake model's start: a stage of the lineage ("cfg", "tscd"), a folder, or "teacher"
    fake_updates: int = 5  # fake updates per generator update (DMD2's two time-scale rule)
    sample_steps: int = 6  # the generator's Euler ODE
    t_range: tuple[float, float] = (0.02, 0.98)  # times of the fake model's and the DMD gradient's mixes
    # The fake model's flow-matching noise: "fresh", independent noise per row (the coupling the teacher was trained
    # with, so both x̂_0 are posterior means alike); or "path", the x_T its path started from (the paper's, which
    # pales the pictures: docs/distillation.md, Stage 3).
    fake_noise: str = "fresh"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.t_range = tuple(self.t_range)
        if self.init is None:
            raise ValueError("DMDOConfig.init must be the stage-2 (tscd) folder")
        if self.fake_updates < 1 or self.sample_steps < 1:
            raise ValueError("DMDOConfig.fake_updates and sample_steps must be positive")
        if self.fake_noise not in ("path", "fresh"):
            raise ValueError(f"DMDOConfig.fake_noise must be 'path' or 'fresh', got {self.fake_noise!r}")
        if not 0 < self.t_range[0] < self.t_range[1] < 1:
            raise ValueError(f"DMDOConfig.t_range must satisfy 0 < lo < hi < 1, got {self.t_range}")


def _times(c, cfg: DMDOConfig) -> torch.Tensor:
    lo, hi = cfg.t_range
    return c.per_row(lambda g: lo + (hi - lo) * torch.rand((), generator=g))


def rollout(setup, fwd: Runner, c, cfg: DMDOConfig):
    """The generator's ODE path from ``c.noise`` without gradient: states ``[K, B, N, P]``, times ``[K]``, ``x_0``."""
    path: list = []
    with torch.no_grad(), autocast(cfg):
        velocity = distilled_velocity(fwd, c.branches.cond, setup.ids, c.text_scale, c.image_scale, c.gate)
        x0 = euler(velocity, c.noise, bagel_timesteps(cfg.sample_steps + 1, cfg.shift), path)
    times = torch.stack([t.float() for t, _, _ in path]).to(c.noise.device)  # the schedule is made on the CPU
    return torch.stack([x for _, x, _ in path]).float(), times, x0.float()


def fake_noise(c, cfg: DMDOConfig) -> torch.Tensor:
    """The noise end of the fake model's flow-matching pairs: the path's own ``x_T``, or fresh per-row draws."""
    if cfg.fake_noise == "path":
        return c.noise
    return c.per_row(lambda g: torch.randn(c.noise.shape[1:], generator=g))


def fake_loss(setup, fwds, cfg: DMDOConfig, c, x0) -> torch.Tensor:
    t = _times(c, cfg)
    noise = fake_noise(c, cfg)
    with autocast(cfg):
        v, _ = fwds["fake"].velocity(c.branches.cond, path_mix(x0, noise, t), t, setup.ids, **c.scales(t))
        return fake_flow_loss(v, x0, noise)


def generator_loss(setup, fwds, cfg: DMDOConfig, c, states, times) -> tuple[torch.Tensor, float]:
    B = c.batch
    k = c.per_row(lambda g: torch.randint(len(times), (), generator=g))
    rows = torch.arange(B, device=c.device)
    x_k, t_k = states[k, rows], times[k]
    with autocast(cfg):
        v, _ = fwds["generator"].velocity(c.branches.cond, x_k, t_k, setup.ids, **c.scales(t_k))
    x0_hat = x0_from_velocity(x_k, v.float(), t_k)
    t2 = _times(c, cfg)
    with torch.no_grad(), autocast(cfg):
        x_t2 = path_mix(x0_hat.detach(), c.noise, t2)
        v_real = teacher_guided_velocity(setup.teacher, c.branches, setup.ids, x_t2, t2, c.text_scale,
                                         c.image_scale, c.guidance, any_rank)
        v_fake, _ = fwds["fake"].velocity(c.branches.cond, x_t2, t2, setup.ids, **c.scales(t2))
    x0_real, x0_fake = x0_from_velocity(x_t2, v_real.float(), t2), x0_from_velocity(x_t2, v_fake.float(), t2)
    grad = dmd_gradient(x0_hat, x0_real, x0_fake)
    return dmd_generator_loss(x0_hat, grad), float((x0_fake - x0_real).abs().mean())


def fake_start(cfg: DMDOConfig, setup) -> str | None:
    """The fake model's initial weights: a stage of the lineage, a distilled folder, or the teacher (None)."""
    if cfg.fake_init == "teacher":
        return None
    if cfg.fake_init in setup.lineage:
        return setup.lineage[cfg.fake_init]
    if (Path(cfg.fake_init) / "student.safetensors").is_file():
        return cfg.fake_init
    raise HyperBagelError(f"DMDOConfig.fake_init={cfg.fake_init!r} is neither a stage of {sorted(setup.lineage)}, "
                          "'teacher', nor a distilled model folder")


def train_dmdo(cfg: DMDOConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) stage 3 from the stage-2 folder ``cfg.init``; returns the model folder."""
    setup = load_setup(cfg)
    torch.manual_seed(cfg.seed)
    fwds = {"generator": Runner(new_student(setup, cfg.init)),
            "fake": Runner(new_student(setup, fake_start(cfg, setup)))}
    distribute(setup, cfg, *fwds.values())
    g_params, f_params = generation_params(fwds["generator"].model), generation_params(fwds["fake"].model)
    opts = {"generator": torch.optim.AdamW(g_params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay),
            "fake": torch.optim.AdamW(f_params, lr=cfg.fake_lr, betas=cfg.betas, weight_decay=cfg.weight_decay)}
    loop = StageLoop("dmdo", cfg, setup, fwds, opts)

    def train_step(step: int) -> dict[str, float]:
        logged: dict[str, float] = {}
        last = {}
        # fake updates: flow matching on the generator's own paths
        for j in range(cfg.fake_updates):
            opts["fake"].zero_grad(set_to_none=True)
            for group in cfg.groups:
                c = conditions(setup, cfg, step, group, sub=j, cfg_branches=j == cfg.fake_updates - 1)
                states, times, x0 = rollout(setup, fwds["generator"], c, cfg)
                loss = fake_loss(setup, fwds, cfg, c, x0)
                backward_share(loss, c, cfg)
                key = f"{group}/fake_fm"
                mean = group_mean({key: float(loss.detach())}, c)[key]
                logged[key] = logged.get(key, 0.0) + mean / cfg.fake_updates
                last[group] = (c, states, times)
            torch.nn.utils.clip_grad_norm_(f_params, cfg.grad_clip)
            opts["fake"].step()
        # generator update on the last paths
        opts["generator"].zero_grad(set_to_none=True)
        for group in cfg.groups:
            c, states, times = last[group]
            loss, gap = generator_loss(setup, fwds, cfg, c, states, times)
            backward_share(loss, c, cfg)
            # mean |x̂_0^fake − x̂_0^real|: the mismatch DMD closes
            logged.update(group_mean({f"{group}/real_fake_gap": gap}, c))
        gnorm = torch.nn.utils.clip_grad_norm_(g_params, cfg.grad_clip)
        opts["generator"].step()
        return {"grad_norm": float(full_tensor(gnorm)), **logged}

    info = student_info(cfg, setup, "dmdo", cfg.sample_steps)
    return loop.run(train_step, fwds["generator"], info, progress, stop_after)
