"""Pre-training the understanding encoder (the SigLIP-style ViT) on Shapes World before the teacher's joint training.

BAGEL starts from a pre-trained SigLIP and a pre-trained Qwen2; our teacher starts from scratch, and a language model
trained jointly with a random ViT learns the answer prior per question long before it learns to read the image
(docs/teacher.md). So the ViT first learns, on its own, features that say what is where: for every patch, the shape,
colour and size of the object centred in it (or none), and which palette colours its pixels contain. Labels come
from the scene itself (the world is exact), so this takes a minute or two on a CPU. The heads are thrown away.

Every image of a step is a pure function of ``(seed, step, index)``. Under ``torchrun`` a copy of the ViT and the
heads is sharded with FSDP2, each process trains on its share of every batch (the losses weighted by that share),
and the trained weights are gathered back into the ViT: the same ViT in one process or several.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.model.siglip import SiglipEncoderLayer, SiglipVisionTransformer, patchify_image, vit_position_ids
from hyperbagel.recipes.step_data import step_loader
from hyperbagel.training.distributed import all_sum, distributed, full_tensor, shard_range
from hyperbagel.training.progress import Progress
from hyperbagel.training.schedule import warmup_min_cosine
from hyperbagel.training.sharding import loss_scale, shard
from hyperbagel.world import palette as P
from hyperbagel.world.render import render
from hyperbagel.world.scene import Scene, sample_scene

# per-patch class heads: 0 is "no object centred here"
HEADS = {"shape": len(P.SHAPES) + 1, "color": len(P.COLORS) + 1, "size": len(P.SIZES) + 1}


@dataclass
class ViTPretrainConfig:
    steps: int = 1200  # ≈ 2.5 min on two cores; shape accuracy of centred patches ≈ 0.8 by step 1000
    batch: int = 64
    lr: float = 4e-3
    warmup: int = 40
    seed: int = 0


def patch_targets(scene: Scene, patch: int) -> dict[str, np.ndarray]:
    """Labels of every patch of the scene's image (row-major, ``g = resolution // patch`` per side): the shape,
    colour and size index (+1; 0 = none) of the object whose centre lies in the patch, and ``present[p, c]``, whether
    palette colour ``c`` (``palette.PALETTE_NAMES``) colours any pixel of the patch."""
    R = scene.resolution
    g = R // patch
    out = {name: np.zeros(g * g, dtype=np.int64) for name in HEADS}
    for o in scene.objects:
        cx, cy = o.centre(R)
        p = min(int(cy // patch), g - 1) * g + min(int(cx // patch), g - 1)
        out["shape"][p] = P.SHAPES.index(o.shape) + 1
        out["color"][p] = P.COLORS.index(o.color) + 1
        out["size"][p] = P.SIZES.index(o.size) + 1
    cells = render(scene).astype(np.int32).reshape(g, patch, g, patch, 3).transpose(0, 2, 1, 3, 4)
    cells = cells.reshape(g * g, patch * patch, 1, 3)
    out["present"] = (cells == P.PALETTE_RGB[None, None]).all(-1).any(1)
    return out


class PatchHeads(nn.Module):
    """Linear read-outs of every ViT output token, one per label kind."""

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in HEADS.items()})
        self.present = nn.Linear(hidden, len(P.PALETTE_NAMES))

    def forward(self, feats: Tensor) -> dict[str, Tensor]:
        return {**{name: head(feats) for name, head in self.heads.items()}, "present": self.present(feats)}


def patch_loss(logits: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
    """Mean cross-entropy of the class heads plus binary cross-entropy of colour presence."""
    ce = sum(F.cross_entropy(logits[name], targets[name]) for name in HEADS)
    return ce + F.binary_cross_entropy_with_logits(logits["present"], targets["present"].float())


def patch_hits(logits: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, tuple[float, float]]:
    """Per head, (correct, scored) over patches that hold an object centre (the interesting ones); for presence,
    over every patch and colour."""
    has = targets["shape"] > 0
    out = {name: (float((logits[name].argmax(-1) == targets[name])[has].sum()), float(has.sum())) for name in HEADS}
    out["present"] = (float(((logits["present"] > 0) == targets["present"]).sum()), float(targets["present"].numel()))
    return out


def image_rng(cfg: ViTPretrainConfig, step: int, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 7, step, index])


def make_batch(rngs: list[np.random.Generator], resolution: int, patch: int):
    """One random scene (either background) per generator, as packed ViT patches, and their stacked targets."""
    scenes = [sample_scene(rng, resolution, background=P.BACKGROUND_NAMES[rng.integers(2)]) for rng in rngs]
    pixels = torch.cat([patchify_image(to_model_pixels(render(s)), patch) for s in scenes])
    per = [patch_targets(s, patch) for s in scenes]
    targets = {k: torch.from_numpy(np.concatenate([t[k] for t in per])) for k in per[0]}
    return pixels, targets


def vit_features(vit: SiglipVisionTransformer, pixels: Tensor, n_images: int, side: int, grid: int) -> Tensor:
    ids = vit_position_ids(grid, grid, side).repeat(n_images).to(pixels.device)
    return vit(pixels, ids, [grid * grid] * n_images)


class SceneBatches(Dataset):
    """This process's share of each pre-training step's batch: a pure function of the step, so workers can draw
    steps ahead."""

    def __init__(self, cfg: ViTPretrainConfig, resolution: int, patch: int):
        self.cfg, self.resolution, self.patch = cfg, resolution, patch

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int):
        rows = shard_range(self.cfg.batch)
        return make_batch([image_rng(self.cfg, step, i) for i in rows], self.resolution, self.patch)


class PatchLoss(nn.Module):
    """The ViT and its heads as one module: the step's entry point for FSDP2 (``training/sharding.py``)."""

    def __init__(self, vit: SiglipVisionTransformer, heads: PatchHeads, side: int, grid: int):
        super().__init__()
        self.vit, self.heads, self.side, self.grid = vit, heads, side, grid

    def forward(self, pixels: Tensor, n_images: int) -> dict[str, Tensor]:
        return self.heads(vit_features(self.vit, pixels, n_images, self.side, self.grid))


def pretrain_vit(vit: SiglipVisionTransformer, cfg: ViTPretrainConfig, resolution: int, patch: int, side: int,
                 progress: bool = False, device: str = "cpu", workers: int = 0) -> list[dict]:
    """Train ``vit`` in place with fresh linear heads (on ``device``; scenes are drawn on the CPU, by ``workers``
    processes if any); returns the loss/accuracy history (step 1, then every 20 steps)."""
    grid = resolution // patch
    gen = torch.Generator().manual_seed(cfg.seed)
    heads = PatchHeads(vit.post_layernorm.normalized_shape[0])
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    vit.to(device)
    heads.to(device)
    # under torchrun a copy is sharded (the ViT itself stays plain: the teacher shards it its own way)
    model = PatchLoss(copy.deepcopy(vit) if distributed() else vit, heads, side, grid)
    if distributed():
        shard(model, layer_types=(SiglipEncoderLayer,))
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    history = []
    bar = Progress("vit pre-training", cfg.steps, 0, 200, progress)
    model.train()
    mine = len(shard_range(cfg.batch))  # this process's images of every step
    share = mine / cfg.batch
    data = step_loader(SceneBatches(cfg, resolution, patch), 0, cfg.steps, workers, device)
    for step, (pixels, targets) in enumerate(data):
        for g in opt.param_groups:
            g["lr"] = warmup_min_cosine(step, cfg.lr, cfg.warmup, cfg.steps)
        pixels, targets = pixels.to(device), {k: v.to(device) for k, v in targets.items()}
        logits = model(pixels, mine)
        loss = patch_loss(logits, targets)
        opt.zero_grad(set_to_none=True)
        (loss * share * loss_scale()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step == 0 or (step + 1) % 20 == 0 or step + 1 == cfg.steps:
            hits = patch_hits(logits, targets)
            total, *sums = all_sum([float(loss.detach()) * share, *(v for pair in hits.values() for v in pair)])
            accuracy = {name: sums[2 * i] / max(sums[2 * i + 1], 1) for i, name in enumerate(hits)}
            history.append({"step": step + 1, "loss": total, **accuracy})
        bar.step(step, {"vit/loss": float(loss.detach())})
    bar.close()
    if distributed():  # every process gets the trained weights whole
        vit.load_state_dict({k: full_tensor(v.detach()) for k, v in model.vit.state_dict().items()})
    return history
