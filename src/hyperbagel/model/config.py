"""Typed configuration of the unified model, and the named presets (``micro``, ``tiny``, ``bagel-7b``, ``ref-tiny``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from hyperbagel.config_types import check_types
from hyperbagel.model.autoencoder import VAEConfig
from hyperbagel.model.qwen2_mot import LLMConfig
from hyperbagel.model.siglip import ViTConfig


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

