"""Stage 2, TSCD (Hyper-SD's trajectory-segmented consistency distillation, Hyper-Bagel's variant): 3 segments of the
shifted schedule in one stage, trained adversarially (hinge), with an optional MSE term.

Time runs from 1 (noise) to 0 (data). The segment boundaries are the shifted ``linspace(1, 0, k + 1)``; a time ``t``
belongs to the segment ``(b_{i+1}, b_i]`` and its *end* is ``b_{i+1}``, the largest boundary below it. A training
sample takes a point ``x_t`` of a fine teacher grid that contains the boundaries, and

- the student jumps straight to the segment end: ``ŷ = x_t − (t − e)·v_student(x_t, t)``;
- the teacher takes one grid step ``x_{t'} = x_t − (t − t')·v_teacher(x_t, t)``, and the stop-gradient student
  jumps from there to the same end: ``y = x_{t'} − (t' − e)·v_student⁻(x_{t'}, t')`` (``y = x_{t'}`` when ``t' = e``).

Consistency makes ``ŷ`` and ``y`` agree (Hyper-SD's MSE term; PCM's construction of the "real" side). Trained
adversarially only, as Hyper-Bagel does, that ``y`` is no reference at all: it is one teacher step plus the student's
own jump, so it moves with the student and a discriminator cannot tell it from ``ŷ`` — measured here, a hinge stuck at
2 while the student drifted into high-frequency artefacts. The default "real" side is therefore the teacher's own ODE
solution to the segment end (``solve_to_segment_end``: Euler over the fine grid from ``x_t`` to ``e``), a target the
student cannot move — the "teacher ODE endpoints" that DMDX's adversarial stage discriminates against.

A discriminator judges ``ŷ`` and the real side after the same forward noising from ``e`` to a time ``s`` in the
segment above it (``renoise``), and the hinge loss trains both players. Even against that fixed target, adversarial
training alone let the student drift (its distance to the endpoints grew tenfold in 125 steps), so the recipe's default
also regresses ``ŷ`` on the endpoint, with the adversarial term at a tenth of the weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperbagel.flow.schedule import shift_time


def _bcast(t: Tensor | float, like: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))


def segment_boundaries(segments: int, shift: float) -> Tensor:
    """``[b_0 = 1, …, b_k = 0]``: the shifted ``linspace(1, 0, k + 1)``."""
    if segments < 1:
        raise ValueError(f"segments must be at least 1, got {segments}")
    return shift_time(torch.linspace(1, 0, segments + 1, dtype=torch.float64), shift)


def teacher_grid(segments: int, steps_per_segment: int, shift: float) -> Tensor:
    """The fine grid the teacher steps on: the shifted ``linspace(1, 0, k·m + 1)`` (it holds every boundary)."""
    return shift_time(torch.linspace(1, 0, segments * steps_per_segment + 1, dtype=torch.float64), shift)


def segment_end(t: Tensor, boundaries: Tensor) -> Tensor:
    """The end of the segment holding each ``t`` (``t`` in ``(b_{i+1}, b_i]`` → ``b_{i+1}``)."""
    b = boundaries.to(t.dtype)
    below = b[None, :] < t[:, None]  # boundaries strictly below t; b_k = 0 is below every t > 0
    return torch.where(below, b[None, :], torch.full_like(b[None, :], -1.0)).max(dim=1).values


def segment_start(t: Tensor, boundaries: Tensor) -> Tensor:
    """The start (noisier end) of the segment holding each ``t``: the smallest boundary ``≥ t``."""
    b = boundaries.to(t.dtype)
    above = b[None, :] >= t[:, None]
    return torch.where(above, b[None, :], torch.full_like(b[None, :], 2.0)).min(dim=1).values


def jump(x: Tensor, v: Tensor, t_from: Tensor | float, t_to: Tensor | float) -> Tensor:
    """A straight (Euler) move along velocity ``v`` from ``t_from`` to ``t_to``: ``x − (t_from − t_to)·v``."""
    return x - (_bcast(t_from, x) - _bcast(t_to, x)) * v


def segment_end_index(n: Tensor, steps_per_segment: int) -> Tensor:
    """The fine-grid index of the end of the segment holding grid point ``n`` (boundaries every ``m`` points)."""
    return (n // steps_per_segment + 1) * steps_per_segment


def solve_to_segment_end(velocity, x: Tensor, n: Tensor, end_index: Tensor, grid: Tensor,
                         agree: Callable[[bool], bool] = bool) -> Tensor:
    """Euler on the fine ``grid`` from each row's point ``n`` to its ``end_index``: the teacher's ODE solution at the
    segment end. Rows step together, each at its own time; ``velocity(x_rows, t_rows, rows)`` sees only the rows still
    moving (``rows`` indexes the batch), so a row costs one forward per grid step it takes. With a sharded teacher,
    ``agree`` (``training.distributed.any_rank``) keeps every process stepping while any has rows moving: one whose
    rows have all arrived runs a discarded forward of its first row, so that all run the same forwards."""
    x, idx = x.clone(), n.clone()
    while agree(bool((idx < end_index).any())):
        rows = (idx < end_index).nonzero().flatten()
        if len(rows) == 0:
            velocity(x[:1], grid[idx[:1]], torch.zeros(1, dtype=torch.long, device=x.device))
            continue
        t, t_next = grid[idx[rows]], grid[idx[rows] + 1]
        x[rows] = jump(x[rows], velocity(x[rows], t, rows).to(x.dtype), t, t_next)
        idx[rows] += 1
    return x


def consistency_target(x_next: Tensor, v_self_next: Tensor, t_next: Tensor, t_end: Tensor) -> Tensor:
    """``y``: the stop-gradient student's jump from the teacher's next grid point to the segment end."""
    return jump(x_next, v_self_next, t_next, t_end).detach()


def renoise(y: Tensor, t_from: Tensor, t_to: Tensor, noise: Tensor) -> Tensor:
    """The forward transition of the straight path from ``t_from`` up to ``t_to ≥ t_from``:
    ``a·y + σ·n`` with ``a = (1 − t_to)/(1 − t_from)`` and ``σ² = t_to² − a²·t_from²`` (marginals are kept)."""
    a = (1 - _bcast(t_to, y)) / (1 - _bcast(t_from, y))
    sigma = (_bcast(t_to, y) ** 2 - a**2 * _bcast(t_from, y) ** 2).clamp_min(0).sqrt()
    return a * y + sigma * noise


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``E[relu(1 − D(real))] + E[relu(1 + D(fake))]`` over every head and token."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """``−E[D(fake)]``."""
    return -fake_logits.float().mean()


def consistency_mse(student_jump: Tensor, target: Tensor) -> Tensor:
    """The optional MSE term (Hyper-SD's; Hyper-Bagel drops it)."""
    return F.mse_loss(student_jump.float(), target.float())
