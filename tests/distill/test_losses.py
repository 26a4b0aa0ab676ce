"""The distillation losses on hand-checked cases: the CFG target is the teacher's exact guided velocity, TSCD's
segments and targets, the DMD gradient's sign on a Gaussian toy with known scores, the hinge losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyperbagel.distill.cfg import cfg_distill_loss, guidance_shares, guided_target, teacher_guided_velocity
from hyperbagel.distill.dmdo import dmd_generator_loss, dmd_gradient, fake_flow_loss, path_mix
from hyperbagel.distill.tscd import (
    consistency_target,
    hinge_discriminator_loss,
    hinge_generator_loss,
    jump,
    renoise,
    segment_boundaries,
    segment_end,
    segment_end_index,
    segment_start,
    solve_to_segment_end,
    teacher_grid,
)
from hyperbagel.flow.guidance import GuidanceConfig
from hyperbagel.flow.sampler import guided_velocity
from hyperbagel.flow.schedule import bagel_timesteps
from hyperbagel.model.context import Context
from hyperbagel.model.student import student_from_teacher
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene

# ----- stage 1 -----


@pytest.mark.parametrize("task", ["gen", "edit"])
def test_cfg_target_is_the_teachers_guided_velocity_and_the_loss_vanishes_on_it(micro_teacher, task):
    pipe = Pipeline.from_pretrained(micro_teacher)
    ids = pipe.latent_ids()
    g = torch.Generator().manual_seed(0)
    if task == "gen":
        branches, _ = pipe.generation_branches(["a red circle", "two blue squares", "a green triangle"])
        base, image_scale = T2I_GUIDANCE, torch.ones(3)
    else:
        img = render(sample_scene(np.random.default_rng(0)))
        gens = [torch.Generator().manual_seed(i) for i in range(3)]
        branches, _ = pipe.edit_branches([img] * 3, ["make the background gray", "remove the circle",
                                                     "make the circle blue"], gens)
        base, image_scale = EDIT_GUIDANCE, torch.tensor([1.0, 1.7, 2.5])
    text_scale = torch.tensor([1.0, 2.5, 5.0])
    x = torch.randn(3, len(ids), pipe.cfg.patch_latent_dim, generator=g)
    for t in (0.95, 0.5, 0.3):  # editing's CFG interval is (0.4, 1]: 0.3 is outside it
        with torch.no_grad():
            target = teacher_guided_velocity(pipe.fwd, branches, ids, x, t, text_scale, image_scale, base)
            rows = []
            for b in range(3):
                one = Context.select  # the row's own contexts, guided by BAGEL's sampler at its scalar scales
                bi = torch.tensor([b])
                row_branches = type(branches)(one(branches.cond, bi), one(branches.no_text, bi),
                                              one(branches.no_image, bi))
                gcfg = GuidanceConfig(float(text_scale[b]), float(image_scale[b]), base.interval, base.renorm_type)
                rows.append(guided_velocity(pipe.fwd, row_branches, ids, gcfg)(x[bi], torch.tensor(t)))
            reference = torch.cat(rows)
        torch.testing.assert_close(target, reference, rtol=1e-4, atol=2e-5)  # batch vs row rounding
        assert cfg_distill_loss(target, target) == 0.0  # a student that outputs the guided velocity
        assert cfg_distill_loss(reference, target) < 1e-9  # (row by row, only float rounding differs)
        assert cfg_distill_loss(reference + 1e-2 * torch.randn(reference.shape, generator=g), target) > 0
        if t == 0.3 and task == "edit":  # outside the interval the target is the conditional velocity
            v_cond, _ = pipe.fwd.velocity(branches.cond, x, torch.full((3,), t), ids)
            torch.testing.assert_close(target, v_cond)
    # a fresh student (zero-init embedders) is the unguided teacher: a non-zero loss wherever guidance acts
    student = student_from_teacher(pipe.model)
    from hyperbagel.model.context import Forwarder

    with torch.no_grad():
        v, _ = Forwarder(student).velocity(branches.cond, x, torch.full((3,), 0.9), ids, text_scale=text_scale,
                                           image_scale=image_scale)
        target = teacher_guided_velocity(pipe.fwd, branches, ids, x, 0.9, text_scale, image_scale, base)
    per_row = (v - target).pow(2).mean(dim=(1, 2))
    assert per_row[0] < 1e-12 if task == "gen" else per_row[1] > 0  # scale 1 (and image 1): no guidance
    assert per_row[2] > 0


def test_guided_target_per_row_interval():
    v_c, v_u = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    cfg = GuidanceConfig(interval=(0.4, 1.0), renorm_type="channel", renorm_min=0.0)
    out = guided_target(v_c, v_u, None, torch.tensor([3.0, 3.0]), torch.ones(2), torch.tensor([0.9, 0.2]), cfg)
    # row 0 guided: 3·1 renormed back to ‖v_c‖ per token = 1; row 1 outside the interval: v_c
    torch.testing.assert_close(out, torch.ones(2, 3, 4))
    cfg = GuidanceConfig(interval=(0.4, 1.0), renorm_type="channel", renorm_min=1.0)  # no shrinking allowed
    out = guided_target(v_c, v_u, None, torch.tensor([3.0, 3.0]), torch.ones(2), torch.tensor([0.9, 0.2]), cfg)
    torch.testing.assert_close(out[0], torch.full((3, 4), 3.0))
    torch.testing.assert_close(out[1], torch.ones(3, 4))


# ----- stage 2 -----


def test_guidance_shares_by_hand():
    g = torch.Generator().manual_seed(0)
    v_c, d, off = (torch.randn(3, 5, 4, generator=g) for _ in range(3))
    off = off - (off * d).sum((1, 2), keepdim=True) / (d * d).sum((1, 2), keepdim=True) * d  # orthogonal to d
    v_g = v_c + d
    for student, applied, left in [(v_g, 1.0, 0.0), (v_c, 0.0, 1.0), (v_c + 0.5 * d, 0.5, 0.25),
                                   (v_c + 2 * d, 2.0, 1.0)]:
        a, rest = guidance_shares(student, v_c, v_g)
        torch.testing.assert_close(a, torch.full((3,), applied))
        torch.testing.assert_close(rest, torch.full((3,), left))
    # an error off the guidance direction leaves the applied share alone and adds to what is left
    a, rest = guidance_shares(v_c + 0.5 * d + off, v_c, v_g)
    torch.testing.assert_close(a, torch.full((3,), 0.5), atol=1e-5, rtol=0)
    expected = 0.25 + (off * off).sum((1, 2)) / (d * d).sum((1, 2))
    torch.testing.assert_close(rest, expected)


def test_tscd_segments_on_the_shifted_schedule():
    b = segment_boundaries(3, 3.0)
    torch.testing.assert_close(b, torch.tensor([1.0, 6 / 7, 3 / 5, 0.0], dtype=torch.float64))
    grid = teacher_grid(3, 2, 3.0)
    torch.testing.assert_close(grid, torch.tensor([1, 15 / 16, 6 / 7, 3 / 4, 3 / 5, 3 / 8, 0], dtype=torch.float64))
    # the 6-step sampler visits exactly this grid: 2 Euler steps per segment
    torch.testing.assert_close(grid.float(), bagel_timesteps(7, 3.0))
    t = torch.tensor([1.0, 0.9, 6 / 7, 0.7, 0.6, 0.5, 0.1], dtype=torch.float64)
    torch.testing.assert_close(segment_end(t, b), torch.tensor([6 / 7, 6 / 7, 3 / 5, 3 / 5, 0, 0, 0],
                                                               dtype=torch.float64))
    torch.testing.assert_close(segment_start(t, b), torch.tensor([1, 1, 6 / 7, 6 / 7, 3 / 5, 3 / 5, 3 / 5],
                                                                 dtype=torch.float64))


def test_tscd_targets_by_hand():
    # x_t = 1 at t = 0.9 in the first segment (end 6/7); the teacher's grid step goes to 0.88 with velocity 2, the
    # stop-gradient student continues to 6/7 with velocity 3; the student itself jumps with velocity 2.5
    x_t, t, t_next, end = torch.tensor([[1.0]]), torch.tensor([0.9]), torch.tensor([0.88]), torch.tensor([6 / 7])
    x_next = jump(x_t, torch.tensor([[2.0]]), t, t_next)
    assert x_next.item() == pytest.approx(1 - 0.02 * 2)
    y = consistency_target(x_next, torch.tensor([[3.0]]), t_next, end)
    assert y.item() == pytest.approx(0.96 - (0.88 - 6 / 7) * 3)
    y_hat = jump(x_t, torch.tensor([[2.5]]), t, end)
    assert y_hat.item() == pytest.approx(1 - (0.9 - 6 / 7) * 2.5)
    # with a straight field (the teacher's and student's velocities agree and are constant) they coincide
    v = torch.tensor([[1.3]])
    y = consistency_target(jump(x_t, v, t, t_next), v, t_next, end)
    torch.testing.assert_close(y, jump(x_t, v, t, end))


def test_tscd_real_side_is_the_teachers_ode_to_the_segment_end():
    grid = teacher_grid(3, 2, 3.0)  # [1, 15/16, 6/7, 3/4, 3/5, 3/8, 0]: boundaries at indices 0, 2, 4, 6
    n = torch.tensor([0, 1, 2, 5])
    end = segment_end_index(n, 2)
    assert end.tolist() == [2, 2, 4, 6]
    torch.testing.assert_close(grid[end], segment_end(grid[n], segment_boundaries(3, 3.0)))
    calls = []

    def velocity(x, t, rows):  # v = x·t: a different velocity at every grid point, so the step count shows
        calls.append(rows.tolist())
        return x * t.view(-1, 1)

    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    out = solve_to_segment_end(velocity, x, n, end, grid)
    by_hand = []
    for row in range(4):  # Euler, one grid step at a time: x ← x − (t_i − t_{i+1})·x·t_i
        v = x[row].clone()
        for i in range(int(n[row]), int(end[row])):
            v = v - (grid[i] - grid[i + 1]) * v * grid[i]
        by_hand.append(v)
    torch.testing.assert_close(out, torch.stack(by_hand))
    assert calls == [[0, 1, 2, 3], [0, 2]]  # a row takes one forward per step it needs (2, 1, 2, 1), then drops out
    torch.testing.assert_close(x, torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64))  # not in place


def test_renoise_keeps_the_path_marginals():
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 2.0)
    e, s = torch.tensor(0.6), torch.tensor(0.8)
    y = (1 - e) * x0 + e * torch.randn(x0.shape, generator=g)
    out = renoise(y, e, s, torch.randn(x0.shape, generator=g))
    assert out.mean().item() == pytest.approx((1 - 0.8) * 2.0, abs=5e-3)
    assert out.std().item() == pytest.approx(0.8, abs=5e-3)
    torch.testing.assert_close(renoise(x0[:3], torch.tensor(0.0), torch.tensor(1.0), torch.zeros(3, 1)),
                               torch.zeros(3, 1))


def test_hinge_losses_by_hand():
    real, fake = torch.tensor([[2.0, 0.5]]), torch.tensor([[-2.0, 0.0]])
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert hinge_generator_loss(fake).item() == pytest.approx(1.0)


# ----- stage 3 -----


def _x0_posterior(x_t: torch.Tensor, t: float, mu: torch.Tensor, var: float) -> torch.Tensor:
    """E[x_0 | x_t] for x_0 ~ N(mu, var·I) on the path x_t = (1 − t)·x_0 + t·ε (the exact 'denoiser')."""
    a = 1 - t
    return mu + a * var / (a * a * var + t * t) * (x_t - a * mu)


def test_dmd_gradient_moves_the_generator_towards_the_teacher_on_a_gaussian_toy():
    g = torch.Generator().manual_seed(0)
    d, var = 8, 0.25
    mu_real, mu_fake = torch.zeros(d), torch.full((d,), 1.0)
    shift = torch.nn.Parameter(mu_fake.clone())  # the generator: x̂_0 = z·σ + shift, i.e. N(mu_fake, var)
    opt = torch.optim.SGD([shift], lr=4.0)  # the loss is a mean over 256·8 elements
    start = (shift.detach() - mu_real).norm().item()
    for step in range(60):
        z, x_T = torch.randn(256, d, generator=g), torch.randn(256, d, generator=g)
        x0_hat = z * var**0.5 + shift
        t = 0.2 + 0.6 * torch.rand((), generator=g).item()
        x_t = path_mix(x0_hat.detach(), x_T, torch.full((256,), t))
        real = _x0_posterior(x_t, t, mu_real, var)
        fake = _x0_posterior(x_t, t, shift.detach(), var)  # the fake model knows the generator's distribution
        grad = dmd_gradient(x0_hat, real, fake)
        if step == 0:  # descent direction −grad points from the fake mean to the real one
            direction = -grad.mean(0)
            cos = torch.nn.functional.cosine_similarity(direction, mu_real - mu_fake, dim=0)
            assert cos > 0.99
        opt.zero_grad()
        dmd_generator_loss(x0_hat, grad).backward()
        # the loss's gradient on x̂_0 is exactly grad / numel
        opt.step()
    assert (shift.detach() - mu_real).norm().item() < 0.2 * start


def test_dmd_generator_loss_gradient_is_the_dmd_gradient():
    x = torch.randn(2, 3, 4, requires_grad=True)
    grad = torch.randn(2, 3, 4)
    dmd_generator_loss(x, grad).backward()
    torch.testing.assert_close(x.grad, grad / grad.numel())


def test_fake_flow_loss_is_zero_on_the_straight_path_velocity():
    x0, x_T = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    assert fake_flow_loss(x_T - x0, x0, x_T).item() == 0.0
    torch.testing.assert_close(path_mix(x0, x_T, torch.tensor([0.0, 1.0])), torch.stack([x0[0], x_T[1]]))
