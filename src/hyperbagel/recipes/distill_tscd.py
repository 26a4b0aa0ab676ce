"""Stage 2, TSCD (Hyper-Bagel §3.2.2): trajectory-segmented consistency distillation with 3 segments of the shifted
schedule in one stage: a hinge adversarial term (a multi-head discriminator on a trainable copy of the backbone) beside
an MSE anchor to the teacher's ODE endpoints. The paper trains adversarially only (``mse_weight = 0, adv_weight =
1``); measured on the default teacher, that drifted into artefacts with either "real" side, so the default is the
anchored balance ``mse_weight = 1, adv_weight = 0.1`` (docs/distillation.md, "Stage 2").

Roles: ``teacher`` = the stage-1 CFG-distilled model, frozen (one forward gives the guided velocity); ``student`` =
the generator, initialised from stage 1; ``disc`` = heads on a trainable copy of the stage-1 generation branch.
Each step, per task group (``distill/tscd.py`` has the formulas):

1. a point ``x_t`` of the fine teacher grid: the clean target latents of a Shapes World scene, noised to ``t``;
2. the student jumps to its segment's end ``e``: ``ŷ``; the teacher solves its ODE over the fine grid from ``x_t``
   to ``e``: ``y`` (``real = "ode"``, the default; ``"consistency"`` is PCM's one teacher step plus the stop-gradient
   student's jump, a target that moves with the student and only makes sense beside the MSE term);
3. both are noised forward from ``e`` to the same ``s`` in the segment above ``e`` with the same noise;
4. generator: ``adv_weight·(−D(ŷ_s)) + mse_weight·|ŷ − y|²``; discriminator: ``relu(1 − D(y_s)) + relu(1 + D(ŷ_s))``
   (every group's generator pass first, then the discriminator's gradients that those passes left are cleared and
   every group's discriminator pass runs).
   The logged ``mse`` is ``|ŷ − y|²`` at any weight: with the default, the student's distance from the teacher's
   endpoint.

Sampling the result: 2 Euler steps per segment = 6 steps on the shifted schedule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperbagel.distill.discriminator import LatentDiscriminator, default_layers
from hyperbagel.distill.tscd import (
    consistency_mse,
    consistency_target,
    hinge_discriminator_loss,
    hinge_generator_loss,
    jump,
    renoise,
    segment_boundaries,
    segment_end,
    segment_end_index,
    segment_start,
    solve_to_segment_end,
    teacher_grid,
)
from hyperbagel.flow.schedule import noisy
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
class TSCDConfig(DistillConfig):
    init: str | None = "runs/distill-cfg"
    out: str = "runs/distill-tscd"
    steps: int = 600
    lr: float = 5e-5  # generator
    disc_lr: float = 2e-4
    disc_betas: tuple[float, float] = (0.0, 0.99)
    segments: int = 3
    steps_per_segment: int = 8  # fine teacher grid: segments × steps_per_segment steps, boundaries on it
    sample_steps: int = 6  # the sampler the result is meant for (2 Euler steps per segment)
    disc_layers: tuple[int, ...] = ()  # () = 4 evenly spaced layers
    disc_hidden: int = 64
    # The paper's TSCD is adversarial only (mse_weight 0, adv_weight 1). Here that drifts into artefacts within ~100
    # steps; the MSE anchor to the real side with a 0.1 adversarial term (PCM's balance) keeps stage 1's images.
    adv_weight: float = 0.1
    mse_weight: float = 1.0
    real: str = "ode"  # the discriminator's real side: the teacher's ODE solution to the segment end ("ode") or
    # PCM's consistency target, one teacher step + the student's own jump ("consistency": only with mse_weight > 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.disc_betas, self.disc_layers = tuple(self.disc_betas), tuple(self.disc_layers)
        if self.init is None:
            raise ValueError("TSCDConfig.init must be the stage-1 (cfg) folder")
        if self.segments < 1 or self.steps_per_segment < 1:
            raise ValueError("TSCDConfig.segments and steps_per_segment must be positive")
        if self.sample_steps % self.segments:
            raise ValueError("TSCDConfig.sample_steps must be a multiple of segments (whole steps per segment)")
        if self.real not in ("ode", "consistency"):
            raise ValueError(f"TSCDConfig.real must be 'ode' or 'consistency', got {self.real!r}")


def generator_losses(setup, roles, cfg: TSCDConfig, step: int, group: str) -> tuple[dict[str, float], tuple]:
    """The generator's backward for one group; returns its logged losses and what the discriminator pass needs."""
    ids = setup.ids
    disc = roles["disc"]
    c = conditions(setup, cfg, step, group, data=True)
    grid = teacher_grid(cfg.segments, cfg.steps_per_segment, cfg.shift).float().to(c.device)
    bounds = segment_boundaries(cfg.segments, cfg.shift).float().to(c.device)
    n = c.per_row(lambda g: torch.randint(len(grid) - 1, (), generator=g))
    t, t_next = grid[n], grid[n + 1]
    end, start = segment_end(t, bounds), segment_start(t, bounds)
    u = c.per_row(lambda g: torch.rand((), generator=g)).clamp(0.02, 0.98)
    s = end + u * (start - end)  # discriminator time: inside the segment above the end
    x_t = noisy(c.x0, c.noise, t)
    adv_noise = c.per_row(lambda g: torch.randn(c.noise.shape[1:], generator=g))
    ctx = c.branches.cond
    with torch.no_grad(), autocast(cfg):
        if cfg.real == "ode":
            def teacher(x, tt, rows):
                return roles["teacher"].velocity(ctx.select(rows), x, tt, ids, **c.scales(tt, rows))[0]

            y = solve_to_segment_end(teacher, x_t, n, segment_end_index(n, cfg.steps_per_segment), grid,
                                     any_rank).float()
        else:
            v_teacher, _ = roles["teacher"].velocity(ctx, x_t, t, ids, **c.scales(t))
            x_next = jump(x_t, v_teacher, t, t_next)
            v_self, _ = roles["student"].velocity(ctx, x_next, t_next, ids, **c.scales(t_next))
            y = consistency_target(x_next, v_self, t_next, end)
            y = torch.where((t_next == end).view(-1, 1, 1), x_next, y).float()
        real = renoise(y, end, s, adv_noise)
    with autocast(cfg):
        v, _ = roles["student"].velocity(ctx, x_t, t, ids, **c.scales(t))
        y_hat = jump(x_t, v.float(), t, end)
        fake = renoise(y_hat, end, s, adv_noise)
        g_adv = hinge_generator_loss(disc(ctx, fake, s, ids, **c.scales(s)))
        mse = consistency_mse(y_hat, y)
        g_loss = cfg.adv_weight * g_adv + cfg.mse_weight * mse
    backward_share(g_loss, c, cfg)
    logged = group_mean({f"{group}/g_adv": float(g_adv.detach()), f"{group}/mse": float(mse.detach())}, c)
    return logged, (c, real, fake.detach(), s)


def disc_loss(setup, roles, cfg: TSCDConfig, group: str, c, real, fake, s) -> dict[str, float]:
    """The discriminator's backward for one group, on the generator pass's real and fake; returns its loss."""
    ctx, scales = c.branches.cond, c.scales(s)
    disc = roles["disc"]
    with autocast(cfg):
        d_loss = hinge_discriminator_loss(disc(ctx, real, s, setup.ids, **scales),
                                          disc(ctx, fake, s, setup.ids, **scales))
    backward_share(d_loss, c, cfg)
    return group_mean({f"{group}/d_hinge": float(d_loss.detach())}, c)


def build_roles(setup, cfg: TSCDConfig):
    teacher = Runner(new_student(setup, cfg.init, trainable=False))
    student = Runner(new_student(setup, cfg.init))
    layers = cfg.disc_layers or default_layers(setup.pipe.cfg.llm.num_layers)
    disc = LatentDiscriminator(new_student(setup, cfg.init), layers, cfg.disc_hidden).train().to(cfg.device)
    return {"teacher": teacher, "student": student, "disc": disc}


def train_tscd(cfg: TSCDConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) stage 2 from the stage-1 folder ``cfg.init``; returns the model folder."""
    setup = load_setup(cfg)
    torch.manual_seed(cfg.seed)
    roles = build_roles(setup, cfg)
    distribute(setup, cfg, *roles.values())
    student, disc = roles["student"], roles["disc"]
    g_params = generation_params(student.model)
    d_params = [p for p in disc.parameters() if p.requires_grad]
    opts = {"student": torch.optim.AdamW(g_params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay),
            "disc": torch.optim.AdamW(d_params, lr=cfg.disc_lr, betas=cfg.disc_betas, weight_decay=0.0)}
    loop = StageLoop("tscd", cfg, setup, {"student": student, "disc": disc}, opts)

    def train_step(step: int) -> dict[str, float]:
        logged, kept = {}, {}
        for group in cfg.groups:
            parts, kept[group] = generator_losses(setup, roles, cfg, step, group)
            logged.update(parts)
        opts["disc"].zero_grad(set_to_none=True)  # the generator's passes went through the discriminator
        for group in cfg.groups:
            logged.update(disc_loss(setup, roles, cfg, group, *kept[group]))
        g_norm = torch.nn.utils.clip_grad_norm_(g_params, cfg.grad_clip)
        d_norm = torch.nn.utils.clip_grad_norm_(d_params, cfg.grad_clip)
        for opt in opts.values():
            opt.step()
        return {"grad_norm": float(full_tensor(g_norm)), "disc_grad_norm": float(full_tensor(d_norm)), **logged}

    return loop.run(train_step, student, student_info(cfg, setup, "tscd", cfg.sample_steps), progress, stop_after)
