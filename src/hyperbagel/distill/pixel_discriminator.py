"""ADP's pixel discriminator: a small patch CNN on decoded images (DMDX pairs a latent and a pixel discriminator).

Input: images ``[B, 3, H, W]`` in ``[-1, 1]`` as the VAE decodes them. Strided 4×4 convolutions halve the side per
level (64 → 8 with three levels); a 3×3 convolution gives one logit per patch ``[B, (H/8)·(W/8)]``. It reads the
image only (no prompt): the latent discriminator, which sees the whole context, judges prompt alignment; this one
judges how the picture looks.
"""

from __future__ import annotations

from torch import Tensor, nn


class PixelDiscriminator(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), groups: int = 8):
        super().__init__()
        if not channels or any(c % groups for c in channels[1:]):
            raise ValueError(f"pixel discriminator channels {channels} must be divisible by groups={groups}")
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1))
            if i:
                layers.append(nn.GroupNorm(groups, c))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).flatten(1)
