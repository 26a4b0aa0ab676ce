"""Checkpoints: safetensors weights under BAGEL's key names + ``config.json``; strict loading by name.

A model folder holds ``config.json`` (``BagelConfig``), ``ema.safetensors`` (the unified model, as BAGEL releases
it), ``ae.safetensors`` (the FLUX-family autoencoder) and, for Shapes World, ``tokenizer.json``. Nothing is ever
unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_save_tensors, atomic_write_text
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.config import BagelConfig
from hyperbagel.pretrained import resolve

CONFIG_FILE, MODEL_FILE, AE_FILE = "config.json", "ema.safetensors", "ae.safetensors"


def build_model(cfg: BagelConfig, device: str | torch.device = "cpu") -> Bagel:
    with torch.device(device):
        return Bagel(cfg)


def read_tensors(
    path: str | Path, dtype: torch.dtype | None = torch.float32, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on ``device``; floating tensors cast to ``dtype`` (bf16 → fp32 is lossless).

    Tensors are read, cast and moved one at a time, so only the result is ever held in full. Each is a fresh
    allocation: a tensor as read may sit at any byte offset of the file's buffer, and weights that are not aligned
    take other (slower, differently rounding) matmul paths than the same weights copied.
    """
    path = Path(path)
    if not path.is_file():
        raise HyperBagelError(f"weights file not found: {path}")

    def convert(t: torch.Tensor) -> torch.Tensor:
        cast = dtype if dtype is not None and t.is_floating_point() else t.dtype
        return t.to(device, cast, copy=True)

    with open_safetensors(path) as f:
        return {k: convert(f.get_tensor(k)) for k in f.keys()}


def open_safetensors(path: str | Path):
    """``safe_open`` (torch) of ``path``, which validates the header against the file size; a damaged file is one
    ``HyperBagelError``."""
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors raises several types for damaged files
        raise HyperBagelError(f"cannot read {path}: not a valid safetensors file ({err})") from None


def stored_shapes(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as meta tensors (names and shapes, read from the header only)."""
    with open_safetensors(path) as f:
        return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}


def load_state(
    module: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint", assign: bool = False
) -> None:
    """Strict load by name: every key present, none unexpected, every shape equal; the message names them.

    ``assign=True`` makes the tensors the module's parameters instead of copying into them (a module built on the
    meta device must be loaded this way; ``requires_grad`` stays the module's).
    """
    check_state(module, tensors, source)
    module.load_state_dict(tensors, strict=True, assign=assign)


def check_state(module: nn.Module, tensors: dict, source: str = "checkpoint") -> None:
    """``load_state``'s strict check alone (names and shapes; ``tensors`` may be meta tensors)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in expected.keys() & tensors.keys() if tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} with wrong shapes (e.g. {wrong[:3]})")
        raise HyperBagelError(f"{source} does not match the model: " + "; ".join(parts))


def save_module(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    atomic_save_tensors(module.state_dict(), Path(path), metadata)


def save_autoencoder(vae: AutoEncoder, path: str | Path) -> None:
    """Weights as safetensors, the :class:`VAEConfig` in the metadata (key ``config``), so the file loads alone."""
    save_module(vae, path, {"format": "pt", "config": json.dumps(vae.config.to_dict())})


def save_pretrained(
    folder: str | Path, model: Bagel, vae: AutoEncoder, extra_files: dict[str, str] | None = None
) -> None:
    """Write a model folder; the config is also embedded in the safetensors metadata."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg_json = model.cfg.to_json()
    atomic_write_text(cfg_json + "\n", folder / CONFIG_FILE)
    save_module(model, folder / MODEL_FILE, {"config": cfg_json, "format": "pt"})
    save_autoencoder(vae, folder / AE_FILE)
    for name, text in (extra_files or {}).items():
        atomic_write_text(text, folder / name)


def load_config(folder: str | Path) -> BagelConfig:
    path = resolve(folder) / CONFIG_FILE
    if not path.is_file():
        raise HyperBagelError(f"not a model folder: {folder} has no {CONFIG_FILE}")
    try:
        return BagelConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as err:
        raise HyperBagelError(f"corrupt {path}: {err}") from None


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Bagel, AutoEncoder]:
    """Build on the meta device, then load both weight files strictly (fp32). ``folder`` may also be a shipped
    model's short name (``hyperbagel.pretrained``)."""
    folder = resolve(folder)
    cfg = load_config(folder)
    model = build_model(cfg, "meta")
    if (folder / MODEL_FILE).is_file():  # a config that does not describe the weights fails here, before allocating
        check_state(model, stored_shapes(folder / MODEL_FILE), f"{folder / MODEL_FILE} (for {CONFIG_FILE})")
    # the tensors read become the parameters (``assign``): no second copy, and no ``to_empty``, whose meta
    # ``empty_like`` imports sympy (about 0.5 s)
    load_state(model, read_tensors(folder / MODEL_FILE, device=device), str(folder / MODEL_FILE), assign=True)
    with torch.device("meta"):
        vae = AutoEncoder(cfg.vae)
    load_state(vae, read_tensors(folder / AE_FILE, device=device), str(folder / AE_FILE), assign=True)
    return model.eval(), vae.eval()
