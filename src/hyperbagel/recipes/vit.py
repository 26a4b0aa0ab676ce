"""Pre-training the understanding encoder (the SigLIP-style ViT) on Shapes World before the teacher's joint training.

BAGEL starts from a pre-trained SigLIP and a pre-trained Qwen2; our teacher starts from scratch, and a language model
trained jointly with a random ViT learns the answer prior per question long before it learns to read the image
(docs/teacher.md). So the ViT first learns, on its own, features that say what is where: for every patch, the shape,
colour and size of the object centred in it (or none), and which palette colours its pixels contain. Labels come
from the scene itself (the world is exact), so this takes a minute or two on a CPU. The heads are thrown away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.model.siglip import SiglipVisionTransformer, patchify_image, vit_position_ids
from hyperbagel.recipes.step_data import step_loader
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


def patch_accuracy(logits: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, float]:
    """Per-head accuracy over patches that hold an object centre (the interesting ones), and presence accuracy."""
    has = targets["shape"] > 0
    acc = {name: float((logits[name].argmax(-1) == targets[name])[has].float().mean()) for name in HEADS}
    acc["present"] = float(((logits["present"] > 0) == targets["present"]).float().mean())
    return acc


def make_batch(rng: np.random.Generator, n: int, resolution: int, patch: int):
    """``n`` random scenes (either background) as packed ViT patches and their stacked targets."""
    scenes = [sample_scene(rng, resolution, background=P.BACKGROUND_NAMES[rng.integers(2)]) for _ in range(n)]
    pixels = torch.cat([patchify_image(to_model_pixels(render(s)), patch) for s in scenes])
    per = [patch_targets(s, patch) for s in scenes]
    targets = {k: torch.from_numpy(np.concatenate([t[k] for t in per])) for k in per[0]}
    return pixels, targets


def vit_features(vit: SiglipVisionTransformer, pixels: Tensor, n_images: int, side: int, grid: int) -> Tensor:
    ids = vit_position_ids(grid, grid, side).repeat(n_images).to(pixels.device)
    return vit(pixels, ids, [grid * grid] * n_images)


class SceneBatches(Dataset):
    """The batch of each pre-training step: a pure function of (seed, step), so workers can draw steps ahead."""

    def __init__(self, cfg: ViTPretrainConfig, resolution: int, patch: int):
        self.cfg, self.resolution, self.patch = cfg, resolution, patch

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int):
        return make_batch(np.random.default_rng([self.cfg.seed, 7, step]), self.cfg.batch, self.resolution, self.patch)


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
    params = [*vit.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    history = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="vit pre-training", unit="step", dynamic_ncols=True)
    vit.train()
    data = step_loader(SceneBatches(cfg, resolution, patch), 0, cfg.steps, workers, device)
    for step, (pixels, targets) in enumerate(data):
        warm = (step + 1) / cfg.warmup
        cos = 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(warm, cos)
        pixels, targets = pixels.to(device), {k: v.to(device) for k, v in targets.items()}
        logits = heads(vit_features(vit, pixels, cfg.batch, side, grid))
        loss = patch_loss(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step == 0 or (step + 1) % 20 == 0 or step + 1 == cfg.steps:
            history.append({"step": step + 1, "loss": float(loss.detach()), **patch_accuracy(logits, targets)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    if bar is not None:
        bar.close()
    return history
