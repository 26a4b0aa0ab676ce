"""A small Shapes World image encoder for KID, trained here on real renders only (never on model outputs).

Four stride-2 convolutions and a linear layer give 256 features; training heads read the scene back from them:
the background (classification) and, per shape, how many objects of each colour and in each of the 9 regions
(regression). Scenes are uniform random (``sample_scene``, 1–4 objects, either background), a pure function of
``(seed, step)``. KID (Bińkowski et al.) is the unbiased MMD² with the cubic polynomial kernel over feature subsets.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperbagel.world import palette as P
from hyperbagel.world.regions import REGIONS, region_of
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene

log = logging.getLogger(__name__)
N_SHAPES, N_COLORS, N_REGIONS = len(P.SHAPES), len(P.COLORS), len(REGIONS)


@dataclass(frozen=True)
class EncoderConfig:
    width: int = 32
    features: int = 256
    resolution: int = 64
    steps: int = 800
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0


class ShapesEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        w = cfg.width
        chans = [3, w, 2 * w, 4 * w, 4 * w]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        side = cfg.resolution // 16
        self.proj = nn.Linear(4 * w * side * side, cfg.features)
        self.background = nn.Linear(cfg.features, len(P.BACKGROUND_NAMES))
        self.counts = nn.Linear(cfg.features, N_SHAPES * (N_COLORS + N_REGIONS))
        # standardisation of the features, fitted on real renders after training (KID's kernel needs a scale)
        self.register_buffer("feature_mean", torch.zeros(cfg.features))
        self.register_buffer("feature_std", torch.ones(cfg.features))

    def raw_features(self, images: Tensor) -> Tensor:
        x = images
        for conv in self.convs:
            x = F.silu(conv(x))
        return self.proj(x.flatten(1))

    def features(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` in [-1, 1] → standardised ``[B, features]``."""
        return (self.raw_features(images) - self.feature_mean) / self.feature_std

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        f = F.silu(self.raw_features(images))
        return self.background(f), self.counts(f)


def to_input(images) -> Tensor:
    """uint8 HWC images (array or list) → ``[B, 3, H, W]`` in [-1, 1]."""
    arr = np.stack([np.asarray(im) for im in images]).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def labels(scene) -> tuple[int, np.ndarray]:
    """Background index and per-shape colour and region counts of a scene."""
    counts = np.zeros((N_SHAPES, N_COLORS + N_REGIONS), dtype=np.float32)
    for o in scene.objects:
        s = P.SHAPES.index(o.shape)
        counts[s, P.COLORS.index(o.color)] += 1
        counts[s, N_COLORS + REGIONS.index(region_of(*o.centre(scene.resolution), scene.resolution))] += 1
    return P.BACKGROUND_NAMES.index(scene.background), counts.reshape(-1)


def _batch(cfg: EncoderConfig, step: int):
    rng = np.random.default_rng([cfg.seed, step])
    scenes = [sample_scene(rng, cfg.resolution, background=P.BACKGROUND_NAMES[rng.integers(2)])
              for _ in range(cfg.batch)]
    bg, counts = zip(*(labels(s) for s in scenes))
    return to_input([render(s) for s in scenes]), torch.tensor(bg), torch.from_numpy(np.stack(counts))


def train_encoder(cfg: EncoderConfig = EncoderConfig(), path: str | Path | None = None) -> ShapesEncoder:
    """Train on real renders; save to ``path`` (safetensors, config in the metadata) when given."""
    torch.manual_seed(cfg.seed)
    model = ShapesEncoder(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        images, bg, counts = _batch(cfg, step)
        logit_bg, pred = model(images)
        loss = F.cross_entropy(logit_bg, bg) + F.mse_loss(pred, counts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 200 == 0:
            log.info("shapes encoder step %d loss %.4f", step + 1, loss.item())
    model.eval()
    with torch.no_grad():  # fit the standardisation on fresh real renders
        feats = torch.cat([model.raw_features(_batch(cfg, cfg.steps + k)[0]) for k in range(16)])
        model.feature_mean.copy_(feats.mean(0))
        # one scale for all features (the mean per-feature std): a per-feature scale would blow up features that
        # are nearly constant on real renders and dominate the kernel on anything else
        model.feature_std.fill_(float(feats.std(0).mean().clamp_min(1e-6)))
    if path is not None:
        from safetensors.torch import save_file

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
                  metadata={"config": json.dumps(asdict(cfg)), "format": "pt"})
    return model


def load_encoder(path: str | Path, train_if_missing: bool = True) -> ShapesEncoder:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        if not train_if_missing:
            raise FileNotFoundError(path)
        log.info("training the Shapes encoder on real renders: %s", path)
        return train_encoder(EncoderConfig(), path)
    with safe_open(str(path), framework="pt") as f:
        cfg = EncoderConfig(**json.loads(f.metadata()["config"]))
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = ShapesEncoder(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()


@torch.no_grad()
def encode(model: ShapesEncoder, images, batch: int = 256) -> Tensor:
    images = list(images)
    return torch.cat([model.features(to_input(images[i:i + batch])) for i in range(0, len(images), batch)])


def kid(a: Tensor, b: Tensor, subsets: int = 50, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance between feature sets ``[n, d]``: mean and std over random subsets of the unbiased
    MMD² with ``k(x, y) = (x·y / d + 1)³``."""
    a, b = a.double(), b.double()
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least two samples per set")
    g = torch.Generator().manual_seed(seed)
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = 1 - torch.eye(m, dtype=torch.float64)
        values.append(float((kxx * off).sum() / (m * (m - 1)) + (kyy * off).sum() / (m * (m - 1))
                            - 2 * kxy.mean()))
    return float(np.mean(values)), float(np.std(values))
