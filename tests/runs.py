"""What the recipe tests share: a script run once per job in N processes (``torchrun`` for more than one, FSDP2
over gloo) or in the test's own process, and two runs' checkpoints compared tensor by tensor."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from hyperbagel.training.checkpoint import read

JOBS = """
import json, sys
script, jobs = sys.argv[1], json.loads(sys.argv[2])
for args in jobs:
    sys.argv = ["-c", *args]
    exec(script, {"__name__": "__main__"})
"""


def launch(procs: int, script: str, jobs: Sequence[Sequence] = ((),), *, port: int) -> str:
    """``script`` in ``procs`` processes (one thread each), once per job of ``jobs`` (its ``sys.argv[1:]``), one
    after another in the same processes: starting them (torch, FSDP2, the process group) takes longer than a micro
    run. Fails the test with the error's tail; returns what they printed."""
    runner = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={port}",
              "--no-python", sys.executable] if procs > 1 else [sys.executable]
    argv = json.dumps([[str(a) for a in job] for job in jobs])
    done = subprocess.run([*runner, "-c", JOBS, script, argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_here(script: str, jobs: Sequence[Sequence]) -> str:
    """``launch(1, script, jobs)`` in this process, with one thread as there: a one-process run needs no process
    group, and starting a process costs more than a micro run. Returns what the jobs printed."""
    argv, threads, printed = sys.argv, torch.get_num_threads(), io.StringIO()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(printed):
            for job in jobs:
                sys.argv = ["-c", *map(str, job)]
                exec(script, {"__name__": "__main__"})
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return printed.getvalue()


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
