"""The draft recipe: data built once per target and config, and an interrupted run resumes exactly."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperbagel.errors import HyperBagelError
from hyperbagel.recipes.draft import DraftDataConfig, DraftTrainConfig, build_data, train_draft
from runs import launch, run_here

DATA = DraftDataConfig(samples=8, chunk_size=4, max_new_tokens=10, batch=4)


def _cfg(teacher, data_dir, out, **kw):
    kw = {"steps": 4, "batch": 3, "warmup": 1, "ckpt_every": 100, "log_every": 100, **kw}
    return DraftTrainConfig(target=str(teacher), out=str(out), data_dir=str(data_dir), data=DATA, **kw)


def _history(out):
    return json.loads((Path(out) / "train" / "train_state.json").read_text())["history"]


def test_interrupted_draft_training_resumes_exactly(micro_teacher, tmp_path):
    train_draft(_cfg(micro_teacher, tmp_path / "data", tmp_path / "a"), progress=False)
    train_draft(_cfg(micro_teacher, tmp_path / "data", tmp_path / "b"), progress=False, stop_after=2)
    assert len(_history(tmp_path / "b")) == 2
    train_draft(_cfg(micro_teacher, tmp_path / "data", tmp_path / "b"), progress=False)
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "draft.safetensors"), load_file(tmp_path / "b" / "draft.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # it learned something, and the ablation variants train from the same data
    h = _history(tmp_path / "a")
    assert all(len(x["acc"]) == 5 for x in h)
    train_draft(_cfg(micro_teacher, tmp_path / "data", tmp_path / "c", variant="eagle3", steps=1), progress=False)
    assert (tmp_path / "c" / "draft.safetensors").is_file()


def test_data_is_built_once_and_refused_for_another_config(micro_teacher, tmp_path):
    build_data(DATA, micro_teacher, tmp_path, progress=False)
    chunk = tmp_path / "chunk-00001.json"
    stamp = chunk.stat().st_mtime_ns
    build_data(DATA, micro_teacher, tmp_path, progress=False)  # complete: nothing rebuilt
    assert chunk.stat().st_mtime_ns == stamp
    records = json.loads(chunk.read_text())
    assert [r["index"] for r in records] == [4, 5, 6, 7] and all("answer" in r for r in records)
    with pytest.raises(HyperBagelError, match="another target or data config"):
        build_data(DraftDataConfig(samples=8, chunk_size=4, max_new_tokens=11, batch=4), micro_teacher, tmp_path,
                   progress=False)


def test_train_and_bench_commands(micro_teacher, tmp_path, capsys):
    from hyperbagel.cli import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"data": {"samples": 4, "chunk_size": 4, "max_new_tokens": 8, "batch": 4},
                               "batch": 2, "warmup": 1}))
    for variant in ("hyper-bagel", "eagle3"):
        assert main(["train", "draft", "--target", str(micro_teacher), "--out", str(tmp_path / variant),
                     "--variant", variant, "--steps", "1", "--config", str(cfg)]) == 0
    assert main(["bench", "understand", "--target", str(micro_teacher), "--drafts", str(tmp_path / "hyper-bagel"),
                 str(tmp_path / "eagle3"), "--out", str(tmp_path / "bench"), "--limit", "2", "--think", "2",
                 "--gammas", "2,3", "--trees", "2,2,4", "--calibrate", "1", "--max-new-tokens", "6"]) == 0
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert report["greedy_identity"]["all_identical"] and report["greedy_identity"]["items"] == 6
    names = [r["name"] for r in report["rows"]]
    assert names[0] == "plain decoding" and any("fastest tree" in n for n in names)
    assert names[1].startswith("prompt lookup (no draft)") and report["calibration"]["fastest_lookup"]
    assert {t["variant"] for t in report["table1"]} == {"hyper-bagel", "eagle3"}
    plain = report["rows"][0]["splits"]["all"]
    assert plain["tau"] == 1.0 and plain["speedup"] == 1.0
    capsys.readouterr()
    import numpy as np
    from PIL import Image

    from hyperbagel.world.render import render
    from hyperbagel.world.scene import sample_scene

    Image.fromarray(render(sample_scene(np.random.default_rng(0)))).save(tmp_path / "img.png")
    answers = []
    for extra in ([], ["--draft", str(tmp_path / "hyper-bagel"), "--spec", "chain", "--gamma", "3"]):
        assert main(["understand", "--ckpt", str(micro_teacher), str(tmp_path / "img.png"), "describe the image.",
                     "--max-new-tokens", "12", *extra]) == 0
        answers.append(capsys.readouterr().out.splitlines()[0])
    assert answers[0] == answers[1]


def test_epoch_batches_are_shuffled_length_buckets():
    import numpy as np

    from hyperbagel.recipes.draft import POOL, epoch_batches

    cfg = DraftTrainConfig(batch=4, data={"samples": 200, "chunk_size": 50})
    lengths = np.random.default_rng(0).integers(20, 140, 200)
    batches = epoch_batches(cfg, 3, lengths)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) and len(batches) == 200 // 4 and all(len(b) == 4 for b in batches)
    assert batches == epoch_batches(cfg, 3, lengths) != epoch_batches(cfg, 4, lengths)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.25 * np.ptp(lengths)  # a batch holds similar lengths
    assert POOL * 4 < 200  # several pools, so the order of lengths is shuffled too


SCRIPT = """
import sys
from hyperbagel.recipes.draft import DraftDataConfig, DraftTrainConfig, train_draft
from hyperbagel.training.distributed import init
init()
target, data, out = sys.argv[1:4]
cfg = DraftTrainConfig(target=target, out=out, data_dir=data, steps=5, batch=4, warmup=1, bf16=False,
                       ckpt_every=100, log_every=100,
                       data=DraftDataConfig(samples=8, chunk_size=4, max_new_tokens=10, batch=4))
train_draft(cfg, progress=False, stop_after=int(sys.argv[4]) if len(sys.argv) > 4 else None)
"""


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_process_counts(micro_teacher, tmp_path):
    build_data(DATA, micro_teacher, tmp_path / "data", progress=False)

    def job(name, stop=None):
        return micro_teacher, tmp_path / "data", tmp_path / name, *([stop] if stop else [])

    run_here(SCRIPT, [job("one"), job("one-two", stop=3)])
    launch(2, SCRIPT, [job("two"), job("two-one", stop=2), job("one-two")], port=29557)  # one-two: resumed in 2
    run_here(SCRIPT, [job("two-one")])  # two-one: resumed in 1
    one = _history(tmp_path / "one")
    assert all(h["loss"] > 0 and h["grad_norm"] > 0 for h in one)
    for other in (_history(tmp_path / name) for name in ("two", "two-one", "one-two")):
        assert [h["step"] for h in other] == [1, 2, 3, 4, 5]
        for a, b in zip(one, other):
            for k in ("loss", "grad_norm"):
                assert a[k] == pytest.approx(b[k], rel=1e-5), (a["step"], k)
            for k in ("kl", "ce", "acc"):  # per draft step; a KL near 0.01 is a difference of close distributions
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k)
