"""The process group: joined when launched by ``torchrun`` (gloo on the CPU, nccl and gloo on CUDA), absent
otherwise. Under ``torchrun`` the recipes shard with FSDP2 at any process count, one included (a check of FSDP2 on
one GPU)."""

from __future__ import annotations

import atexit
import gc
import os

import torch
import torch.distributed as dist


def init(device: str = "cpu") -> None:
    """Join the process group when launched by ``torchrun``, and leave it when the process exits (a group still
    alive at interpreter teardown can abort the process after its work is done); a no-op otherwise."""
    if "LOCAL_RANK" in os.environ and not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # on CUDA both backends: nccl for the sharded tensors, gloo for the host-side sums of logged losses and flags
        # (``all_sum``, ``any_rank``), which nccl alone would refuse as CPU tensors
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        # Free what is only held in reference cycles (sharded modules and their hooks, pending gloo work) while the
        # interpreter is whole: freed during its teardown instead, gloo work can abort a finished process.
        gc.collect()
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def distributed() -> bool:
    """In a process group (``torchrun``): the models are sharded with FSDP2."""
    return dist.is_available() and dist.is_initialized()


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over processes (float64); the values themselves in one process."""
    if not distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true in any process: for a data-dependent choice of which sharded forwards to run,
    which every process must make alike (FSDP2 gathers in each forward)."""
    return all_sum([float(flag)])[0] > 0 if distributed() else flag


def barrier() -> None:
    if distributed():
        dist.barrier()


def shard_range(n: int, offset: int = 0) -> range:
    """This process's share of ``n`` items numbered from ``offset``: contiguous, sizes differing by at most one."""
    rank, size = world()
    return range(offset + rank * n // size, offset + (rank + 1) * n // size)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole: a sharded ``DTensor`` gathered (a collective), a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
