"""Train the Shapes World autoencoder: a FLUX-family VAE on 64×64 renders.

Algorithm (one step): draw a batch of rendered images; encode to the posterior (mean, logvar); sample
``z = mean + exp(logvar/2)·ε``; decode; loss = ``l1·|x̂−x| + mse·(x̂−x)² + kl·KL(q(z|x) ‖ N(0, I))`` (all means
over elements); AdamW step with linear warm-up then cosine decay and gradient clipping.

Images come from a caller-supplied ``sample_image(rng) -> uint8 [R, R, 3]`` (for Shapes World:
``shapes_world_image``, a random scene on either background); image ``i`` of the stream gets its own ``numpy``
generator seeded
``(data_seed, i)``, and its posterior noise its own generator seeded ``(seed, step, i)``, so neither depends on how
a run was split over processes or interrupted: a resumed run is bit-identical to an uninterrupted one, and
``torchrun`` (FSDP2, each process a share of every batch) computes the one-process losses.

A run folder holds ``config.json`` (this :class:`VAETrainConfig`), ``ae.safetensors`` (weights, with the
:class:`VAEConfig` in its metadata) and ``train/`` (the distributed checkpoint: weights and optimizer moments, and
``train_state.json`` with the step and losses). Before each save, ``scale_factor``/``shift_factor`` are re-fitted so
that scaled latents of a fixed calibration batch have zero mean and unit variance (FLUX's 0.3611/0.1159 are for
FLUX's latents, not ours); they do not affect training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_write_text
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import CONFIG_FILE as MODEL_CONFIG_FILE
from hyperbagel.model.checkpoint import load_config, open_safetensors, save_autoencoder
from hyperbagel.model.config import VAEConfig
from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.precision import bf16_autocast
from hyperbagel.training import checkpoint as ckpt
from hyperbagel.training.checkpoint import full_state_dict
from hyperbagel.training.distributed import all_sum, barrier, distributed, is_main, shard_range
from hyperbagel.training.interrupt import graceful_stop
from hyperbagel.training.progress import Progress
from hyperbagel.training.schedule import warmup_cosine
from hyperbagel.training.sharding import loss_scale, shard
from hyperbagel.world import palette as P
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene

log = logging.getLogger(__name__)

ImageSampler = Callable[[np.random.Generator], np.ndarray]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "ae.safetensors"
OLD_STATE_FILE = "train_state.safetensors"  # how runs before the distributed checkpoints kept their state

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
    return warmup_cosine(step, config.lr, config.warmup_steps, config.steps, config.min_lr_ratio)


def image_batch(sample_image: ImageSampler, data_seed: int, start: int, count: int) -> Tensor:
    """Images ``start … start+count−1`` of the data stream as model pixels [count, 3, R, R] in [-1, 1]."""
    images = [sample_image(np.random.default_rng([data_seed, i])) for i in range(start, start + count)]
    return torch.stack([to_model_pixels(im) for im in images])


def kl_to_standard_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, 1)) averaged over elements."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


class VAELoss(nn.Module):
    """One batch's training loss as a single module call (the step's entry point under FSDP2): the summed L1,
    squared error and KL of ``x`` with posterior noise ``noise``, and their element counts, so that callers
    normalise them globally over processes."""

    def __init__(self, ae: AutoEncoder, config: VAETrainConfig):
        super().__init__()
        self.ae, self.config = ae, config

    def forward(self, x: Tensor, noise: Tensor) -> dict[str, Tensor]:
        with bf16_autocast(self.config.bf16_autocast, x.device.type):
            mean, logvar = self.ae.posterior(x)
            mean, logvar = mean.float(), logvar.float().clamp(-30.0, 20.0)
            recon = self.ae.decoder(mean + torch.exp(0.5 * logvar) * noise).float()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
        return {"l1": (recon - x).abs().sum(), "mse": (recon - x).square().sum(), "kl": kl.sum(),
                "pixels": torch.tensor(float(x.numel())), "latents": torch.tensor(float(mean.numel()))}


def posterior_noise(config: VAETrainConfig, step: int, indices: range) -> Tensor:
    """The posterior sample's noise of each image of a step: a pure function of (seed, step, image)."""
    f = 2 ** (len(config.vae.ch_mult) - 1)
    shape = (config.vae.z_channels, config.vae.resolution // f, config.vae.resolution // f)
    gens = [torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, step, i]).generate_state(1)[0]))
            for i in indices]
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def vae_losses(loss_fn: VAELoss, x: Tensor, noise: Tensor) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch (this process's share, normalised over all of them) and its parts."""
    config = loss_fn.config
    sums = loss_fn(x, noise)
    pixels, latents = all_sum([float(sums["pixels"]), float(sums["latents"])])
    l1, mse, kl = sums["l1"] / pixels, sums["mse"] / pixels, sums["kl"] / latents
    loss = config.l1_weight * l1 + config.mse_weight * mse + config.kl_weight * kl
    parts = dict(zip(("l1", "mse", "kl"), all_sum([float(l1.detach()), float(mse.detach()), float(kl.detach())])))
    return loss, {"loss": config.l1_weight * parts["l1"] + config.mse_weight * parts["mse"]
                  + config.kl_weight * parts["kl"], **parts}


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


def stored_config(path: Path) -> VAEConfig:
    """The :class:`VAEConfig` embedded in the file, else, for a model folder's ``ae.safetensors`` (older folders,
    the shipped teacher's among them, embed none), the ``vae`` entry of the ``config.json`` beside it."""
    with open_safetensors(path) as f:
        meta = f.metadata() or {}
    if "config" in meta:
        return VAEConfig.from_dict(json.loads(meta["config"]))
    if (path.parent / MODEL_CONFIG_FILE).is_file():
        return load_config(path.parent).vae
    raise HyperBagelError(f"{path} has no embedded VAE config and no model {MODEL_CONFIG_FILE} beside it; "
                          "pass config=")


def load_autoencoder(path: str | Path, config: VAEConfig | None = None) -> AutoEncoder:
    """An autoencoder saved by :func:`save_autoencoder` (or a FLUX ``ae.safetensors`` with ``config`` given):
    built on the meta device, loaded strictly, fp32. A model folder's ``ae.safetensors`` takes its config from the
    folder (:func:`stored_config`)."""
    path = Path(path)
    if not path.is_file():
        raise HyperBagelError(f"autoencoder weights not found: {path}")
    if config is None:
        config = stored_config(path)
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


def save_checkpoint(run_dir: Path, config: VAETrainConfig, loss_fn: VAELoss, optimizer: torch.optim.Optimizer,
                    step: int, losses: list[dict[str, float]], calibration: Tensor) -> None:
    """The training state (``train/``, a distributed checkpoint) and the run's ``ae.safetensors`` with its latent
    scale fitted on ``calibration`` (a collective under ``torchrun``)."""
    ckpt.save(run_dir / "train", step, {"ae": loss_fn}, {"ae": optimizer}, {"losses": losses})
    ae = loss_fn.ae
    if distributed():
        tensors = full_state_dict(loss_fn)  # a collective; the main process gets the whole weights
        if is_main():
            ae = AutoEncoder(ae.config)
            ae.load_state_dict({k.removeprefix("ae."): v for k, v in tensors.items()}, strict=True)
    if is_main():
        atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", run_dir / CONFIG_FILE)
        training = ae.training
        ae.eval()
        ae.config = fit_latent_scale(ae, calibration)
        loss_fn.ae.config = ae.config
        ae.train(training)
        save_autoencoder(ae, run_dir / WEIGHTS_FILE)
        log.info("checkpoint: step %d → %s", step, run_dir)
    barrier()


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
    calling again with ``resume=True`` continues to ``config.steps``. Under ``torchrun`` the autoencoder is sharded
    with FSDP2 and each process takes its share of every batch; every image and its posterior noise are a pure
    function of the data stream's index and the step, so the losses do not depend on the process count.
    """
    run_dir = Path(run_dir)
    if resume and (run_dir / OLD_STATE_FILE).is_file() and not (run_dir / "train").is_dir():
        raise HyperBagelError(f"{run_dir} was checkpointed by an older version of this recipe (its posterior noise "
                              "is drawn differently now): train into another folder")
    loss_fn = VAELoss(build_autoencoder(config.vae, config.seed).train(), config)
    if distributed():
        shard(loss_fn, layer_types=())
    optimizer = torch.optim.AdamW(loss_fn.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    step, losses = 0, []
    state = ckpt.load(run_dir / "train", {"ae": loss_fn}, {"ae": optimizer}) if resume else None
    if state:
        step, losses = state["step"], state["losses"]
        loss_fn.ae.config = load_autoencoder(run_dir / WEIGHTS_FILE).config
        log.info("resumed %s at step %d", run_dir, step)
    # A fixed calibration batch, outside the training stream (negative indexes are never trained on).
    calibration = image_batch(sample_image, config.data_seed + 10_000, 0, config.calibration_images)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = Progress("vae", config.steps, step, config.log_every, enabled=False, logger=log)
    with graceful_stop() as stop:
        while step < end:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step)
            mine = shard_range(config.batch_size, step * config.batch_size)
            x = image_batch(sample_image, config.data_seed, mine.start, len(mine))
            noise = posterior_noise(config, step, range(mine.start - step * config.batch_size,
                                                        mine.stop - step * config.batch_size))
            loss, parts = vae_losses(loss_fn, x, noise)
            optimizer.zero_grad(set_to_none=True)
            (loss * loss_scale()).backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            losses.append(parts)
            bar.step(step - 1, {f"vae/{k}": v for k, v in parts.items()})
            stopping = stop.due(step)
            if step % config.checkpoint_every == 0 or step == end or stopping:
                save_checkpoint(run_dir, config, loss_fn, optimizer, step, losses, calibration)
            if stopping:
                break
    return loss_fn.ae.eval(), losses
