"""CFG combination and renorm against hand-computed values; schedules; the CFG interval."""

import math

import pytest
import torch

from hyperbagel.flow.guidance import GuidanceConfig, combine, gated_scales
from hyperbagel.flow.schedule import bagel_timesteps, noisy, shift_time, velocity_target, x0_from_velocity


def test_text_cfg_without_renorm_shrink():
    v_c = torch.tensor([[[1.0, 0.0]]])
    v_u = torch.tensor([[[0.0, 0.0]]])
    # v = 0 + 4·(1 − 0) = 4 → global renorm scales by ‖v_c‖/‖v‖ = 1/4, clamped to [0, 1]
    out = combine(v_c, v_u, None, 4.0, 1.0, "global", 0.0)
    assert torch.allclose(out, torch.tensor([[[1.0, 0.0]]]), atol=1e-6)
    # renorm_min = 1 disables the shrink
    out = combine(v_c, v_u, None, 4.0, 1.0, "global", 1.0)
    assert torch.allclose(out, torch.tensor([[[4.0, 0.0]]]))


def test_global_vs_channel_renorm_by_hand():
    v_c = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])  # token norms 5 and 1; global norm √26
    v_u = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    v = v_u + 2.0 * (v_c - v_u)  # [[3, 4], [0, 2]]: token norms 5, 2; global √29
    g = combine(v_c, v_u, None, 2.0, 1.0, "global", 0.0)
    assert torch.allclose(g, v * math.sqrt(26) / (math.sqrt(29) + 1e-8), atol=1e-6)
    c = combine(v_c, v_u, None, 2.0, 1.0, "channel", 0.0)
    assert torch.allclose(c, torch.tensor([[[3.0, 4.0], [0.0, 1.0]]]), atol=1e-6)


def test_text_channel_renorm_then_image_guidance():
    v_c = torch.tensor([[[2.0, 0.0]]])
    v_t = torch.tensor([[[0.0, 0.0]]])
    v_i = torch.tensor([[[1.0, 0.0]]])
    # text: 0 + 4·2 = 8 → per-token shrink to ‖v_c‖ = 2; image: 1 + 1.5·(2 − 1) = 2.5 (no renorm afterwards)
    out = combine(v_c, v_t, v_i, 4.0, 1.5, "text_channel", 0.0)
    assert torch.allclose(out, torch.tensor([[[2.5, 0.0]]]), atol=1e-6)


def test_interval_and_branches():
    g = GuidanceConfig(4.0, 1.5, (0.4, 1.0), "text_channel")
    assert g.branches(1.0) == (True, True) and g.branches(0.41) == (True, True)
    assert g.branches(0.4) == (False, False)  # lo < t ≤ hi
    assert GuidanceConfig(1.0, 1.5).branches(0.5) == (False, False)
    with pytest.raises(ValueError, match="renorm_type"):
        GuidanceConfig(renorm_type="local")


def test_gated_scales_are_one_exactly_where_the_teacher_does_not_guide():
    t = torch.tensor([0.0, 0.3, 0.4, 0.41, 1.0])
    text, image = torch.tensor([4.0, 2.0, 3.0, 5.0, 1.5]), torch.full((5,), 2.0)
    gt, gi = gated_scales(t, text, image, (0.4, 1.0))  # BAGEL's test: lo < t ≤ hi
    assert gt.tolist() == [1.0, 1.0, 1.0, 5.0, 1.5] and gi.tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]
    gt, _ = gated_scales(torch.tensor(0.35), text, image, (0.4, 1.0))  # one time for every row
    assert gt.tolist() == [1.0] * 5
    assert gated_scales(t, text, image, None) == (text, image)  # an ungated student: as given


def test_schedule_and_paths():
    t = bagel_timesteps(50, 3.0)
    assert t[0] == 1.0 and t[-1] == 0.0 and len(t) == 50
    assert torch.all(t[:-1] > t[1:])
    assert shift_time(torch.tensor(0.5), 3.0) == pytest.approx(0.75)
    # with shift 3, 41 of the 49 evaluated points have t > 0.4 (BAGEL's 41 × 3 + 8 = 131 edit forwards)
    assert int((t[:-1] > 0.4).sum()) == 41
    x0, eps, tt = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.3, 0.9])
    xt = noisy(x0, eps, tt)
    assert torch.allclose(x0_from_velocity(xt, velocity_target(x0, eps), tt), x0, atol=1e-6)
