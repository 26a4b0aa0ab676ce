"""Training the unified teacher on Shapes World: next-token cross-entropy plus flow-matching MSE.

Each optimizer step takes one micro-batch per task group (generation, editing, understanding; ``shapes_tasks.py``),
each loss normalised by its global token count, with AdamW, warm-up + cosine learning rate, EMA, optional bf16
autocast and gradient accumulation. Every sample is a pure function of ``(seed, step, group, index)``, so a resumed
run replays exactly the batches an uninterrupted one would, and ``torchrun --nproc_per_node=N`` splits each global
batch over processes without changing it (gradients are summed with an all-reduce, gloo on CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_save_tensors, atomic_write_text
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.checkpoint import AE_FILE, build_model, save_pretrained
from hyperbagel.model.config import BagelConfig
from hyperbagel.model.presets import preset
from hyperbagel.model.sequence import Batch, encode_latents, layout, losses, row_losses
from hyperbagel.model.siglip import SiglipVisionTransformer
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.precision import bf16_autocast
from hyperbagel.recipes.alignment import AlignConfig, AlignHeads, align_loss
from hyperbagel.recipes.checkpointing import (
    load_training_state,
)
from hyperbagel.recipes.shapes_tasks import GROUPS, SAMPLERS, TaskMix
from hyperbagel.recipes.step_data import step_loader
from hyperbagel.recipes.vae import load_autoencoder
from hyperbagel.recipes.vit import ViTPretrainConfig, pretrain_vit
from hyperbagel.training import checkpoint as ckpt
from hyperbagel.training.checkpoint import STATE_FILE, full_state_dict
from hyperbagel.training.distributed import all_sum, barrier, distributed, full_tensor, is_main, shard_range
from hyperbagel.training.distributed import world as dist_world
from hyperbagel.training.ema import ema_decay, ema_update
from hyperbagel.training.interrupt import graceful_stop
from hyperbagel.training.progress import Progress
from hyperbagel.training.schedule import warmup_cosine
from hyperbagel.training.sharding import ShardingConfig, loss_scale, shard
from hyperbagel.world.vocab import all_words

log = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    preset: str = "tiny"
    vae: str = "runs/vae/ae.safetensors"
    out: str = "runs/teacher"
    # the long recipe (docs/teacher.md): many small steps, since a step's count, not its batch, limited every run so
    # far; 5.5 s per step with two free cores (measured: scripts/teacher_step_cost.py), so ≈ 10.7 h here
    steps: int = 7000
    batch: dict[str, int] = field(default_factory=lambda: {"gen": 24, "edit": 16, "und": 24})
    weights: dict[str, float] = field(default_factory=lambda: {"gen": 1.0, "edit": 1.0, "und": 1.0})
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    init_std: float = 0.02
    fan_in_init: tuple[str, ...] = ("connector.", "vae2llm.")  # see init_weights and docs/teacher.md
    qk_norm_init: float = 1.0  # initial QK-norm weight: the start temperature of every attention (docs/teacher.md)
    timestep_shift: float = 1.0
    bf16: bool = True
    seed: int = 0
    ckpt_every: int = 100
    log_every: int = 50
    device: str = "cpu"  # the model's and the VAE's device; batches are laid out on the CPU and moved
    workers: int = 0  # data-loading processes that pack steps ahead of the model (0: pack in the training process)
    mix: TaskMix = field(default_factory=TaskMix)
    # the ViT is pre-trained on its own before joint training (recipes/vit.py); steps=0 skips it
    vit_pretrain: ViTPretrainConfig = field(default_factory=ViTPretrainConfig)
    vit_init: str = ""  # a pre-trained ViT (safetensors, ``save_pretrained_vit``) to start from instead
    freeze_vit: bool = False  # keep the (pre-trained) ViT as it is during joint training (BAGEL's ``freeze_vit``)
    # auxiliary losses on the noised image tokens (recipes/alignment.py); off by default
    align: AlignConfig = field(default_factory=AlignConfig)
    # phases of the run, in order: {"until": fraction of steps, "batch": {...}, "mix": {TaskMix overrides}}; a phase
    # leaves out what it does not change, and steps past the last phase use ``batch`` and ``mix``. The default's one
    # phase (steps 3,710-4,689 of 7,000) draws half the questions as yes/no questions on 1-2-object scenes, where
    # fine-tunes broke them out of chance; added at step 3,200 of the long run, where they left chance between steps
    # 4,700 and 6,000 (docs/teacher.md, "Yes/no questions")
    curriculum: list[dict] = field(default_factory=lambda: [{"until": 0.53}, {"until": 0.67, "mix": {"yes_no": 0.5}}])
    llm: dict = field(default_factory=dict)  # overrides of the preset's LLMConfig (width, depth, heads)
    snapshot_every: int = 0  # also keep the EMA model folder of every N-th step under OUT/snapshots/STEP
    # one padded batch and one forward for all task groups, where the default runs one per group: the same samples
    # and losses (each group normalised on its own), a third of the dispatched ops (for a host-bound GPU step), more
    # padding (for a CPU step)
    packed: bool = False
    sharding: ShardingConfig = field(default_factory=ShardingConfig)  # under torchrun (docs/scale.md)
    image_size: int = 0  # set from the preset

    def __post_init__(self) -> None:
        if isinstance(self.mix, dict):
            self.mix = TaskMix(**self.mix)
        if isinstance(self.vit_pretrain, dict):
            self.vit_pretrain = ViTPretrainConfig(**self.vit_pretrain)
        if isinstance(self.align, dict):
            self.align = AlignConfig(**self.align)
        if isinstance(self.sharding, dict):
            self.sharding = ShardingConfig(**self.sharding)
        self.betas = tuple(self.betas)
        if self.steps <= 0 or self.grad_accum <= 0:
            raise ValueError("TeacherConfig.steps and grad_accum must be positive")
        for batch in [self.batch, *(phase.get("batch", {}) for phase in self.curriculum)]:
            unknown = set(batch) - set(GROUPS)
            if unknown:
                raise ValueError(f"TeacherConfig.batch has unknown groups {sorted(unknown)}; groups are {GROUPS}")
        if self.packed and self.align.active:
            raise ValueError("TeacherConfig.packed does not support the auxiliary (align) losses yet")
        ends = [phase["until"] for phase in self.curriculum]
        if ends != sorted(ends) or any(not 0 < e <= 1 for e in ends):
            raise ValueError("TeacherConfig.curriculum: each phase needs 'until' in (0, 1], increasing")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def phase_at(cfg: TeacherConfig, step: int) -> tuple[dict[str, int], TaskMix]:
    """The per-group batch sizes and task mix of ``step``: the first curriculum phase that has not ended."""
    for phase in cfg.curriculum:
        if step < phase["until"] * cfg.steps:
            return {**cfg.batch, **phase.get("batch", {})}, dataclasses.replace(cfg.mix, **phase.get("mix", {}))
    return cfg.batch, cfg.mix


def lr_at(cfg: TeacherConfig, step: int) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)


def init_weights(
    model: Bagel,
    std: float,
    generator: torch.Generator,
    fan_in_prefixes: tuple[str, ...] = (),
    qk_norm_init: float = 1.0,
) -> None:
    """Small normal init (std≈0.02 avoids the slow denormal regime of N(0, 1) embeddings), zero biases, zero
    ``llm2vae``, and every ``*_moe_gen`` copy starting equal to its understanding twin (BAGEL's ``init_moe``).

    Weights under ``fan_in_prefixes`` get std 1/√fan_in instead, so that image tokens (connector, ``vae2llm``)
    start at the scale of the fixed sin-cos position tables (RMS ≈ 0.7) they are added to, rather than ~30× below
    it, where the language model learns to ignore their content.

    Every ``q_norm``/``k_norm`` weight starts at ``qk_norm_init``: with RMS-normalised queries and keys the attention
    logits start with std ≈ ``qk_norm_init``², so 1.0 means nearly uniform attention over the context."""
    for name, p in model.named_parameters():
        if ".q_norm" in name or ".k_norm" in name:
            with torch.no_grad():
                p.fill_(qk_norm_init)
            continue
        if not p.requires_grad or "norm" in name:
            continue
        with torch.no_grad():
            if name.endswith("bias") or name.startswith("llm2vae"):
                p.zero_()
            elif name.startswith(fan_in_prefixes) and p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) / p.shape[1] ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    state = model.state_dict()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_moe_gen" in name:
                p.copy_(state[name.replace("_moe_gen", "")])


def item_generators(cfg: TeacherConfig, step: int, group: str, indices: range):
    """numpy and torch generators of each sample of a step: a pure function of (seed, step, group, index)."""
    g = GROUPS.index(group)
    seeds = [np.random.SeedSequence([cfg.seed, step, g, i]) for i in indices]
    return (
        [np.random.default_rng(s) for s in seeds],
        [torch.Generator().manual_seed(int(s.generate_state(1, np.uint64)[0] >> 1)) for s in seeds],
    )


@dataclass
class Packed:
    """Every group's samples of a micro-batch laid out as one batch; ``rows[group]`` are the group's rows."""

    batch: Batch
    rows: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, drawn: dict[str, tuple[list, list]], mcfg, shift: float) -> Packed:
        samples, gens, rows = [], [], {}
        for group, (s, g) in drawn.items():
            rows[group] = (len(samples), len(samples) + len(s))
            samples += s
            gens += g
        return cls(layout(samples, mcfg, gens, shift), rows)


class StepBatches(torch.utils.data.Dataset):
    """The laid-out batches of one optimizer step (``sequence.layout``: the VAE's part is left to the model's
    device): for every micro-batch, each group's share of this process, built on the CPU. A pure function of the
    step, so data-loading workers may build steps in parallel, ahead of the model, without changing a sample."""

    def __init__(self, cfg: TeacherConfig, mcfg, tok: ShapesTokenizer):
        self.cfg, self.mcfg, self.tok = cfg, mcfg, tok

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> list[dict[str, Batch]] | list[Packed]:
        cfg = self.cfg
        sizes, mix = phase_at(cfg, step)
        micros = []
        for micro in range(cfg.grad_accum):
            drawn = {}
            for group in GROUPS:
                n = sizes.get(group, 0)
                if n == 0:
                    continue
                rngs, gens = item_generators(cfg, step, group, shard_range(n, micro * n))
                drawn[group] = ([SAMPLERS[group](r, self.tok, cfg.image_size, mix) for r in rngs], gens)
            if cfg.packed:
                micros.append(Packed.of(drawn, self.mcfg, cfg.timestep_shift))
            else:
                micros.append({g: layout(samples, self.mcfg, gens, cfg.timestep_shift)
                               for g, (samples, gens) in drawn.items()})
        return micros


@dataclass
class Aligner:
    """What the auxiliary losses need: their heads and the frozen pre-trained ViT that REPA aligns to."""

    heads: AlignHeads
    vit: SiglipVisionTransformer | None

    def to(self, device: str) -> None:
        self.heads.to(device)
        if self.vit is not None:
            self.vit.to(device)


ALIGN_PARTS = ("repa", "colours")


def active_part(cfg: TeacherConfig, part: str) -> bool:
    return cfg.align.repa > 0 if part == "repa" else cfg.align.labels > 0


class TeacherLosses(nn.Module):
    """One group's training forward as a single module call: the model's summed losses and, with auxiliary heads,
    their loss. The step's entry point, so that FSDP2 gathers everything outside the decoder layers here, on every
    process alike, whatever its share of the batch holds (``training/sharding.py``)."""

    def __init__(self, model: Bagel, heads: AlignHeads | None = None):
        super().__init__()
        self.model, self.heads = model, heads

    def forward(self, batch: Batch, align: AlignConfig, target_vit: SiglipVisionTransformer | None,
                per_row: bool = False):
        if per_row:
            return row_losses(self.model, batch)
        aligned = self.heads is not None and batch.noised is not None and bool(batch.noised.any())
        out = losses(self.model, batch, align.layer if aligned else None)
        if not aligned:
            return out, None, {}
        mcfg = self.model.cfg
        aux, parts = align_loss(align, self.heads, out.image_states, batch.vae_pixels[batch.noised], target_vit,
                                mcfg.vit.patch_size, mcfg.vit_max_num_patch_per_side, mcfg.latent_downsample)
        return out, aux, parts


def step_loss(forward: TeacherLosses, vae: AutoEncoder, batches: dict[str, Batch], cfg: TeacherConfig,
              aligner: Aligner | None = None):
    """Backward of one micro-batch of every group; returns the logged (global) losses."""
    logged = {}
    for group, batch in batches.items():
        batch = encode_latents(batch.to(cfg.device), vae, forward.model.cfg.latent_patch_size)
        with bf16_autocast(cfg.bf16, torch.device(cfg.device).type):
            out, aux, parts = forward(batch, cfg.align, aligner.vit if aligner else None)
        ce_n, mse_n = all_sum([out.ce_count, out.mse_count])
        scale = cfg.weights.get(group, 1.0) / cfg.grad_accum * loss_scale()
        loss = out.ce_sum / max(ce_n, 1) + out.mse_sum / max(mse_n, 1)
        if aligner is not None:
            # the auxiliary loss is a mean over this process's noised images: weigh it by their share of them all
            mine = int(batch.noised.sum()) if aux is not None else 0
            total, *values = all_sum([mine, *(parts.get(k, 0.0) * mine for k in ALIGN_PARTS)])
            if aux is not None:
                loss = loss + aux * (mine / total)
            if total:
                logged.update({f"{group}/{k}": v / total for k, v in zip(ALIGN_PARTS, values) if active_part(cfg, k)})
        (loss * scale).backward()
        ce, mse = all_sum([out.ce_sum.item() / max(ce_n, 1), out.mse_sum.item() / max(mse_n, 1)])
        if ce_n:
            logged[f"{group}/ce"] = ce
        if mse_n:
            logged[f"{group}/mse"] = mse
    return logged


def build_teacher(cfg: TeacherConfig, vae_config) -> tuple[BagelConfig, Bagel]:
    """The model as training starts it: the preset (with ``cfg.llm``'s overrides), seeded and initialised."""
    base = preset(cfg.preset)
    mcfg = dataclasses.replace(base, vae=vae_config, llm=dataclasses.replace(base.llm, **cfg.llm))
    cfg.image_size = mcfg.image_size
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    init_weights(model, cfg.init_std, torch.Generator().manual_seed(cfg.seed), tuple(cfg.fan_in_init), cfg.qk_norm_init)
    return mcfg, model


def save_pretrained_vit(cfg: TeacherConfig, path: Path, progress: bool = False) -> list[dict]:
    """Pre-train the ViT exactly as ``train_teacher`` would for ``cfg`` and save it, for runs that share one
    (``TeacherConfig.vit_init``); returns the pre-training history."""
    vae = load_autoencoder(cfg.vae)
    mcfg, model = build_teacher(cfg, vae.config)
    vit = model.vit_model.vision_model
    history = pretrain_vit(vit, cfg.vit_pretrain, mcfg.image_size, mcfg.vit.patch_size,
                           mcfg.vit_max_num_patch_per_side, progress and is_main(), cfg.device, cfg.workers)
    if is_main():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(vit.state_dict(), Path(path))
    return history


def packed_step_loss(forward: TeacherLosses, vae: AutoEncoder, packed: Packed, cfg: TeacherConfig):
    """``step_loss`` for a packed micro-batch: one forward and one backward for all groups."""
    batch = encode_latents(packed.batch.to(cfg.device), vae, forward.model.cfg.latent_patch_size)
    with bf16_autocast(cfg.bf16, torch.device(cfg.device).type):
        r = forward(batch, cfg.align, None, per_row=True)
    spans = [(group, slice(a, b)) for group, (a, b) in packed.rows.items()]
    counts = all_sum([float(c[rows].sum()) for _, rows in spans for c in (r.ce_count, r.mse_count)])
    loss, logged = r.ce_sum.sum() * 0.0, {}
    for i, (group, rows) in enumerate(spans):
        ce_n, mse_n = counts[2 * i], counts[2 * i + 1]
        ce, mse = r.ce_sum[rows].sum() / max(ce_n, 1), r.mse_sum[rows].sum() / max(mse_n, 1)
        loss = loss + cfg.weights.get(group, 1.0) * (ce + mse)
        ce_v, mse_v = all_sum([float(ce.detach()), float(mse.detach())])
        if ce_n:
            logged[f"{group}/ce"] = ce_v
        if mse_n:
            logged[f"{group}/mse"] = mse_v
    (loss * loss_scale() / cfg.grad_accum).backward()
    return logged


def train_teacher(cfg: TeacherConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) the teacher; returns the model folder (``config.json``, ``ema.safetensors``,
    ``ae.safetensors``, ``tokenizer.json``). ``stop_after`` ends the call after that many total steps with a
    checkpoint, as an interruption would; calling again resumes. Under ``torchrun`` the model, its EMA and the
    auxiliary heads are sharded with FSDP2 (``training/sharding.py``) and each process builds its share of every
    batch."""
    rank = dist_world()[0]
    out = Path(cfg.out)
    vae = load_autoencoder(cfg.vae).eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    tok = ShapesTokenizer.build(list(all_words()))
    base = preset(cfg.preset)
    if tok.vocab_size > base.llm.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} words, preset vocab is {base.llm.vocab_size}")
    mcfg, model = build_teacher(cfg, vae.config)
    resuming = (out / "train" / STATE_FILE).is_file()
    if resuming:
        _check_same_autoencoder(out, vae, cfg.vae)
    vit_seconds = 0.0
    if cfg.vit_init and not resuming:
        model.vit_model.vision_model.load_state_dict(load_file(cfg.vit_init), strict=True)
    elif cfg.vit_pretrain.steps > 0 and not resuming:
        t = time.perf_counter()
        vit_history = pretrain_vit(model.vit_model.vision_model, cfg.vit_pretrain, mcfg.image_size,
                                   mcfg.vit.patch_size, mcfg.vit_max_num_patch_per_side, progress and rank == 0,
                                   cfg.device, cfg.workers)
        vit_seconds = time.perf_counter() - t
        log.info("ViT pre-trained in %.0f s: %s", vit_seconds, vit_history[-1])
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json.dumps(vit_history) + "\n", out / "vit_pretrain.json")
    if cfg.freeze_vit:
        model.vit_model.requires_grad_(False)
    aligner = None
    if cfg.align.active:
        aligner = build_aligner(cfg, model)
        _resume_aligner(aligner, out, resuming, rank)
        aligner.to(cfg.device)
    model.to(cfg.device)
    vae.to(cfg.device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    forward = TeacherLosses(model, aligner.heads if aligner else None)
    if distributed():
        shard(forward, cfg.sharding)
        shard(ema, cfg.sharding)
    trained = [p for p in forward.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    state = _resume(out / "train", forward, ema, opt)
    start = state["step"] if state else 0
    history = state["history"] if state else []
    seconds = state.get("seconds", 0.0) if state else vit_seconds  # wall clock over every piece of the run
    if state:
        log.info("resuming %s at step %d", out, start)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(cfg.to_dict(), indent=1, default=list) + "\n", out / "train_config.json")

    bar = Progress("teacher", cfg.steps, start, cfg.log_every, progress, log)
    model.train()
    data = step_loader(StepBatches(cfg, mcfg, tok), start, cfg.steps, cfg.workers, cfg.device)
    with graceful_stop(stop_after) as stop:
        for step, micros in zip(range(start, cfg.steps), data):
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            opt.zero_grad(set_to_none=True)
            logged: dict[str, float] = {}
            for batches in micros:
                parts = (packed_step_loss(forward, vae, batches, cfg) if cfg.packed
                         else step_loss(forward, vae, batches, cfg, aligner))
                for k, v in parts.items():
                    logged[k] = logged.get(k, 0.0) + v / cfg.grad_accum
            gnorm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
            opt.step()
            ema_update(ema, model, ema_decay(step, cfg.ema_decay))
            logged = {"step": step + 1, "lr": lr_at(cfg, step), "grad_norm": float(full_tensor(gnorm)), **logged}
            history.append(logged)
            bar.step(step, logged)
            stopping = stop.due(step + 1)
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps or stopping:
                ckpt.save(out / "train", step + 1, {"model": forward, "ema": ema}, {"model": opt},
                          {"history": history, "seconds": seconds + bar.elapsed()})
                _export(out, ema, vae, tok)
            if rank == 0 and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
                save_pretrained(out / "snapshots" / f"{step + 1:06d}", ema, vae, {"tokenizer.json": tok.to_json()})
            if stopping:
                break
    bar.close()
    return out


def _resume(folder: Path, forward: TeacherLosses, ema: nn.Module, opt) -> dict | None:
    """The last checkpoint's state, restored into the modules; a run checkpointed before the distributed
    checkpoints (safetensors files) resumes from those, in one process."""
    return ckpt.resume(folder, {"model": forward, "ema": ema}, {"model": opt},
                       lambda: load_training_state(folder, forward.model, ema, opt, forward.heads))


def _check_same_autoencoder(out: Path, vae: AutoEncoder, given: str) -> None:
    """A resumed run keeps the autoencoder it started with: the model learned that one's latents. The run folder
    holds a copy (``ae.safetensors``, written with every export)."""
    stored = out / AE_FILE
    if not stored.is_file():
        return
    theirs, mine = load_file(stored), vae.state_dict()
    if theirs.keys() != mine.keys() or any(not torch.equal(theirs[k], mine[k].cpu()) for k in mine):
        raise HyperBagelError(f"{out} was trained with another autoencoder than {given} (its copy: {stored}); "
                              "resume with that one, or train into another folder")


def _export(out: Path, ema: Bagel, vae: AutoEncoder, tok: ShapesTokenizer) -> None:
    """The model folder from the EMA weights (gathered from every process when sharded)."""
    if not distributed():
        save_pretrained(out, ema, vae, {"tokenizer.json": tok.to_json()})
        return
    tensors = full_state_dict(ema)
    if dist_world()[0] == 0:
        plain = build_model(ema.cfg)
        plain.load_state_dict(tensors, strict=True)
        save_pretrained(out, plain, vae, {"tokenizer.json": tok.to_json()})
    barrier()


def build_aligner(cfg: TeacherConfig, model: Bagel) -> Aligner:
    """The auxiliary heads (seeded), and for REPA a frozen copy of the model's ViT as it is now (pre-trained)."""
    mcfg = model.cfg
    if not 1 <= cfg.align.layer <= mcfg.llm.num_layers:
        raise ValueError(f"TeacherConfig.align.layer must be in 1..{mcfg.llm.num_layers}, got {cfg.align.layer}")
    heads = AlignHeads(cfg.align, mcfg.llm.hidden_size, mcfg.vit.hidden_size)
    init = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        for name, p in heads.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=init) / p.shape[-1] ** 0.5)
    vit = None
    if cfg.align.repa > 0:
        vit = copy.deepcopy(model.vit_model.vision_model).eval()
        for p in vit.parameters():
            p.requires_grad_(False)
    return Aligner(heads, vit)


def _resume_aligner(aligner: Aligner, out: Path, resuming: bool, rank: int) -> None:
    """REPA's target stays the ViT as pre-training left it: kept in ``OUT/train/vit_target.safetensors`` so that a
    resumed run (whose model ViT has trained on) aligns to the same features."""
    if aligner.vit is None:
        return
    path = out / "train" / "vit_target.safetensors"
    if resuming:
        aligner.vit.load_state_dict(load_file(path), strict=True)
    elif rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(aligner.vit.state_dict(), path)
