"""Stage 4, ADP (Hyper-Bagel §3.2.4): adversarial diffusion pre-training of the 1-step model from the 6-step one.

Roles: ``teacher`` = the 6-step (DMDO) model, frozen, drawing ODE paths online; ``generator`` = the 1-step student,
initialised from the same weights; ``disc`` = heads on a trainable copy of the 6-step model's generation branch
(TSCD's multi-head latent discriminator); ``pixel_disc`` = a small CNN on decoded images. Each step, per task group
(``distill/adp.py`` has the formulas):

1. the teacher's 6-step Euler path from fresh noise ``x_T`` (no gradient): its end ``x_0`` is real;
2. the generator's input ``x_t = (1 − t)·x_0 + t·x_T`` (``t = 1`` on half the rows: the noise itself), one forward
   to ``x̂_0 = x_t − t·v``: fake;
3. latent discriminator: both noised to the same ``t′`` with the same noise; pixel discriminator: both decoded by
   the (frozen) VAE, the fake with gradient;
4. generator: ``λ_latent·(−D_latent) + λ_pixel·(−D_pixel)``; discriminators: hinge on (real, fake) (every group's
   generator pass first; the discriminators' gradients those passes left are cleared before their own passes).

Sampling the result: one forward from pure noise (``steps = 1``: ``t = 1 → 0``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from hyperbagel.distill.adp import (
    adp_discriminator_loss,
    adp_generator_loss,
    disc_times,
    input_times,
    pair_mse,
)
from hyperbagel.distill.discriminator import LatentDiscriminator, default_layers
from hyperbagel.distill.pixel_discriminator import PixelDiscriminator
from hyperbagel.flow.sampler import distilled_velocity, euler
from hyperbagel.flow.schedule import bagel_timesteps, noisy, x0_from_velocity
from hyperbagel.model.latents import unpatchify_latents
from hyperbagel.model.student import generation_params
from hyperbagel.pipeline import Pipeline
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
from hyperbagel.training.distributed import full_tensor

log = logging.getLogger(__name__)


@dataclass
class ADPConfig(DistillConfig):
    init: str | None = "runs/distill-dmdo"  # the 6-step model: the teacher of the paths and the generator's start
    out: str = "runs/distill-adp"
    steps: int = 400
    lr: float = 2e-5  # generator
    disc_lr: float = 1e-4  # both discriminators
    disc_betas: tuple[float, float] = (0.0, 0.99)
    path_steps: int = 6  # the teacher's Euler ODE (its own sampler)
    one_share: float = 0.5  # rows whose generator input is pure noise (t = 1: what the 1-step sampler sees)
    time_power: float = 3.0  # the other rows: t = 1 − u^power on the path (DMDX's cubic schedule)
    disc_t_range: tuple[float, float] = (0.02, 0.98)  # latent discriminator's noise level ~U, then shifted
    disc_layers: tuple[int, ...] = ()  # () = 4 evenly spaced layers
    disc_hidden: int = 64
    pixel_channels: tuple[int, ...] = (32, 64, 128)
    latent_weight: float = 0.85  # DMDX's λ1
    pixel_weight: float = 0.15  # DMDX's λ2
    pair_weight: float = 0.0  # > 0 adds MSE of x̂_0 to its path's endpoint (ablation; ADP is adversarial only)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.disc_betas, self.disc_layers = tuple(self.disc_betas), tuple(self.disc_layers)
        self.disc_t_range, self.pixel_channels = tuple(self.disc_t_range), tuple(self.pixel_channels)
        if self.init is None:
            raise ValueError("ADPConfig.init must be the 6-step (dmdo) folder")
        if self.path_steps < 1:
            raise ValueError("ADPConfig.path_steps must be positive")
        if not 0 <= self.one_share <= 1:
            raise ValueError(f"ADPConfig.one_share must be in [0, 1], got {self.one_share}")
        if self.time_power <= 0:
            raise ValueError(f"ADPConfig.time_power must be positive, got {self.time_power}")
        if not 0 <= self.disc_t_range[0] <= self.disc_t_range[1] < 1:
            raise ValueError(f"ADPConfig.disc_t_range must satisfy 0 ≤ lo ≤ hi < 1, got {self.disc_t_range}")
        if min(self.latent_weight, self.pixel_weight, self.pair_weight) < 0:
            raise ValueError("ADPConfig loss weights must be non-negative")


def decode_pixels(pipe: Pipeline, x: Tensor) -> Tensor:
    """Latent tokens ``[B, N, P]`` → images ``[B, 3, H, W]`` through the (frozen) VAE decoder, differentiable."""
    side = pipe.cfg.image_size // pipe.cfg.latent_downsample
    z = unpatchify_latents(x.float(), side, side, pipe.cfg.latent_patch_size, pipe.cfg.vae.z_channels)
    return pipe.vae.decode(z)


def teacher_path_end(setup, fwd: Runner, c, cfg: ADPConfig) -> Tensor:
    """The end ``x_0`` of the 6-step model's Euler ODE path from ``c.noise`` (no gradient)."""
    with torch.no_grad(), autocast(cfg):
        velocity = distilled_velocity(fwd, c.branches.cond, setup.ids, c.text_scale, c.image_scale, c.gate)
        return euler(velocity, c.noise, bagel_timesteps(cfg.path_steps + 1, cfg.shift)).float()


def generator_losses(setup, roles, cfg: ADPConfig, step: int, group: str) -> tuple[dict[str, float], tuple]:
    """The generator's backward for one group; returns its logged losses and what the discriminator pass needs."""
    ids, pipe = setup.ids, setup.pipe
    disc, pixel_disc = roles["disc"], roles["pixel_disc"]
    c = conditions(setup, cfg, step, group)
    x0 = teacher_path_end(setup, roles["teacher"], c, cfg)
    t = input_times(c.generators, cfg.one_share, cfg.time_power).to(c.device)
    s = disc_times(c.generators, *cfg.disc_t_range, cfg.shift).to(c.device)
    disc_noise = c.per_row(lambda g: torch.randn(c.noise.shape[1:], generator=g))
    ctx = c.branches.cond
    with torch.no_grad(), autocast(cfg):
        real_latent = noisy(x0, disc_noise, s)
        real_pixels = decode_pixels(pipe, x0)
    # one forward from the path point to x̂_0
    with autocast(cfg):
        x_t = noisy(x0, c.noise, t)
        v, _ = roles["generator"].velocity(ctx, x_t, t, ids, **c.scales(t))
        x0_hat = x0_from_velocity(x_t, v.float(), t)
        fake_latent = noisy(x0_hat, disc_noise, s)
        fake_pixels = decode_pixels(pipe, x0_hat)
        g_adv = adp_generator_loss(disc(ctx, fake_latent, s, ids, **c.scales(s)), pixel_disc(fake_pixels),
                                   cfg.latent_weight, cfg.pixel_weight)
        pair = pair_mse(x0_hat, x0)
        g_loss = g_adv + cfg.pair_weight * pair
    backward_share(g_loss, c, cfg)
    logged = group_mean({f"{group}/g_adv": float(g_adv.detach()), f"{group}/pair_mse": float(pair.detach())}, c)
    return logged, (c, s, real_latent, fake_latent.detach(), real_pixels, fake_pixels.detach())


def disc_losses(setup, roles, cfg: ADPConfig, group: str, c, s, real_latent, fake_latent, real_pixels,
                fake_pixels) -> dict[str, float]:
    """Both discriminators' backward for one group, on the generator pass's real and fake; returns their losses."""
    ctx, scales = c.branches.cond, c.scales(s)
    disc, pixel_disc = roles["disc"], roles["pixel_disc"]
    with autocast(cfg):
        d_latent, d_pixel = adp_discriminator_loss(
            disc(ctx, real_latent, s, setup.ids, **scales), disc(ctx, fake_latent, s, setup.ids, **scales),
            pixel_disc(real_pixels), pixel_disc(fake_pixels))
    backward_share(d_latent + d_pixel, c, cfg)
    return group_mean({f"{group}/d_latent": float(d_latent.detach()), f"{group}/d_pixel": float(d_pixel.detach())}, c)


def build_roles(setup, cfg: ADPConfig) -> dict:
    teacher = Runner(new_student(setup, cfg.init, trainable=False))
    generator = Runner(new_student(setup, cfg.init))
    layers = cfg.disc_layers or default_layers(setup.pipe.cfg.llm.num_layers)
    disc = LatentDiscriminator(new_student(setup, cfg.init), layers, cfg.disc_hidden).train().to(cfg.device)
    pixel_disc = PixelDiscriminator(cfg.pixel_channels).train().to(cfg.device)
    return {"teacher": teacher, "generator": generator, "disc": disc, "pixel_disc": pixel_disc}


def train_adp(cfg: ADPConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) stage 4 from the 6-step folder ``cfg.init``; returns the 1-step model folder."""
    setup = load_setup(cfg)
    torch.manual_seed(cfg.seed)  # the discriminator heads' and the pixel discriminator's initialisation
    roles = build_roles(setup, cfg)
    distribute(setup, cfg, *roles.values())
    params = {"generator": generation_params(roles["generator"].model),
              "disc": [p for p in roles["disc"].parameters() if p.requires_grad],
              "pixel_disc": list(roles["pixel_disc"].parameters())}
    opts = {"generator": torch.optim.AdamW(params["generator"], lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay),
            **{role: torch.optim.AdamW(params[role], lr=cfg.disc_lr, betas=cfg.disc_betas, weight_decay=0.0)
               for role in ("disc", "pixel_disc")}}
    loop = StageLoop("adp", cfg, setup, {role: roles[role] for role in opts}, opts)

    def train_step(step: int) -> dict[str, float]:
        logged, kept = {}, {}
        for group in cfg.groups:
            parts, kept[group] = generator_losses(setup, roles, cfg, step, group)
            logged.update(parts)
        for role in ("disc", "pixel_disc"):  # the generator's passes went through the discriminators
            opts[role].zero_grad(set_to_none=True)
        for group in cfg.groups:
            logged.update(disc_losses(setup, roles, cfg, group, *kept[group]))
        norms = {role: float(full_tensor(torch.nn.utils.clip_grad_norm_(params[role], cfg.grad_clip)))
                 for role in opts}
        for opt in opts.values():
            opt.step()
        return {"grad_norm": norms["generator"], "disc_grad_norm": norms["disc"],
                "pixel_grad_norm": norms["pixel_disc"], **logged}

    info = student_info(cfg, setup, "adp", steps=1)
    return loop.run(train_step, roles["generator"], info, progress, stop_after)
