"""The reward recipe under torchrun: FSDP2 over two processes computes the one-process losses, and its
checkpoints resume across process counts."""

import json

import pytest

from runs import launch, run_here

SCRIPT = """
import sys
from hyperbagel.recipes.reward import RewardTrainConfig, train_reward
from hyperbagel.training.distributed import init
init()
cfg = RewardTrainConfig(out=sys.argv[1], vae=None, steps=4, batch=8, warmup=1, report_pairs=16,
                        model={"dim": 32, "layers": 1, "heads": 2, "mlp": 64, "stem": [8, 16]})
train_reward(cfg, progress=False, stop_after=int(sys.argv[2]) if len(sys.argv) > 2 else None)
"""


def _history(out):
    return json.loads((out / "train" / "train_state.json").read_text())["history"]


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_process_counts(tmp_path):
    run_here(SCRIPT, [(tmp_path / "one",)])
    launch(2, SCRIPT, [(tmp_path / "two",), (tmp_path / "two-one", 2)], port=29547)
    run_here(SCRIPT, [(tmp_path / "two-one",)])  # stopped after step 2 in 2 processes, resumed in 1
    one = _history(tmp_path / "one")
    for h in (_history(tmp_path / "two"), _history(tmp_path / "two-one")):
        assert [x["bce"] for x in h] == pytest.approx([x["bce"] for x in one], rel=1e-5)
        assert [x["acc"] for x in h] == [x["acc"] for x in one]
