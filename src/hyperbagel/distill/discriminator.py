"""The latent discriminator of TSCD (and, later, ADP): small heads on several layers of a trainable copy of the
generation branch (DMDX's multi-head design with a trainable backbone, as Hyper-Bagel §3.2.2 asks).

The backbone is a student-shaped ``Bagel`` (``model/student.py``) sharing the teacher's frozen understanding
weights, so it reads the same conditioning context as the generator and sees the noised latents at their time and
guidance scales. Each head maps a layer's latent-token states to one logit per token (a patch discriminator).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from hyperbagel.model.bagel import Bagel
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.student import is_generation_param


def default_layers(num_layers: int, heads: int = 4) -> tuple[int, ...]:
    """``heads`` evenly spaced layers ending with the last one."""
    return tuple(sorted({max(0, round((i + 1) * num_layers / heads) - 1) for i in range(heads)}))


def is_trainable(name: str, layers: tuple[int, ...]) -> bool:
    """A discriminator parameter that trains: a head, or the part of the backbone's generation branch that reaches a
    head (not its fixed latent position table; not the output norm, ``llm2vae`` or the layers above the last one
    read, which get no gradient); the backbone's understanding weights are the teacher's, frozen."""
    if name.startswith("heads."):
        return True
    inner = name[len("backbone."):]
    if not name.startswith("backbone.") or not is_generation_param(inner):
        return False
    if inner.startswith(("latent_pos_embed.", "llm2vae.", "language_model.model.norm")):
        return False
    layer = re.match(r"language_model\.model\.layers\.(\d+)\.", inner)
    return layer is None or int(layer.group(1)) <= max(layers)


class Head(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h).squeeze(-1)


class LatentDiscriminator(nn.Module):
    def __init__(self, backbone: Bagel, layers: tuple[int, ...], hidden: int = 64):
        super().__init__()
        if not layers or max(layers) >= backbone.cfg.llm.num_layers:
            raise ValueError(f"discriminator layers {layers} outside 0..{backbone.cfg.llm.num_layers - 1}")
        self.backbone = backbone
        self.layers = tuple(layers)
        self.heads = nn.ModuleList(Head(backbone.cfg.llm.hidden_size, hidden) for _ in layers)
        for name, p in self.named_parameters():  # only what reaches a head trains
            p.requires_grad_(is_trainable(name, self.layers))

    def forward(self, ctx: Context, x: Tensor, t: Tensor, position_ids: Tensor, text_scale: Tensor,
                image_scale: Tensor) -> Tensor:
        """Logits ``[B, heads, N]`` for the noised latents ``x [B, N, P]`` at times ``t [B]`` in context ``ctx``."""
        _, out = Forwarder(self.backbone).velocity(ctx, x, t, position_ids, layer_states=True,
                                                   text_scale=text_scale, image_scale=image_scale)
        feats = [out.layer_states[i][:, 1:-1] for i in self.layers]  # drop the image markers
        return torch.stack([head(f) for head, f in zip(self.heads, feats)], dim=1)
