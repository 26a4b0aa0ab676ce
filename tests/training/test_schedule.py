"""The learning-rate schedules at their corners: warm-up, plateau, the end of a decay."""

from __future__ import annotations

import math

import pytest

from hyperbagel.recipes.distill_cfg import CFGDistillConfig
from hyperbagel.recipes.distill_common import lr_at
from hyperbagel.training.schedule import warmup_constant, warmup_constant_decay, warmup_cosine, warmup_min_cosine


def test_warm_up_then_constant():
    assert [warmup_constant(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_constant(0, 2.0, 0) == 2.0


def test_a_decay_falls_linearly_over_the_last_steps_and_none_is_the_plateau():
    lrs = [warmup_constant_decay(s, 1.0, 2, 10, 4) for s in range(10)]
    assert lrs == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [warmup_constant_decay(s, 1.0, 2, 10, 0) for s in range(10)] == [warmup_constant(s, 1.0, 2)
                                                                            for s in range(10)]
    # a decay longer than the plateau caps the warm-up
    assert warmup_constant_decay(1, 1.0, 4, 4, 4) == 0.5


def test_cosines_end_where_they_say():
    assert warmup_cosine(9, 1.0, 0, 10) == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    assert warmup_cosine(20, 1.0, 2, 10, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_min_cosine(0, 1.0, 4, 8) == 0.25 and warmup_min_cosine(8, 1.0, 4, 8) == pytest.approx(0.0)


def test_a_distillation_stage_decays_when_asked_and_checks_the_length():
    cfg = CFGDistillConfig(steps=10, warmup=1, lr=1e-3, decay=5)
    assert lr_at(cfg, 4) == 1e-3 and lr_at(cfg, 9) == pytest.approx(2e-4)
    assert lr_at(cfg, 9, lr=1.0) == pytest.approx(0.2)  # every role's rate (discriminator, fake model) follows
    assert lr_at(CFGDistillConfig(steps=10, warmup=1, lr=1e-3), 9) == 1e-3
    with pytest.raises(ValueError, match="decay"):
        CFGDistillConfig(steps=10, decay=11)
