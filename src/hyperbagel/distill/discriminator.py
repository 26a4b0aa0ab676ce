"""The latent discriminator of TSCD (and, later, ADP): small heads on several layers of a trainable copy of the
generation branch (DMDX's multi-head design with a trainable backbone, as Hyper-Bagel §3.2.2 asks).

The backbone is a student-shaped ``Bagel`` (``model/student.py``) sharing the teacher's frozen understanding
weights, so it reads the same conditioning context as the generator and sees the noised latents at their time and
guidance scales. Each head maps a layer's latent-token states to one logit per token (a patch discriminator).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hyperbagel.model.bagel import Bagel
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.student import is_generation_param


def default_layers(num_layers: int, heads: int = 4) -> tuple[int, ...]:
    """``heads`` evenly spaced layers ending with the last one."""
    return tuple(sorted({max(0, round((i + 1) * num_layers / heads) - 1) for i in range(heads)}))


def is_trainable(name: str) -> bool:
    """A discriminator parameter that trains: a head, or the backbone's generation branch (but its fixed latent
    position table); the backbone's understanding weights are the teacher's, frozen."""
    if name.startswith("heads."):
        return True
    inner = name[len("backbone."):]
    return name.startswith("backbone.") and is_generation_param(inner) and not inner.startswith("latent_pos_embed.")


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

    def forward(self, ctx: Context, x: Tensor, t: Tensor, position_ids: Tensor, text_scale: Tensor,
                image_scale: Tensor) -> Tensor:
        """Logits ``[B, heads, N]`` for the noised latents ``x [B, N, P]`` at times ``t [B]`` in context ``ctx``."""
        _, out = Forwarder(self.backbone).velocity(ctx, x, t, position_ids, layer_states=True,
                                                   text_scale=text_scale, image_scale=image_scale)
        feats = [out.layer_states[i][:, 1:-1] for i in self.layers]  # drop the image markers
        return torch.stack([head(f) for head, f in zip(self.heads, feats)], dim=1)
