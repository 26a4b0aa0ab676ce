"""FSDP2 sharding of our models: one ``fully_shard`` unit per decoder layer and one for the root module, with an
optional mixed-precision policy and activation checkpointing.

The root's ``forward`` must be the step's entry point (a recipe wraps its loss computation in a module for that):
FSDP2 gathers a unit's parameters in the unit's own forward hooks, and every process must gather the same units in
the same order. Decoder layers run on every token of every batch, so they qualify; the rest of the model (ViT,
connectors, heads) is used or not depending on a process's share of the batch, so it stays in the root unit.
Parameters that one process did not use still join the gradient reduction (as zeros). FSDP2 *averages* gradients
over processes, and every recipe normalises its losses by global counts, for which the one-process gradient is the
*sum*: so a recipe multiplies its loss by ``loss_scale()`` (the process count; exactly 1 in one process). (A divide
factor of 1 would say the same, but gloo lacks the reduction it needs.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from hyperbagel.model.qwen2_mot import MoTDecoderLayer
from hyperbagel.training.distributed import world

LAYER_TYPES: tuple[type[nn.Module], ...] = (MoTDecoderLayer,)


@dataclass
class ShardingConfig:
    param_dtype: str = "float32"  # "bfloat16": gather and compute in bf16 (gradients reduced in fp32)
    activation_checkpointing: bool = False  # recompute each layer's activations in backward
    reshard_after_forward: bool = True  # free gathered parameters after forward (ZeRO-3); False: keep (ZeRO-2)

    def __post_init__(self) -> None:
        if self.param_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"ShardingConfig.param_dtype must be 'float32' or 'bfloat16', got {self.param_dtype!r}")

    def policy(self) -> MixedPrecisionPolicy:
        dtype = getattr(torch, self.param_dtype)
        return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard(root: nn.Module, cfg: ShardingConfig | None = None,
          layer_types: tuple[type[nn.Module], ...] = LAYER_TYPES) -> nn.Module:
    """Shard ``root`` in place over the default process group (trained or frozen alike), on the device its
    parameters are on, and return it."""
    cfg = cfg or ShardingConfig()
    # FSDP2's default mesh is the accelerator's wherever one is visible, and it would move a CPU run's modules there
    mesh = init_device_mesh(next(root.parameters()).device.type, (world()[1],))
    layers = [m for m in root.modules() if isinstance(m, layer_types)]
    if cfg.activation_checkpointing:
        from torch.distributed._composable import checkpoint

        for layer in layers:
            checkpoint(layer)
    for unit in [*layers, root]:
        fully_shard(unit, mesh=mesh, mp_policy=cfg.policy(), reshard_after_forward=cfg.reshard_after_forward)
    for m in root.modules():
        if isinstance(m, FSDPModule) and hasattr(m, "set_reduce_scatter_unused_params"):  # torch ≥ 2.12
            m.set_reduce_scatter_unused_params(True, recurse=False)
    return root


class Entry(nn.Module):
    """A model entered through one ``forward``: ``entry(fn, *args)`` runs ``fn(*args)`` (any method of the model:
    a prefill, a velocity, a sampler's loop) as the root module's forward, so that under FSDP2 the root's parameters
    are gathered for it, and its gradients reduced after it, on every process alike. In one process it is a plain
    call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


def loss_scale() -> float:
    """What a loss normalised by global counts is multiplied by before ``backward`` (see the module's docstring)."""
    return float(world()[1])
