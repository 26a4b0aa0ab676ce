"""Train the Shapes World autoencoder: a FLUX-family VAE on 64×64 renders.

Algorithm (one step): draw a batch of rendered images; encode to the posterior (mean, logvar); sample
``z = mean + exp(logvar/2)·ε``; decode; loss = ``l1·|x̂−x| + mse·(x̂−x)² + kl·KL(q(z|x) ‖ N(0, I))`` (all means
over elements); AdamW step with linear warm-up then cosine decay and gradient clipping.

Images come from a caller-supplied ``sample_image(rng) -> uint8 [R, R, 3]`` (for Shapes World:
``shapes_world_image``, a random scene on either background); image ``i`` of the stream gets its own ``numpy``
generator seeded
``(data_seed, i)``, so the data never depends on how a run was split. The posterior noise comes from one
``torch.Generator`` whose state is checkpointed; together with the optimizer state this makes a resumed run
bit-identical to an uninterrupted one.

A run folder holds ``config.json`` (this :class:`VAETrainConfig`), ``ae.safetensors`` (weights, with the
:class:`VAEConfig` in its metadata), ``train_state.safetensors`` (optimizer moments, generator state) and
``train_state.json`` (step, losses). Before each save, ``scale_factor``/``shift_factor`` are re-fitted so that
scaled latents of a fixed calibration batch have zero mean and unit variance (FLUX's 0.3611/0.1159 are for
FLUX's latents, not ours); they do not affect training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_save_tensors, atomic_write_text
from hyperbagel.model.autoencoder import AutoEncoder, VAEConfig
from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.world import palette as P
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene

log = logging.getLogger(__name__)

ImageSampler = Callable[[np.random.Generator], np.ndarray]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "ae.safetensors"
STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"

# The default Shapes World autoencoder: 64 px → 16×16×4 latent (downsample 4) → 8×8 = 64 tokens of 16 values
# after 2×2 patchify. Measured (2000 steps, batch 16, ~7 min uncontended on 2 cores): L1 0.0065 on [-1, 1],
# mean uint8 error 0.71, detect(recon) == scene for 64 % of 200 scenes; still improving at the end.
SHAPES_VAE = VAEConfig(resolution=64, ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, z_channels=4, norm_groups=8)


@dataclass(frozen=True)
class VAETrainConfig:
    vae: VAEConfig = SHAPES_VAE
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    kl_weight: float = 1e-5
    bf16_autocast: bool = False
    seed: int = 0
    data_seed: int = 1
    calibration_images: int = 64
    checkpoint_every: int = 250
    log_every: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.vae, dict):
            object.__setattr__(self, "vae", VAEConfig.from_dict(self.vae))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "calibration_images"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"VAETrainConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"VAETrainConfig.warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if not self.lr > 0:
            raise ValueError(f"VAETrainConfig.lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"VAETrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("weight_decay", "grad_clip", "l1_weight", "mse_weight", "kl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAETrainConfig.{name} must be non-negative, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"VAETrainConfig.betas must be two numbers in [0, 1), got {self.betas}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["vae"] = self.vae.to_dict()
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAETrainConfig:
        return cls(**d)


# ---------------------------------------------------------------------------------------------------- pieces


def lr_at(config: VAETrainConfig, step: int) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up, then cosine decay to ``min_lr_ratio·lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def image_batch(sample_image: ImageSampler, data_seed: int, start: int, count: int) -> Tensor:
    """Images ``start … start+count−1`` of the data stream as model pixels [count, 3, R, R] in [-1, 1]."""
    images = [sample_image(np.random.default_rng([data_seed, i])) for i in range(start, start + count)]
    return torch.stack([to_model_pixels(im) for im in images])


def kl_to_standard_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, 1)) averaged over elements."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def vae_losses(
    ae: AutoEncoder, x: Tensor, config: VAETrainConfig, generator: torch.Generator
) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch and its parts (floats, for logging)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16_autocast):
        mean, logvar = ae.posterior(x)
        mean, logvar = mean.float(), logvar.float().clamp(-30.0, 20.0)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        recon = ae.decoder(mean + torch.exp(0.5 * logvar) * noise).float()
    l1 = (recon - x).abs().mean()
    mse = (recon - x).square().mean()
    kl = kl_to_standard_normal(mean, logvar)
    loss = config.l1_weight * l1 + config.mse_weight * mse + config.kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


@torch.no_grad()
def fit_latent_scale(ae: AutoEncoder, x: Tensor) -> VAEConfig:
    """The autoencoder's config with ``shift_factor``/``scale_factor`` set so that posterior means of ``x``
    have zero mean and unit standard deviation after scaling."""
    mean, _ = ae.posterior(x)
    shift = mean.mean().item()
    std = mean.std().item()
    return dataclasses.replace(ae.config, shift_factor=shift, scale_factor=1.0 / max(std, 1e-6))


def build_autoencoder(config: VAEConfig, seed: int) -> AutoEncoder:
    """A freshly initialised autoencoder; its initialisation depends on ``seed`` only (the global RNG is
    restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoEncoder(config)


@torch.no_grad()
def reconstruct(ae: AutoEncoder, x: Tensor, generator: torch.Generator | None = None, sample: bool = True) -> Tensor:
    """encode → decode, as BAGEL would use the autoencoder (posterior sampled unless ``sample=False``)."""
    return ae.decode(ae.encode(x, generator=generator, sample=sample))


# ---------------------------------------------------------------------------------------------------- checkpoints


def save_autoencoder(ae: AutoEncoder, path: str | Path) -> None:
    """Weights as safetensors, the :class:`VAEConfig` in the metadata (key ``config``)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in ae.state_dict().items()}
    atomic_save_tensors(tensors, Path(path), {"format": "pt", "config": json.dumps(ae.config.to_dict())})


def load_autoencoder(path: str | Path, config: VAEConfig | None = None) -> AutoEncoder:
    """An autoencoder saved by :func:`save_autoencoder` (or a FLUX ``ae.safetensors`` with ``config`` given):
    built on the meta device, loaded strictly, fp32."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HyperBagelError(f"autoencoder weights not found: {path}")
    if config is None:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise HyperBagelError(f"{path} has no embedded VAE config; pass config=")
        config = VAEConfig.from_dict(json.loads(meta["config"]))
    with torch.device("meta"):
        ae = AutoEncoder(config)
    tensors = {k: v.float() for k, v in load_file(str(path)).items()}
    expected = set(ae.state_dict())
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise HyperBagelError(
            f"{path} does not match the VAE config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    ae.load_state_dict(tensors, strict=True, assign=True)
    return ae.eval()


def save_checkpoint(
    run_dir: Path, config: VAETrainConfig, ae: AutoEncoder, optimizer: torch.optim.Optimizer,
    generator: torch.Generator, step: int, losses: list[dict[str, float]],
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", run_dir / CONFIG_FILE)
    tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    save_autoencoder(ae, tmp)
    tmp.replace(run_dir / WEIGHTS_FILE)
    opt = optimizer.state_dict()
    tensors = {"generator_state": generator.get_state()}
    for index, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous()
    atomic_save_tensors(tensors, run_dir / STATE_FILE, metadata={"format": "pt"})
    state_json = {"step": step, "param_groups": opt["param_groups"], "losses": losses}
    atomic_write_text(json.dumps(state_json) + "\n", run_dir / STATE_JSON)
    log.info("checkpoint: step %d → %s", step, run_dir)


def load_checkpoint(
    run_dir: Path, ae: AutoEncoder, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, list[dict[str, float]]]:
    """Restore weights, optimizer and generator in place; returns (next step, losses so far)."""
    saved = load_autoencoder(run_dir / WEIGHTS_FILE)
    ae.config = saved.config
    ae.load_state_dict(saved.state_dict(), strict=True)
    tensors = load_file(str(run_dir / STATE_FILE))
    state_json = json.loads((run_dir / STATE_JSON).read_text())
    generator.set_state(tensors.pop("generator_state"))
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": state_json["param_groups"]})
    return state_json["step"], state_json["losses"]


# ---------------------------------------------------------------------------------------------------- the loop


def shapes_world_image(rng: np.random.Generator, resolution: int) -> np.ndarray:
    """A render of a uniformly random scene on a uniformly random background: the edit suite turns backgrounds
    from black to gray, so the autoencoder must reconstruct both (one trained on black alone failed every
    background edit of a perfect editor; docs/teacher.md)."""
    background = P.BACKGROUND_NAMES[int(rng.integers(len(P.BACKGROUND_NAMES)))]
    return render(sample_scene(rng, resolution, background=background))


def train_vae(
    config: VAETrainConfig,
    sample_image: ImageSampler,
    run_dir: str | Path,
    resume: bool = True,
    stop_after: int | None = None,
) -> tuple[AutoEncoder, list[dict[str, float]]]:
    """Train (or resume) a run in ``run_dir``; returns the autoencoder and the per-step losses.

    ``stop_after`` ends the call after that many total steps (a checkpoint is written), as if interrupted;
    calling again with ``resume=True`` continues to ``config.steps``.
    """
    run_dir = Path(run_dir)
    ae = build_autoencoder(config.vae, config.seed).train()
    optimizer = torch.optim.AdamW(ae.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + 1)
    step, losses = 0, []
    if resume and (run_dir / STATE_JSON).is_file():
        step, losses = load_checkpoint(run_dir, ae, optimizer, generator)
        log.info("resumed %s at step %d", run_dir, step)
    # A fixed calibration batch, outside the training stream (negative indexes are never trained on).
    calibration = image_batch(sample_image, config.data_seed + 10_000, 0, config.calibration_images)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    t0 = time.perf_counter()
    while step < end:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, step)
        x = image_batch(sample_image, config.data_seed, step * config.batch_size, config.batch_size)
        loss, parts = vae_losses(ae, x, config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ae.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        losses.append(parts)
        if step % config.log_every == 0 or step == end:
            log.info("step %d/%d loss %.5f l1 %.5f mse %.6f kl %.3f (%.1f s)", step, config.steps, parts["loss"],
                     parts["l1"], parts["mse"], parts["kl"], time.perf_counter() - t0)
        if step % config.checkpoint_every == 0 or step == end:
            ae.eval()
            ae.config = fit_latent_scale(ae, calibration)
            ae.train()
            save_checkpoint(run_dir, config, ae, optimizer, generator, step, losses)
    return ae.eval(), losses
