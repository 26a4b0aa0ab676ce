"""Batches built ahead of the model by data-loading processes.

A recipe whose every batch is a pure function of the step (``dataset[step]``) can build steps in any order and in
any process without changing a sample; ``step_loader`` hands them back in step order. With ``workers=0`` the
batches are built in the training process, as a plain loop would.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from hyperbagel.training.interrupt import ignore_interrupts


def _worker_start(_: int) -> None:
    torch.set_num_threads(1)  # each worker builds whole steps; the workers share out the cores
    ignore_interrupts()


def _as_is(batch):
    return batch


def step_loader(dataset: Dataset, start: int, stop: int, workers: int = 0, device: str = "cpu") -> DataLoader:
    """``dataset[start] … dataset[stop - 1]`` in order, built by ``workers`` processes (pinned for a CUDA model)."""
    return DataLoader(
        dataset, batch_size=None, sampler=range(start, stop), num_workers=workers, collate_fn=_as_is,
        worker_init_fn=_worker_start if workers else None, prefetch_factor=4 if workers else None,
        pin_memory=torch.device(device).type == "cuda")
