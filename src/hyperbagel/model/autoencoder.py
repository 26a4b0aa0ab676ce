"""The generation latent space: a FLUX-family autoencoder (BAGEL's VAE).

Parameter names match FLUX's ``ae.safetensors`` exactly (``encoder.*`` / ``decoder.*``), so a FLUX checkpoint
loads with ``load_state_dict(strict=True)``. The architecture (bagel.md §1.4): GroupNorm(32, eps 1e-6) + swish
ResNet blocks, a single-head attention block in the middle, downsampling by a stride-2 3×3 conv after a
(0, 1, 0, 1) zero pad, nearest-neighbour upsampling followed by a 3×3 conv. The encoder has ``num_res_blocks``
blocks per level, the decoder ``num_res_blocks + 1``.

Encoding *samples* the diagonal Gaussian posterior (BAGEL does so even at inference) and then scales
``z ← scale · (z − shift)``; decoding undoes the scaling before the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperbagel.model.config import VAEConfig


def swish(x: Tensor) -> Tensor:
    # Written out (not F.silu) to follow the reference's arithmetic exactly.
    return x * torch.sigmoid(x)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # [B, C, H, W] -> [B, 1, H*W, C]: one head whose dimension is the channel count.
        q, k, v = (
            t.reshape(b, 1, c, h * w).transpose(2, 3).contiguous() for t in (self.q(y), self.k(y), self.v(y))
        )
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(y)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        else:
            self.nin_shortcut = None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: ``block`` (ResNet blocks), then optionally ``downsample`` or ``upsample``."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, resample_name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(resample_name, resample)
        self._resample_name = resample_name if resample is not None else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        if self._resample_name is not None:
            x = getattr(self, self._resample_name)(x)
        return x


class Encoder(nn.Module):
    """Image [B, in_channels, H, W] → posterior moments [B, 2·z_channels, H/f, W/f] (mean, then logvar)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        g = config.norm_groups
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, kernel_size=3, padding=1)
        in_mult = (1, *config.ch_mult)
        levels = []
        block_in = config.ch
        for i, mult in enumerate(config.ch_mult):
            block_in = config.ch * in_mult[i]
            block_out = config.ch * mult
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            last = i == len(config.ch_mult) - 1
            levels.append(_Level(blocks, None if last else Downsample(block_in), "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(block_in, g)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, 2 * config.z_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Unscaled latent [B, z_channels, h, w] → image [B, out_channels, h·f, w·f]."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        g = config.norm_groups
        block_in = config.ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, padding=1)
        self.mid = MidBlock(block_in, g)
        levels: list[_Level] = []
        # Built from the deepest level up; stored in resolution order (up.0 is the full-resolution level).
        for i in reversed(range(len(config.ch_mult))):
            block_out = config.ch * config.ch_mult[i]
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            levels.insert(0, _Level(blocks, Upsample(block_in) if i != 0 else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, config.out_channels, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoEncoder(nn.Module):
    """FLUX autoencoder: ``encode`` images in [-1, 1] to scaled latents, ``decode`` them back."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's (mean, log-variance), each [B, z_channels, H/f, W/f], in unscaled latent units."""
        mean, logvar = torch.chunk(self.encoder(x), 2, dim=1)
        return mean, logvar

    def scale(self, z: Tensor) -> Tensor:
        return self.config.scale_factor * (z - self.config.shift_factor)

    def unscale(self, z: Tensor) -> Tensor:
        return z / self.config.scale_factor + self.config.shift_factor

    def encode(self, x: Tensor, generator: torch.Generator | None = None, sample: bool = True) -> Tensor:
        """Images [B, C, H, W] in [-1, 1] → scaled latents [B, z_channels, H/f, W/f].

        With ``sample=True`` (BAGEL's behaviour) the latent is ``mean + exp(logvar/2)·ε``, ε drawn from
        ``generator`` (torch's global generator when None, as the reference does); ``sample=False`` gives the
        mean. ε is drawn as one ``torch.randn(mean.shape)``, so a generator seeded like the reference's global
        RNG reproduces its sample exactly.
        """
        mean, logvar = self.posterior(x)
        z = mean
        if sample:
            device = mean.device if generator is None else generator.device  # drawn where the generator lives
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=device).to(mean.device)
            z = mean + torch.exp(0.5 * logvar) * noise
        return self.scale(z)

    def encode_rows(self, x: Tensor, generators: list[torch.Generator]) -> Tensor:
        """Images [B, C, H, W] → scaled posterior samples, row ``b``'s ε drawn from ``generators[b]`` on the CPU (so
        a row's latent does not depend on the batch it is in, or on the device)."""
        mean, logvar = self.posterior(x)
        eps = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in generators]).to(mean.device)
        return self.scale(mean + torch.exp(0.5 * logvar) * eps)

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents [B, z_channels, h, w] → images [B, out_channels, h·f, w·f] (nominally [-1, 1])."""
        return self.decoder(self.unscale(z))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.encode(x, generator=generator))
