"""Reading BAGEL's own release files into our modules (bagel.md §2).

A BAGEL folder (``ByteDance-Seed/BAGEL-7B-MoT``) holds ``llm_config.json`` (a Qwen2 config), ``vit_config.json``
(a SigLIP config), ``ema.safetensors`` (the unified model under the key names our modules use) and
``ae.safetensors`` (the FLUX autoencoder). The reference loaders patch the JSON configs before building the model
— QK-norm on, untied ``lm_head``, the MoT decoder layer, the ViT's last layer dropped, ViT RoPE off — and build
``BagelConfig`` in code (latent patch 2, a 64×64 latent position table, a 70×70 ViT table); the FLUX autoencoder's
shape is hard-coded too. :func:`bagel_config` does the same from the two JSON files.

Weights are loaded by name and strictly (every key, no extra key, every shape), into a model built on the meta
device, so a 14.6 B-parameter checkpoint is held in memory once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperbagel.errors import HyperBagelError
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.checkpoint import build_model, load_state, read_tensors
from hyperbagel.model.config import BagelConfig, LLMConfig, SpecialTokens, VAEConfig, ViTConfig

LLM_CONFIG, VIT_CONFIG, MODEL_FILE, AE_FILE = "llm_config.json", "vit_config.json", "ema.safetensors", "ae.safetensors"

# Qwen2.5's ids of the four tokens BAGEL uses (data/data_utils.py:add_special_tokens; "bos" is <|im_start|>).
QWEN25_SPECIAL_TOKENS = SpecialTokens(bos=151644, eos=151645, start_of_image=151652, end_of_image=151653)
# FLUX.1's autoencoder, as the reference's load_ae hard-codes it.
FLUX_VAE = VAEConfig(resolution=256, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise HyperBagelError(f"config file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HyperBagelError(f"corrupt {path}: {err}") from None


def _require(cfg: dict[str, Any], source: str, key: str, allowed: tuple[Any, ...]) -> None:
    if cfg.get(key, allowed[0]) not in allowed:
        raise HyperBagelError(f"{source}: {key}={cfg[key]!r} is not supported (BAGEL uses {allowed[0]!r})")


def llm_config_from_json(cfg: dict[str, Any], source: str = LLM_CONFIG) -> LLMConfig:
    """A Qwen2 ``llm_config.json`` with the loaders' overrides applied: QK-norm on, untied head, MoT layers."""
    _require(cfg, source, "hidden_act", ("silu",))
    _require(cfg, source, "rope_scaling", (None,))
    _require(cfg, source, "use_sliding_window", (False,))
    try:
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        return LLMConfig(
            vocab_size=cfg["vocab_size"],
            hidden_size=hidden,
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads", heads),
            intermediate_size=cfg["intermediate_size"],
            head_dim=cfg.get("head_dim") or hidden // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=cfg.get("rope_theta", 10000.0),
            qk_norm=True,
        )
    except KeyError as err:
        raise HyperBagelError(f"{source} lacks {err.args[0]!r}") from None
    except ValueError as err:
        raise HyperBagelError(f"{source}: {err}") from None


def vit_config_from_json(cfg: dict[str, Any], source: str = VIT_CONFIG) -> ViTConfig:
    """A SigLIP ``vit_config.json`` as the loaders use it: one layer fewer than the file says, no RoPE.

    The learned position table has ``(image_size / patch_size)²`` rows.
    """
    _require(cfg, source, "hidden_act", ("gelu_pytorch_tanh",))
    _require(cfg, source, "num_channels", (3,))
    try:
        patch = cfg["patch_size"]
        if cfg["image_size"] % patch:
            raise HyperBagelError(f"{source}: image_size {cfg['image_size']} is not a multiple of patch_size {patch}")
        return ViTConfig(
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"] - 1,
            num_heads=cfg["num_attention_heads"],
            patch_size=patch,
            num_positions_side=cfg["image_size"] // patch,
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-6),
        )
    except KeyError as err:
        raise HyperBagelError(f"{source} lacks {err.args[0]!r}") from None
    except ValueError as err:
        raise HyperBagelError(f"{source}: {err}") from None


def bagel_config(
    llm_config: str | Path,
    vit_config: str | Path,
    *,
    special_tokens: SpecialTokens = QWEN25_SPECIAL_TOKENS,
    vae: VAEConfig = FLUX_VAE,
    latent_patch_size: int = 2,
    max_latent_size: int = 64,
    vit_max_num_patch_per_side: int = 70,
    image_size: int = 1024,
) -> BagelConfig:
    """``BagelConfig`` from the two JSON files plus the values the reference sets in code (release defaults)."""
    llm_path, vit_path = Path(llm_config), Path(vit_config)
    try:
        return BagelConfig(
            llm=llm_config_from_json(_read_json(llm_path), str(llm_path)),
            vit=vit_config_from_json(_read_json(vit_path), str(vit_path)),
            vae=vae,
            special_tokens=special_tokens,
            latent_patch_size=latent_patch_size,
            max_latent_size=max_latent_size,
            vit_max_num_patch_per_side=vit_max_num_patch_per_side,
            image_size=image_size,
        )
    except ValueError as err:
        raise HyperBagelError(f"{llm_path.parent}: {err}") from None


def _load_on_meta(module: nn.Module, path: Path, device: str | torch.device, dtype: torch.dtype) -> None:
    load_state(module, read_tensors(path, dtype, device), str(path), assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type == "meta"]
    if left:
        raise HyperBagelError(f"{path} left {len(left)} tensors unloaded (e.g. {left[:3]})")


def load_bagel_weights(
    cfg: BagelConfig, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Bagel:
    """An ``ema.safetensors``-style file into a ``Bagel`` built on the meta device (strict, by name)."""
    model = build_model(cfg, "meta")
    _load_on_meta(model, Path(path), device, dtype)
    return model.eval()


def load_autoencoder(
    cfg: VAEConfig, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AutoEncoder:
    """A FLUX ``ae.safetensors`` into an ``AutoEncoder`` built on the meta device (strict, by name)."""
    with torch.device("meta"):
        ae = AutoEncoder(cfg)
    _load_on_meta(ae, Path(path), device, dtype)
    return ae.eval()


def load_bagel_folder(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **settings: Any,
) -> tuple[Bagel, AutoEncoder]:
    """A BAGEL release folder → (model, autoencoder). ``settings`` go to :func:`bagel_config`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HyperBagelError(f"not a folder: {folder}")
    cfg = bagel_config(folder / LLM_CONFIG, folder / VIT_CONFIG, **settings)
    return (load_bagel_weights(cfg, folder / MODEL_FILE, device, dtype),
            load_autoencoder(cfg.vae, folder / AE_FILE, device, dtype))
