"""The reward model of ReFL (stage 5) and its losses: a small image–text scorer standing in for HPSv3.

HPSv3 is a vision-language model with a scoring head. Ours is the same shape at Shapes World scale: the image
through 2×2 stride-2 convolutions (patches merged level by level) to an 8×8 grid of tokens, the text as word
tokens, both (with position and type embeddings and a score token) through a few pre-norm Transformer layers
attending jointly, and a linear head on the score token. The reward is that logit: ``r > 0`` says the text more
likely than not describes the image (the exact judge would pass it). Trained with binary cross-entropy on pairs the
judge labelled (``world/tasks/match.py``).

The ReFL loss is Hyper-SD's hinge ``ReLU(α − r)``: it pushes a sample's reward up until it reaches ``α`` and then
leaves it alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_save_tensors, atomic_write_text
from hyperbagel.model.checkpoint import load_state, read_tensors
from hyperbagel.model.tokenizer import ShapesTokenizer


@dataclass(frozen=True)
class RewardModelConfig:
    vocab_size: int = 128
    dim: int = 128
    layers: int = 3
    heads: int = 4
    mlp: int = 256
    max_text: int = 48  # word tokens (a four-object caption on a gray background is ~40)
    image_size: int = 64
    stem: tuple[int, ...] = (32, 64)  # widths of the 2×2 stride-2 convolutions before the last one to ``dim``

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem", tuple(self.stem))
        if self.dim % self.heads:
            raise ValueError(f"RewardModelConfig.dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.image_size % 2 ** (len(self.stem) + 1):
            raise ValueError(f"RewardModelConfig.image_size must be a multiple of {2 ** (len(self.stem) + 1)}")
        for name in ("vocab_size", "dim", "layers", "heads", "mlp", "max_text"):
            if getattr(self, name) < 1:
                raise ValueError(f"RewardModelConfig.{name} must be positive")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.stem) + 1)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RewardModelConfig:
        return cls(**json.loads(text))


class RewardModel(nn.Module):
    def __init__(self, cfg: RewardModelConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = 3
        for c in (*cfg.stem, cfg.dim):  # 2×2 patches merged level by level: 8× down with two stem widths
            layers += [nn.Conv2d(c_in, c, 2, stride=2), nn.GELU()]
            c_in = c
        self.stem = nn.Sequential(*layers[:-1])  # no activation after the last projection
        self.image_norm = nn.LayerNorm(cfg.dim)  # patch features on the scale of the word and position embeddings
        self.image_pos = nn.Parameter(torch.zeros(cfg.grid * cfg.grid, cfg.dim))
        self.word = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.text_pos = nn.Parameter(torch.zeros(cfg.max_text, cfg.dim))
        self.kind = nn.Parameter(torch.zeros(3, cfg.dim))  # score token, word, image patch
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.mlp, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, 1)
        for p in (self.image_pos, self.text_pos, self.kind):  # unit scale, as the word embeddings: where a patch
            nn.init.normal_(p)  # or word is weighs as much as what it shows from the first step

    def forward(self, pixels: Tensor, ids: Tensor, valid: Tensor) -> Tensor:
        """Rewards ``[B]`` of images ``[B, 3, H, W]`` in ``[-1, 1]`` and word ids ``[B, S]`` (``valid [B, S]``)."""
        B, S = ids.shape
        if S > self.cfg.max_text:
            raise ValueError(f"{S} words; the reward model reads at most {self.cfg.max_text}")
        img = self.image_norm(self.stem(pixels).flatten(2).transpose(1, 2)) + self.image_pos + self.kind[2]
        txt = self.word(ids) + self.text_pos[:S] + self.kind[1]
        score = self.kind[0].expand(B, 1, -1)
        x = torch.cat([score, txt, img], dim=1)
        pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=ids.device), ~valid,
                         torch.zeros(B, img.shape[1], dtype=torch.bool, device=ids.device)], dim=1)
        h = self.encoder(x, src_key_padding_mask=pad)
        return self.head(self.norm(h[:, 0])).squeeze(-1)


def reward_bce(rewards: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of the reward logits against the judge's verdicts (1 = the text describes the image)."""
    return F.binary_cross_entropy_with_logits(rewards.float(), labels.float())


def refl_loss(rewards: Tensor, alpha: float) -> Tensor:
    """ReFL's hinge ``E[ReLU(α − r)]``: no gradient from a sample whose reward already reaches ``α``."""
    return F.relu(alpha - rewards.float()).mean()


# ----------------------------------------------------------------------------------------------------------------
# scoring texts and images, on disk

REWARD_FILE, TOKENIZER_FILE = "reward.safetensors", "tokenizer.json"


def encode_texts(tokenizer: ShapesTokenizer, texts: list[str], max_text: int, device=None) -> tuple[Tensor, Tensor]:
    """Word ids ``[B, S]`` (padded with 0) and their validity mask for a batch of texts."""
    rows = [tokenizer.encode(t) for t in texts]
    if any(len(r) > max_text for r in rows):
        raise ValueError(f"a text has more than {max_text} words")
    S = max(1, max(len(r) for r in rows))
    ids = torch.zeros(len(rows), S, dtype=torch.long, device=device)
    valid = torch.zeros(len(rows), S, dtype=torch.bool, device=device)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        valid[b, : len(r)] = True
    return ids, valid


class Reward:
    """A trained reward model with its tokenizer: ``reward(pixels, texts)`` → ``[B]`` (differentiable in pixels)."""

    def __init__(self, model: RewardModel, tokenizer: ShapesTokenizer):
        self.model, self.tokenizer = model, tokenizer

    def __call__(self, pixels: Tensor, texts: list[str]) -> Tensor:
        ids, valid = encode_texts(self.tokenizer, texts, self.model.cfg.max_text, pixels.device)
        return self.model(pixels, ids, valid)


def shift_images(pixels: Tensor, offsets: Tensor) -> Tensor:
    """Each image of ``pixels [B, 3, H, W]`` translated by its integer ``offsets [B, 2]`` (down, right; edges
    repeated, so a uniform background stays uniform), differentiable in the pixels."""
    H, W = pixels.shape[-2:]
    m = int(offsets.abs().max()) if offsets.numel() else 0
    if m == 0:
        return pixels
    padded = F.pad(pixels, (m, m, m, m), mode="replicate")
    return torch.stack([padded[b, :, m - int(dy): m - int(dy) + H, m - int(dx): m - int(dx) + W]
                        for b, (dy, dx) in enumerate(offsets.tolist())])


class HardenedReward:
    """What ReFL climbs when one reward model is too easy to fool (docs/one_step.md, "the reward is hacked"): the
    ensemble's ``min`` (or ``mean``) over independently trained reward models, averaged over ``views`` random
    translations of each image by up to ``max_shift`` pixels. A pattern that fools one model, or one alignment of a
    model's stride-8 stem, no longer raises the reward. One model, one view and no shift is the plain reward."""

    def __init__(self, rewards: list[Reward], combine: str = "min", views: int = 1, max_shift: int = 0):
        if not rewards:
            raise ValueError("HardenedReward needs at least one reward model")
        self.check(combine, views, max_shift)
        self.rewards, self.combine, self.views, self.max_shift = rewards, combine, views, max_shift

    @staticmethod
    def check(combine: str, views: int, max_shift: int) -> None:
        if combine not in ("min", "mean"):
            raise ValueError(f"the reward ensemble's combine must be 'min' or 'mean', got {combine!r}")
        if views < 1 or max_shift < 0:
            raise ValueError(f"the reward needs views ≥ 1 and max_shift ≥ 0, got {views}, {max_shift}")

    def __call__(self, pixels: Tensor, texts: list[str], generators: list[torch.Generator] | None = None) -> Tensor:
        """Rewards ``[B]``; ``generators`` (one per row) draw the row's shifts: none, no shift (one view)."""
        B = pixels.shape[0]
        if generators is None or self.max_shift == 0:
            views = [pixels]
        else:
            offsets = torch.stack([torch.randint(-self.max_shift, self.max_shift + 1, (self.views, 2), generator=g)
                                   for g in generators], dim=1)  # [views, B, 2]
            views = [shift_images(pixels, o) for o in offsets]
        x = torch.cat(views)
        scores = torch.stack([r(x, texts * len(views)) for r in self.rewards])  # [models, views·B]
        combined = scores.min(0).values if self.combine == "min" else scores.mean(0)
        return combined.view(len(views), B).mean(0)

    @property
    def models(self) -> list[RewardModel]:
        return [r.model for r in self.rewards]


def save_reward(folder: str | Path, model: RewardModel, tokenizer: ShapesTokenizer) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(model.state_dict(), folder / REWARD_FILE, {"config": model.cfg.to_json(), "format": "pt"})
    atomic_write_text(tokenizer.to_json(), folder / TOKENIZER_FILE)


def load_reward(folder: str | Path) -> Reward:
    """The reward model of ``folder`` (frozen, eval mode), strict on names and shapes."""
    path = Path(folder) / REWARD_FILE
    if not path.is_file():
        raise HyperBagelError(f"no reward model in {folder} (train one with `hyperbagel train reward`)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise HyperBagelError(f"{path} has no reward model config")
    model = RewardModel(RewardModelConfig.from_json(meta["config"]))
    load_state(model, read_tensors(path), str(path))
    for p in model.parameters():
        p.requires_grad_(False)
    return Reward(model.eval(), ShapesTokenizer.load(Path(folder) / TOKENIZER_FILE))
