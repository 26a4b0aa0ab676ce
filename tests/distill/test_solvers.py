"""The training-free peers: Euler, DPM-Solver++ and UniPC (diffusers' flow-matching schedulers driven by our
velocity) integrate an exactly known flow — a Gaussian's — to its data distribution."""

from __future__ import annotations

import pytest
import torch

from hyperbagel.errors import HyperBagelError
from hyperbagel.flow.solvers import SOLVERS, solve

MU, SIGMA = 2.0, 0.5


def gaussian_velocity(x: torch.Tensor, t) -> torch.Tensor:
    """E[ε − x_0 | x_t] for x_0 ~ N(MU, SIGMA²) on x_t = (1 − t)·x_0 + t·ε."""
    t = float(t)
    a, var = 1 - t, (1 - t) ** 2 * SIGMA**2 + t**2
    x0 = MU + a * SIGMA**2 / var * (x - a * MU)
    eps = t / var * (x - a * MU)
    return eps - x0


@pytest.fixture(scope="module")
def noise():
    return torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("solver", SOLVERS)
def test_solvers_reach_the_data_distribution(noise, solver):
    x = solve(gaussian_velocity, noise.clone(), solver, 50, 3.0)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() == pytest.approx(SIGMA, rel=0.05)


def test_higher_order_solvers_beat_euler_at_six_steps(noise):
    err = {s: abs(solve(gaussian_velocity, noise.clone(), s, 6, 3.0).std().item() - SIGMA) for s in SOLVERS}
    assert err["dpmsolver++"] < err["euler"] and err["unipc"] < err["euler"]


def test_unknown_solver():
    with pytest.raises(HyperBagelError, match="unknown solver"):
        solve(gaussian_velocity, torch.zeros(2, 1), "heun", 3, 3.0)
