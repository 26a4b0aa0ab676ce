"""Training-free few-step solvers driven by our velocity: DPM-Solver++ (2M) and UniPC through diffusers'
flow-matching schedulers (``use_flow_sigmas``, ``flow_prediction``), and plain Euler on the shifted schedule.

diffusers' flow convention is ours: ``x_σ = (1 − σ)·x_0 + σ·ε`` and the model output ``ε − x_0``, with timesteps
``1000·σ``; one solver step is one velocity evaluation (UniPC's corrector reuses the next evaluation). diffusers is
an optional dependency (the ``bench`` extra); only these solvers import it.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from hyperbagel.errors import HyperBagelError
from hyperbagel.flow.sampler import VelocityFn, euler
from hyperbagel.flow.schedule import bagel_timesteps

SOLVERS = ("euler", "dpmsolver++", "unipc")


@lru_cache(maxsize=8)
def _scheduler(solver: str, shift: float):
    """One scheduler per (solver, shift): building one costs far more than a step; ``set_timesteps`` resets it."""
    try:
        from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
    except ImportError:
        raise HyperBagelError(f"the {solver} solver needs diffusers: pip install 'hyperbagel[bench]'") from None
    common = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, solver_order=2,
                  lower_order_final=True, final_sigmas_type="zero")
    if solver == "dpmsolver++":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
    return UniPCMultistepScheduler(predict_x0=True, **common)


def prepare(solver: str, shift: float) -> None:
    """Import diffusers and build the scheduler now (seconds, once), so no timed call pays for it."""
    if solver != "euler":
        _scheduler(solver, shift)


def solve(velocity: VelocityFn, x: Tensor, solver: str, steps: int, shift: float) -> Tensor:
    """Integrate from pure noise ``x`` (t = 1) to data with ``steps`` velocity evaluations."""
    if solver not in SOLVERS:
        raise HyperBagelError(f"unknown solver {solver!r}; choose from {SOLVERS}")
    if steps < 1:
        raise HyperBagelError(f"a solver needs at least one step, got {steps}")
    if solver == "euler":
        return euler(velocity, x, bagel_timesteps(steps + 1, shift))
    sched = _scheduler(solver, shift)
    sched.set_timesteps(steps, device=x.device)
    dtype = x.dtype
    for timestep in sched.timesteps:
        t = timestep.float() / sched.config.num_train_timesteps
        v = velocity(x, t)
        x = sched.step(v.to(torch.float32), timestep, x.to(torch.float32)).prev_sample.to(dtype)
    return x
