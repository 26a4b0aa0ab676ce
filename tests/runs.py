"""What the recipe tests share: a script run in N processes (``torchrun`` for more than one, FSDP2 over gloo), and
two runs' checkpoints compared tensor by tensor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from hyperbagel.training.checkpoint import read


def launch(procs: int, script: str, *args: str, port: int) -> str:
    """``python -c script args`` in ``procs`` processes (one thread each); fails the test with the error's tail,
    returns what they printed."""
    runner = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={port}",
              "--no-python", sys.executable] if procs > 1 else [sys.executable]
    done = subprocess.run([*runner, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """The last checkpoints of two runs (``RUN/train``) hold the same tensors, bit for bit."""
    ta, tb = read(Path(a) / "train"), read(Path(b) / "train")
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def assert_weights_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float = 1e-4) -> None:
    """Two runs' weights agree tensor by tensor: ``‖a − b‖ ≤ rel·‖a‖`` (+1e-6). Per tensor, not per element: AdamW
    turns a gradient that is zero up to rounding into a full-size step, so single elements may differ by far more
    than the rounding of the reductions that differ between process counts."""
    assert a.keys() == b.keys()
    for k in a:
        diff = torch.linalg.vector_norm((a[k] - b[k]).float())
        assert diff <= rel * torch.linalg.vector_norm(a[k].float()) + 1e-6, (k, float(diff))
