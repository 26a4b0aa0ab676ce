"""A distillation stage under torchrun: DMDO (a frozen teacher, two trained students sharing its understanding
weights) sharded with FSDP2 over two processes computes the one-process losses, and its checkpoints resume across
process counts."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from hyperbagel.eval.random_folders import random_student_folder
from runs import assert_weights_close, launch, run_here

SCRIPT = """
import sys
from hyperbagel.recipes.distill_dmdo import DMDOConfig, train_dmdo
from hyperbagel.training.distributed import init
init()
teacher, start, out = sys.argv[1:4]
cfg = DMDOConfig(teacher=teacher, init=start, out=out, steps=5, fake_updates=2, sample_steps=2,  # 2-step rollouts
                 fake_init="teacher", batch={"gen": 2, "edit": 2}, warmup=1, lr=1e-3, bf16=False, ckpt_every=100,
                 log_every=100)
train_dmdo(cfg, progress=False, stop_after=int(sys.argv[4]) if len(sys.argv) > 4 else None)
"""


def _history(out):
    return json.loads((out / "train" / "train_state.json").read_text())["history"]


def _assert_close(h1, h2, rel=1e-5):
    """Same steps and keys; the losses and gradient norms within ``rel`` (printed: the worst seen)."""
    assert [a["step"] for a in h1] == [b["step"] for b in h2] == [1, 2, 3, 4, 5]
    worst = 0.0
    for a, b in zip(h1, h2):
        assert set(a) == set(b)
        for k in a:
            if "/" in k or k == "grad_norm":
                assert a[k] == pytest.approx(b[k], rel=rel), (a["step"], k)
                worst = max(worst, abs(a[k] - b[k]) / abs(a[k]))
    print(f"worst relative difference {worst:.1e}")


@pytest.mark.slow
def test_dmdo_in_two_processes_matches_one_and_resumes_across_process_counts(micro_teacher, tmp_path):
    start = random_student_folder(micro_teacher, tmp_path / "start")

    def job(name, stop=None):
        return micro_teacher, start, tmp_path / name, *([stop] if stop else [])

    run_here(SCRIPT, [job("one"), job("one-two", stop=3)])
    launch(2, SCRIPT, [job("two"), job("two-one", stop=2), job("one-two")], port=29551)  # one-two: resumed in 2
    run_here(SCRIPT, [job("two-one")])  # two-one: resumed in 1
    one = _history(tmp_path / "one")
    assert all(h["grad_norm"] > 0 and h["gen/fake_fm"] > 0 for h in one)  # a run that learns, not zeros
    for other in ("two", "two-one", "one-two"):
        _assert_close(one, _history(tmp_path / other))
    assert_weights_close(load_file(tmp_path / "one" / "student.safetensors"),
                         load_file(tmp_path / "one-two" / "student.safetensors"))
