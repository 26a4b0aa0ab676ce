"""What the generation-distillation recipes share: the config fields, the Shapes World conditions of a step,
the teacher's contexts, the models as the training utilities run them (one process, or FSDP2 under ``torchrun``),
trainable-only distributed checkpoints with exact resume, and the understanding-weights guard.

A step's data is a pure function of ``(seed, step, group, index, sub)``: prompts and edits come from Shapes World's
task generators, and each row's torch generator draws, in order, the VAE posterior sample of an edit source, the
guidance scales, the initial noise and the clean target latents. A resumed run therefore replays exactly the
batches an uninterrupted one would. Contexts are built by the teacher (``Pipeline.generation_branches`` /
``edit_branches``); students only ever run denoising forwards against them.

Under ``torchrun`` every process builds its share of each group's rows (``shard_range``) and every model is sharded
with FSDP2 (``training/sharding.py``): the trained students and discriminators, and the frozen teacher and other
frozen roles, which get no optimizer state. A model is always entered through one forward (``Runner``, an
``Entry``), whatever it runs. A group's losses are means over its rows: each process weighs its rows' mean by their
share of the step's rows (``backward_share``), and logs the group's mean over all processes (``group_mean``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor, nn

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_write_text
from hyperbagel.flow.guidance import GuidanceConfig, gated_scales
from hyperbagel.flow.sampler import Branches
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.context import Forwarder
from hyperbagel.model.latents import patchify_latents
from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.model.student import (
    STUDENT_FILE,
    StudentInfo,
    has_student,
    is_generation_param,
    read_student_info,
    save_student,
    student_from_teacher,
)
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline
from hyperbagel.precision import use_bf16
from hyperbagel.pretrained import DEFAULT_MODEL, resolve
from hyperbagel.recipes.checkpointing import load_optimizer
from hyperbagel.training import checkpoint as ckpt
from hyperbagel.training.distributed import all_sum, barrier, distributed, full_tensor, is_main, shard_range, world
from hyperbagel.training.schedule import warmup_constant_decay
from hyperbagel.training.sharding import Entry, ShardingConfig, loss_scale, shard
from hyperbagel.world.palette import RESOLUTIONS
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene, scene_from_json
from hyperbagel.world.tasks import edit as edit_tasks
from hyperbagel.world.tasks import t2i

log = logging.getLogger(__name__)

GROUPS = ("gen", "edit")
GUIDANCE = {"gen": T2I_GUIDANCE, "edit": EDIT_GUIDANCE}


@dataclass
class DistillConfig:
    """Fields every stage has; each stage's config adds its own."""

    teacher: str = DEFAULT_MODEL  # the teacher's model folder, or a shipped model's name
    init: str | None = None  # the previous stage's folder (its student.safetensors); None: the teacher
    out: str = "runs/distill"
    steps: int = 1000
    batch: dict[str, int] = field(default_factory=lambda: {"gen": 8, "edit": 4})
    lr: float = 1e-4
    warmup: int = 20
    decay: int = 0  # the last N steps: every role's lr falls linearly towards 0 (0: constant after the warm-up)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    shift: float = 3.0
    text_scale: tuple[float, float] = (1.0, 5.0)  # ~U, text-to-image and editing
    image_scale: tuple[float, float] = (1.0, 2.5)  # ~U, editing only (text-to-image feeds 1.0)
    caption_prompts: float = 0.4  # share of text-to-image prompts that are full captions (as the teacher's mix)
    bf16: bool = True
    device: str = "cpu"  # the models' device; every random draw is made on the CPU (the same on any device)
    seed: int = 0
    ckpt_every: int = 100
    log_every: int = 20
    sharding: ShardingConfig = field(default_factory=ShardingConfig)  # under torchrun (docs/scale.md)

    def __post_init__(self) -> None:
        if isinstance(self.sharding, dict):
            self.sharding = ShardingConfig(**self.sharding)
        self.betas = tuple(self.betas)
        self.text_scale, self.image_scale = tuple(self.text_scale), tuple(self.image_scale)
        if self.steps <= 0:
            raise ValueError(f"{type(self).__name__}.steps must be positive, got {self.steps}")
        if not 0 <= self.decay <= self.steps:
            raise ValueError(f"{type(self).__name__}.decay must be in [0, steps = {self.steps}], got {self.decay}")
        unknown = set(self.batch) - set(GROUPS)
        if unknown:
            raise ValueError(f"{type(self).__name__}.batch has unknown groups {sorted(unknown)}; groups are {GROUPS}")
        if not any(self.batch.values()):
            raise ValueError(f"{type(self).__name__}.batch is empty")
        for name in ("text_scale", "image_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{type(self).__name__}.{name} must be a range 0 < lo ≤ hi, got {(lo, hi)}")

    @property
    def groups(self) -> list[str]:
        """The task groups a step trains on: those with rows in ``batch``, in ``GROUPS`` order."""
        return [g for g in GROUPS if self.batch.get(g, 0)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lr_at(cfg: DistillConfig, step: int, lr: float | None = None) -> float:
    """Linear warm-up, then constant, then (``cfg.decay``) a linear fall over the last steps."""
    return warmup_constant_decay(step, cfg.lr if lr is None else lr, cfg.warmup, cfg.steps, cfg.decay)


# ----------------------------------------------------------------------------------------------------------------
# models


class Runner(Entry):
    """A model of a stage entered through one forward (``training/sharding.Entry``), with a ``Forwarder`` on it:
    ``runner.velocity(...)`` is the forwarder's velocity (with ``None`` for its ``LMOutput``), and a runner stands in
    for a forwarder wherever only the velocity is used (``distilled_velocity``, ``teacher_guided_velocity``)."""

    def __init__(self, model: Bagel):
        super().__init__(model)
        self.fwd = Forwarder(model)

    def velocity(self, *args, **kwargs):
        return self(self._velocity, *args, **kwargs)

    def _velocity(self, *args, **kwargs):
        # Only the velocity leaves the entry: FSDP2 hooks the root's backward on every tensor the entry returns, and
        # warns for the language model's hidden states, a view, on which an in-place op would drop the hook
        return self.fwd.velocity(*args, **kwargs)[0], None


@dataclass
class Setup:
    pipe: Pipeline  # the teacher: contexts, VAE, tokenizer, guided velocity
    ids: Tensor  # latent position ids of one image
    lineage: dict[str, str]
    teacher: Runner  # the teacher's model, as it is run (its contexts and velocities go through it)
    fingerprint: str  # the teacher's understanding weights as loaded (``understanding_fingerprint``)
    gated: bool = False  # the student's scales are gated by the CFG interval (``StudentInfo.gated``)


def load_setup(cfg: DistillConfig, gated: bool | None = None) -> Setup:
    """The teacher and what the student descends from. ``gated``: whether the student's guidance scales are gated
    by the CFG interval; None takes the previous stage's (a stage-1 student from the teacher: ungated)."""
    teacher = resolve(cfg.teacher)
    if not (teacher / "config.json").is_file():
        raise HyperBagelError(f"teacher model folder not found: {teacher} (train one with `hyperbagel train teacher`)")
    pipe = Pipeline.from_pretrained(teacher, device=cfg.device, student=False)
    for p in pipe.model.parameters():
        p.requires_grad_(False)
    for p in pipe.vae.parameters():
        p.requires_grad_(False)
    if cfg.init and not has_student(cfg.init):
        raise HyperBagelError(f"{cfg.init} holds no {STUDENT_FILE}: run the previous distillation stage first")
    info = read_student_info(cfg.init) if cfg.init else None
    gated = bool(info and info.gated) if gated is None else gated
    return Setup(pipe, pipe.latent_ids(), dict(info.lineage) if info else {}, Runner(pipe.model),
                 understanding_fingerprint(pipe.model), gated)


def student_weights(folder: str | Path | None) -> dict[str, Tensor] | None:
    """A stage's student generation-branch tensors (None: start from the teacher)."""
    if folder is None:
        return None
    if not has_student(folder):
        raise HyperBagelError(f"{folder} holds no {STUDENT_FILE}: run the previous distillation stage first")
    from hyperbagel.model.checkpoint import read_tensors

    return read_tensors(Path(folder) / STUDENT_FILE)


def new_student(setup: Setup, folder: str | Path | None, trainable: bool = True) -> Bagel:
    """A student on the teacher, from ``folder``'s student weights (or the teacher's generation branch)."""
    student = student_from_teacher(setup.pipe.model, student_weights(folder))
    if not trainable:
        for p in student.parameters():
            p.requires_grad_(False)
    return student.train(trainable)


def distribute(setup: Setup, cfg: DistillConfig, *models: nn.Module) -> None:
    """Under ``torchrun``: shard ``models`` (runners, discriminators, frozen or trained), then the teacher, with
    FSDP2. Students share the teacher's understanding parameters, so they are sharded first, while those are still
    plain (each sharded model then holds its own shard of them). A no-op in one process."""
    if not distributed():
        return
    size = world()[1]
    small = {g: n for g, n in cfg.batch.items() if 0 < n < size}
    if small:
        raise HyperBagelError(f"{type(cfg).__name__}.batch {small}: every group needs at least one row per process "
                              f"({size} processes)")
    for model in models:
        shard(model, cfg.sharding)
    shard(setup.teacher, cfg.sharding)


def understanding_fingerprint(model: Bagel) -> str:
    """SHA-256 over every non-generation tensor: equal fingerprints mean bit-identical understanding weights (a
    collective when ``model`` is sharded)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not is_generation_param(name):
            h.update(name.encode())
            h.update(full_tensor(tensor.detach()).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# data


@dataclass
class Conditions:
    group: str  # "gen" or "edit"
    branches: Branches  # built by the teacher; the unconditional ones only when asked for
    guidance: GuidanceConfig  # the teacher's CFG interval and renorm for this task
    text_scale: Tensor  # [B]: the teacher's scales, as stage 1's target applies them
    image_scale: Tensor  # [B]
    noise: Tensor  # [B, N, P]: the initial noise x_T
    x0: Tensor | None  # [B, N, P]: clean latents of the target scenes (when asked for)
    generators: list[torch.Generator]  # per row, for any further draws of the step
    items: list[dict] = field(default_factory=list)  # per row: the text-to-image or edit item (the exact judge's)
    gate: tuple[float, float] | None = None  # the CFG interval a gated student's scales follow (None: ungated)

    @property
    def batch(self) -> int:
        return self.noise.shape[0]

    @property
    def device(self) -> torch.device:
        return self.noise.device

    def scales(self, t: Tensor, rows: Tensor | None = None) -> dict[str, Tensor]:
        """The ``text_scale``/``image_scale`` keywords a student (or a discriminator on one) is fed at times ``t``,
        for all rows or ``rows``: the rows' scales, gated by the CFG interval for a gated student."""
        text, image = self.text_scale, self.image_scale
        if rows is not None:
            text, image = text[rows], image[rows]
        text, image = gated_scales(t, text, image, self.gate)
        return {"text_scale": text, "image_scale": image}

    def per_row(self, draw) -> Tensor:
        """``draw(generator)`` for each row's generator (on the CPU), stacked and moved to the models' device."""
        return torch.stack([draw(g) for g in self.generators]).to(self.device)


def row_generators(seed: int, step: int, group: str, rows: range, sub: int = 0):
    """numpy and torch generators of each row: a pure function of (seed, step, group, sub, index)."""
    seeds = [np.random.SeedSequence([seed, step, GROUPS.index(group), sub, i]) for i in rows]
    return ([np.random.default_rng(s) for s in seeds],
            [torch.Generator().manual_seed(int(s.generate_state(1, np.uint64)[0] >> 1)) for s in seeds])


def _t2i_item(rng: np.random.Generator, resolution: int, caption_share: float):
    if rng.random() < caption_share:
        scene = sample_scene(rng, resolution)
        return t2i.caption_prompt(scene), scene
    item = t2i.sample_prompt(rng)
    return item, t2i.scene_for_prompt(item, rng, resolution)


def scene_size(R: int) -> int:
    """The resolution scenes are drawn at for a model of ``R`` px: its own where Shapes World draws it, else 64."""
    return R if R in RESOLUTIONS else 64


def picture(scene, R: int) -> np.ndarray:
    """A scene's picture at the model's resolution: a model of a size Shapes World does not draw (BAGEL-7B's 896
    for the GPU memory check) gets the 64-px picture scaled by nearest neighbour."""
    image = render(scene)
    if image.shape[0] == R:
        return image
    return np.asarray(Image.fromarray(image).resize((R, R), Image.NEAREST))


def _latents(pipe: Pipeline, scenes, generators) -> Tensor:
    R = pipe.cfg.image_size
    pixels = torch.stack([to_model_pixels(picture(s, R)) for s in scenes]).to(pipe.fwd.device)
    return patchify_latents(pipe.vae.encode_rows(pixels, generators), pipe.cfg.latent_patch_size)


@torch.no_grad()
def conditions(setup: Setup, cfg: DistillConfig, step: int, group: str, sub: int = 0, cfg_branches: bool = False,
               data: bool = False) -> Conditions:
    """This process's rows of one group for one step: teacher contexts, guidance scales, initial noise (and clean
    targets)."""
    pipe = setup.pipe
    rngs, gens = row_generators(cfg.seed, step, group, shard_range(cfg.batch[group]), sub)
    R = pipe.cfg.image_size
    if group == "gen":
        items = [_t2i_item(r, scene_size(R), cfg.caption_prompts) for r in rngs]
        with autocast(cfg, contexts=True):
            branches, _ = setup.teacher(pipe.generation_branches, [it["prompt"] for it, _ in items],
                                        cfg_branches=cfg_branches)
        scenes = [s for _, s in items]
        items = [it for it, _ in items]
    else:
        tags = edit_tasks.EDIT_TAGS
        items = [edit_tasks.sample_edit_item(r, tags[r.integers(len(tags))], scene_size(R)) for r in rngs]
        sources = [picture(scene_from_json(it["source"]), R) for it in items]
        with autocast(cfg, contexts=True):
            branches, _ = setup.teacher(pipe.edit_branches, sources, [it["instruction"] for it in items], gens,
                                        cfg_branches=cfg_branches)
        scenes = [scene_from_json(it["target"]) for it in items]
    lo, hi = cfg.text_scale
    text = torch.stack([lo + (hi - lo) * torch.rand((), generator=g) for g in gens])
    lo, hi = cfg.image_scale if group == "edit" else (1.0, 1.0)
    image = torch.stack([lo + (hi - lo) * torch.rand((), generator=g) for g in gens])
    noise = torch.stack([torch.randn(len(setup.ids), pipe.cfg.patch_latent_dim, generator=g) for g in gens])
    x0 = _latents(pipe, scenes, gens) if data else None
    device = pipe.fwd.device
    guidance = GUIDANCE[group]
    return Conditions(group, branches, guidance, text.to(device), image.to(device), noise.to(device), x0, gens,
                      items, guidance.interval if setup.gated else None)


def autocast(cfg: DistillConfig, contexts: bool = False):
    """bf16 autocast for the models' forwards (``cfg.bf16``); the teacher's context prefills (``contexts``) run in
    fp32 unless the sharded parameters are gathered in bf16, where every forward must compute in bf16."""
    bf16_params = distributed() and cfg.sharding.param_dtype == "bfloat16"
    device_type = torch.device(cfg.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16,
                          enabled=bf16_params or use_bf16(cfg.bf16 and not contexts, device_type))


def backward_share(loss: Tensor, c: Conditions, cfg: DistillConfig) -> None:
    """Backward of a group's mean loss over this process's rows, weighted by their share of the step's rows (the
    step's gradient is the row-weighted mean over groups; FSDP2 averages over processes, hence ``loss_scale``)."""
    (loss * (c.batch / sum(cfg.batch.values())) * loss_scale()).backward()


def group_mean(values: dict[str, float], c: Conditions) -> dict[str, float]:
    """Means over this process's rows → the means over the group's rows in every process (a collective)."""
    if not distributed():
        return values
    *sums, n = all_sum([*(v * c.batch for v in values.values()), c.batch])
    return {k: v / n for k, v in zip(values, sums)}


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def save(out: Path, step: int, trained: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
         state: dict) -> None:
    """The trained roles' trainable tensors and optimizer moments as a distributed checkpoint (a collective)."""
    ckpt.save(out / "train", step, trained, optimizers, state, trainable_only=True)


def resume(out: Path, trained: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> dict | None:
    """The last checkpoint's state, restored into the roles (a run checkpointed in the older format, safetensors
    per role, resumes from those in one process)."""
    folder = out / "train"
    roles = {r: m.model if isinstance(m, Entry) else m for r, m in trained.items()}
    state = ckpt.resume(folder, trained, optimizers, lambda: _load_roles(folder, roles, optimizers),
                        trainable_only=True)
    if state:
        log.info("resuming %s at step %d", out, state["step"])
    return state


def _load_roles(folder: Path, roles: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore a checkpoint of the older format: per role, trainable tensors and optimizer moments as safetensors."""
    state = json.loads((folder / ckpt.STATE_FILE).read_text())
    for role, module in roles.items():
        saved = load_file(folder / f"{role}.safetensors")
        params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        if set(saved) != set(params):
            raise HyperBagelError(f"{folder / role}.safetensors does not match the {role}'s trainable parameters")
        with torch.no_grad():
            for k, v in saved.items():
                params[k].copy_(v)
        if role in optimizers:
            load_optimizer(optimizers[role], module, load_file(folder / f"{role}_optimizer.safetensors"),
                           state["optimizers"][role])
    return state


def export_student(out: Path, runner: Runner, info: StudentInfo, teacher: str | Path) -> None:
    """The deployable folder of ``runner``'s student (its generation branch gathered whole when sharded)."""
    tensors = {k: full_tensor(v.detach()).cpu() for k, v in runner.model.state_dict().items()
               if is_generation_param(k)}
    if is_main():
        save_student(out, tensors, info, teacher)
    barrier()


def write_config(cfg: DistillConfig, out: Path) -> None:
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(cfg.to_dict(), indent=1, default=list) + "\n", out / "distill_config.json")


def student_info(cfg: DistillConfig, setup: Setup, stage: str, steps: int = 6) -> StudentInfo:
    return StudentInfo(stage=stage, steps=steps, shift=cfg.shift, text_scale_range=cfg.text_scale,
                       image_scale_range=cfg.image_scale, lineage={**setup.lineage, stage: str(cfg.out)},
                       gated=setup.gated)


def check_understanding(setup: Setup) -> None:
    """Raise if the teacher's understanding weights changed since they were loaded (they never should)."""
    if understanding_fingerprint(setup.pipe.model) != setup.fingerprint:
        raise HyperBagelError("the understanding weights changed during distillation; this is a bug")
