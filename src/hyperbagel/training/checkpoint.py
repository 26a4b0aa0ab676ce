"""Training checkpoints with ``torch.distributed.checkpoint``: every process writes its shards, loading reshards to
any process count (2 → 1 and 1 → 2 alike), and a run stopped at any moment resumes from the last complete one.

Layout of ``folder``: ``dcp-STEP/`` (the tensors of the trained modules, their optimizers and any frozen modules,
such as an EMA) and ``train_state.json`` (the step, the loss history, whatever the recipe keeps), written last and
atomically, naming the checkpoint it describes. A checkpoint is written under a temporary name and renamed when
every process has finished, and the previous one is removed only after that: an interrupted write leaves the last
complete checkpoint as it was.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_write_text, writing
from hyperbagel.training.distributed import barrier, distributed, is_main

STATE_FILE = "train_state.json"


def _options(name: str, optimizers: dict, trainable_only: bool) -> StateDictOptions:
    """A trained module's frozen parameters are left out when ``trainable_only`` (they are rebuilt, not trained)."""
    return StateDictOptions(ignore_frozen_params=trainable_only and name in optimizers)


def _tensors(modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             trainable_only: bool) -> dict:
    out = {name: get_model_state_dict(m, options=_options(name, optimizers, trainable_only))
           for name, m in modules.items()}
    for name, opt in optimizers.items():
        out[f"{name}.optim"] = get_optimizer_state_dict(modules[name], opt)
    return out


def save(folder: str | Path, step: int, modules: dict[str, nn.Module],
         optimizers: dict[str, torch.optim.Optimizer], state: dict, trainable_only: bool = False) -> None:
    """Write the checkpoint of ``step`` (a collective: every process calls it). ``optimizers[name]`` holds the
    parameters of ``modules[name]``; modules without an optimizer are saved as they are (frozen or EMA). With
    ``trainable_only`` a trained module keeps only its trainable parameters (a distilled student: its frozen
    understanding weights are the teacher's)."""
    folder = Path(folder)
    name = f"dcp-{step:07d}"
    tmp = folder / f"{name}.tmp"
    if is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    barrier()
    try:
        with writing(folder / name):
            dcp.save(_tensors(modules, optimizers, trainable_only), checkpoint_id=str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    if is_main():
        shutil.rmtree(folder / name, ignore_errors=True)
        tmp.rename(folder / name)
        atomic_write_text(json.dumps({**state, "step": step, "checkpoint": name}, indent=1) + "\n", folder / STATE_FILE)
        for old in folder.glob("dcp-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    barrier()


def load(folder: str | Path, modules: dict[str, nn.Module],
         optimizers: dict[str, torch.optim.Optimizer], trainable_only: bool = False) -> dict | None:
    """Restore the last checkpoint into ``modules`` and ``optimizers`` (a collective; ``trainable_only`` as it was
    saved); returns its state, or None when ``folder`` holds none."""
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if "checkpoint" not in state:
        return None  # another format (a recipe may know how to read it)
    tensors = _tensors(modules, optimizers, trainable_only)
    models = {name: tensors[name] for name in modules}
    dcp.load(models, checkpoint_id=str(folder / state["checkpoint"]))
    # a trained parameter that never had a gradient has no optimizer state in the checkpoint (AdamW creates it at
    # the first gradient); the fresh one ``get_optimizer_state_dict`` made for it is never used by a step
    optim = {f"{name}.optim": tensors[f"{name}.optim"] for name in optimizers}
    dcp.load(optim, checkpoint_id=str(folder / state["checkpoint"]),
             planner=dcp.DefaultLoadPlanner(allow_partial_load=True))
    for name, m in modules.items():
        options = _options(name, optimizers, trainable_only)
        options = dataclasses.replace(options, strict=not options.ignore_frozen_params)
        set_model_state_dict(m, tensors[name], options=options)
    for name, opt in optimizers.items():
        set_optimizer_state_dict(modules[name], opt, tensors[f"{name}.optim"])
    return state


def resume(folder: str | Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
           older: Callable[[], dict] | None = None, trainable_only: bool = False) -> dict | None:
    """``load``, and for a folder checkpointed in a recipe's format from before the distributed checkpoints (a
    state file without a ``checkpoint``), ``older()``: it restores that one, in one process (the next checkpoint is
    written in the sharded format)."""
    state = load(folder, modules, optimizers, trainable_only)
    if state is None and older is not None and (Path(folder) / STATE_FILE).is_file():
        if distributed():
            raise HyperBagelError(f"{folder} holds a one-process checkpoint of an older format: resume it in one "
                                  "process first (it is rewritten in the sharded format at the next checkpoint)")
        state = older()
    return state


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``module``, whole and on the CPU (a collective when sharded: the main process gets them)."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def read(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``folder``'s last checkpoint, whole and by flattened name (``model.layer.weight``,
    ``model.optim.state.layer.weight.exp_avg``): for inspecting a run and comparing two, in one process."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = Path(folder)
    name = json.loads((folder / STATE_FILE).read_text())["checkpoint"]
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(folder / name), f"{tmp}/whole.pt")
        nested = torch.load(f"{tmp}/whole.pt", weights_only=True)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif torch.is_tensor(value):
            flat[prefix] = value

    walk("", nested)
    return flat
