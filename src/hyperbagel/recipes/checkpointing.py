"""Training state on disk: weights and optimizer moments as safetensors, the rest as JSON, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from hyperbagel.files import atomic_save_tensors, atomic_write_text


def _named_parameters(model: nn.Module, aux: nn.Module | None = None) -> dict[str, nn.Parameter]:
    """The model's parameters by name, and the auxiliary module's (if any) under ``aux.``."""
    named = dict(model.named_parameters())
    if aux is not None:
        named.update({f"aux.{n}": p for n, p in aux.named_parameters()})
    return named


def optimizer_tensors(optimizer: torch.optim.Optimizer, model: nn.Module,
                      aux: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Per-parameter optimizer state keyed by parameter name, plus the JSON-able param groups."""
    names = {id(p): n for n, p in _named_parameters(model, aux).items()}
    tensors = {}
    for p, state in optimizer.state.items():
        for key, value in state.items():
            tensors[f"{names[id(p)]}::{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return tensors, {"param_groups": groups}


def load_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict,
                   aux: nn.Module | None = None):
    params = _named_parameters(model, aux)
    for key, value in tensors.items():
        name, field = key.split("::")
        # moments live beside their parameter (a CUDA run resumes on the GPU); AdamW keeps its step count on the CPU
        optimizer.state[params[name]][field] = value if field == "step" else value.to(params[name].device)
    for group, saved in zip(optimizer.param_groups, meta["param_groups"]):
        group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def save_training_state(folder: Path, model: nn.Module, ema: nn.Module | None, optimizer, state: dict,
                        aux: nn.Module | None = None) -> None:
    """``train_model.safetensors``, ``train_ema.safetensors``, ``optimizer.safetensors`` and ``train_state.json``
    (written last, so a state file always describes complete weights); ``train_aux.safetensors`` for a trained
    module that is not part of the model (auxiliary heads)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(model.state_dict(), folder / "train_model.safetensors")
    if ema is not None:
        atomic_save_tensors(ema.state_dict(), folder / "train_ema.safetensors")
    if aux is not None:
        atomic_save_tensors(aux.state_dict(), folder / "train_aux.safetensors")
    tensors, meta = optimizer_tensors(optimizer, model, aux)
    atomic_save_tensors(tensors, folder / "optimizer.safetensors")
    atomic_write_text(json.dumps({**state, **meta}, indent=1) + "\n", folder / "train_state.json")


def load_training_state(folder: Path, model: nn.Module, ema: nn.Module | None, optimizer,
                        aux: nn.Module | None = None) -> dict | None:
    """Restore what ``save_training_state`` wrote; None when there is nothing to resume."""
    if not (folder / "train_state.json").is_file():
        return None
    state = json.loads((folder / "train_state.json").read_text())
    model.load_state_dict(load_file(folder / "train_model.safetensors"), strict=True)
    if ema is not None:
        ema.load_state_dict(load_file(folder / "train_ema.safetensors"), strict=True)
    if aux is not None:
        aux.load_state_dict(load_file(folder / "train_aux.safetensors"), strict=True)
    load_optimizer(optimizer, model, load_file(folder / "optimizer.safetensors"), state, aux)
    return state
