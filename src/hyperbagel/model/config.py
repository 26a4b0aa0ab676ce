"""Typed configuration of the unified model: its language model (``LLMConfig``), vision tower (``ViTConfig``) and
autoencoder (``VAEConfig``), and the whole (``BagelConfig``); the named presets are in ``presets.py``. Plain
dataclasses without torch, so that reading a config (a preset, a ``config.json``) imports no model code."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hyperbagel.config_types import check_types

NUM_CHANNELS = 3  # RGB: the vision tower's patches and the autoencoder's images


@dataclass(frozen=True)
class LLMConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int = 0  # 0 → hidden_size // num_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    qk_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LLMConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"LLMConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if not self.head_dim:
            if self.hidden_size % self.num_heads:
                raise ValueError("LLMConfig.hidden_size must be divisible by num_heads when head_dim is 0")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.head_dim % 2:
            raise ValueError(f"LLMConfig.head_dim must be even for RoPE, got {self.head_dim}")


@dataclass(frozen=True)
class ViTConfig:
    """Shape of the vision tower. BAGEL-7B: ``ViTConfig(1152, 4304, num_layers=26, num_heads=16)``."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    patch_size: int = 14
    num_positions_side: int = 70
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "patch_size",
                     "num_positions_side"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ViTConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ViTConfig.num_heads must divide hidden_size={self.hidden_size}, got {self.num_heads}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"ViTConfig.layer_norm_eps must be positive, got {self.layer_norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * NUM_CHANNELS

    @property
    def num_positions(self) -> int:
        return self.num_positions_side**2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ViTConfig:
        return cls(**d)


@dataclass(frozen=True)
class VAEConfig:
    """Shape of a FLUX-family autoencoder.

    ``resolution`` is the image side the autoencoder is meant for (FLUX keeps it as bookkeeping only; any
    image whose sides are multiples of :attr:`downsample_factor` works). FLUX.1: ``VAEConfig(256, ch=128,
    ch_mult=(1, 2, 4, 4), num_res_blocks=2)``. ``norm_groups`` (GroupNorm groups, FLUX: 32) must divide every
    width ``ch·ch_mult[i]``.
    """

    resolution: int
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159
    norm_groups: int = 32

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store a tuple so the config stays hashable.
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        for name in ("resolution", "in_channels", "out_channels", "ch", "num_res_blocks", "z_channels",
                     "norm_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive integer, got {value!r}")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(
                f"VAEConfig.ch_mult must be a non-empty tuple of positive integers, got {self.ch_mult}"
            )
        for m in self.ch_mult:
            if (self.ch * m) % self.norm_groups:
                raise ValueError(
                    f"VAEConfig.ch: every width ch*ch_mult[i] must be divisible by "
                    f"norm_groups={self.norm_groups}, got ch={self.ch}, ch_mult={self.ch_mult}"
                )
        if self.resolution % self.downsample_factor:
            raise ValueError(
                f"VAEConfig.resolution must be a multiple of the downsample factor {self.downsample_factor}, "
                f"got {self.resolution}"
            )
        if not (math.isfinite(self.scale_factor) and self.scale_factor > 0):
            raise ValueError(f"VAEConfig.scale_factor must be positive and finite, got {self.scale_factor}")
        if not math.isfinite(self.shift_factor):
            raise ValueError(f"VAEConfig.shift_factor must be finite, got {self.shift_factor}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_resolution(self) -> int:
        return self.resolution // self.downsample_factor

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        return cls(**d)


@dataclass(frozen=True)
class SpecialTokens:
    bos: int  # <|im_start|>: starts every text block and every decoded answer
    eos: int  # <|im_end|>
    start_of_image: int  # <|vision_start|>
    end_of_image: int  # <|vision_end|>


@dataclass(frozen=True)
class BagelConfig:
    llm: LLMConfig
    vit: ViTConfig
    vae: VAEConfig
    special_tokens: SpecialTokens
    latent_patch_size: int = 2
    max_latent_size: int = 64  # side of the latent position table, in latent patches
    vit_max_num_patch_per_side: int = 70
    connector_act: str = "gelu_pytorch_tanh"
    image_size: int = 64  # the resolution the model is trained on (Shapes World)
    guidance_embedders: bool = False  # distilled students: text- and image-scale embedders beside the time embedder
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.latent_patch_size <= 0:
            raise ValueError(f"BagelConfig.latent_patch_size must be positive, got {self.latent_patch_size}")
        if self.connector_act != "gelu_pytorch_tanh":
            raise ValueError(f"BagelConfig.connector_act: only 'gelu_pytorch_tanh' exists, got {self.connector_act!r}")
        for name, tok in dataclasses.asdict(self.special_tokens).items():
            if not 0 <= tok < self.llm.vocab_size:
                raise ValueError(f"BagelConfig.special_tokens.{name}={tok} is outside the vocabulary")

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def latent_downsample(self) -> int:
        """Image pixels per latent token along one side."""
        return self.vae.downsample_factor * self.latent_patch_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> BagelConfig:
        """From ``to_dict``'s form (a ``config.json``), every field checked against its type: a file may hold any
        JSON, and a wrong type would otherwise surface deep inside the model's construction."""
        d = dict(d)
        vae = dict(d.pop("vae"))
        vae["ch_mult"] = tuple(vae["ch_mult"])
        parts = {"llm": LLMConfig(**d.pop("llm")), "vit": ViTConfig(**d.pop("vit")), "vae": VAEConfig(**vae),
                 "special_tokens": SpecialTokens(**d.pop("special_tokens"))}
        for part in parts.values():
            check_types(part)
        cfg = cls(**parts, **d)
        check_types(cfg)
        return cfg

