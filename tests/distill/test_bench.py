"""The bench: paired statistics by hand, KID's sanity, and a small end-to-end run whose timed calls give exactly
the Pipeline's images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperbagel.cli import main
from hyperbagel.eval.bench import bench_rows, load_pipelines, timed_call
from hyperbagel.eval.paired import PerImage, bootstrap_diff_ci, compare, mcnemar_p, overall
from hyperbagel.eval.shapes_encoder import EncoderConfig, kid, train_encoder
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.student import StudentInfo, save_student, student_from_teacher
from hyperbagel.pipeline import Pipeline, SamplerSettings
from hyperbagel.pretrained import resolve
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene


def test_mcnemar_by_hand():
    base = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    model = np.array([1, 0, 0, 0, 0, 1, 1, 0], bool)  # 3 lost, 1 gained: p = 2·P(X ≤ 1 | n=4) = 2·5/16
    assert mcnemar_p(base, model) == pytest.approx(0.625)
    assert mcnemar_p(base, base) == 1.0


def test_overall_and_bootstrap():
    tags = np.array(["a", "a", "b"])
    base = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert overall(tags, base) == pytest.approx((0.5 + 0.5) / 2)
    same = bootstrap_diff_ci(tags, base, base, 200)
    assert same == (0.0, 0.0)
    better = base.copy()
    better[1] = 1.0
    lo, hi = bootstrap_diff_ci(tags, base, better, 500)
    assert 0.0 <= lo <= hi <= 0.5 and hi == pytest.approx(0.5)
    res = compare(PerImage(tags, base, base > 0.5), PerImage(tags, better, better > 0.5), 200)
    assert res["diff"] == pytest.approx(0.25) and res["discordant"] == [0, 2]
    assert res["agreement"] == pytest.approx(4 / 6)


def test_kid_tells_real_from_corrupted_renders():
    enc = train_encoder(EncoderConfig(steps=30, batch=16))
    rng = np.random.default_rng(0)
    a = [render(sample_scene(rng)) for _ in range(64)]
    b = [render(sample_scene(rng)) for _ in range(64)]
    noise = np.random.default_rng(1).integers(-80, 80, (64, 64, 64, 3))
    c = [np.clip(im.astype(int) + n, 0, 255).astype(np.uint8) for im, n in zip(b, noise)]
    from hyperbagel.eval.shapes_encoder import encode

    fa, fb, fc = encode(enc, a), encode(enc, b), encode(enc, c)
    same, _ = kid(fa, fb, subsets=10)
    corrupted, _ = kid(fa, fc, subsets=10)
    assert corrupted > 10 * max(same, 1e-3)


def test_rows_have_six_forwards():
    rows = {r.name: r for r in bench_rows("edit", {"dmdo": None})}
    assert rows["euler-6f"].sampler == SamplerSettings(3, 3.0, "euler")  # 2 steps × 3 branches in the interval
    assert rows["dmdo-6"].sampler.num_timesteps == 7 and rows["dmdo-6"].accelerated
    assert bench_rows("generate", {})[1].sampler.num_timesteps == 4  # 3 steps × 2 branches


def test_an_arm_of_a_stage_is_named_for_its_stage_steps():
    """Without its folder yet (a script's chain, checked before it runs), a stage's steps come from its name:
    ``adp-pair`` is an ADP model, ``cfg-edit`` a stage-1 one (its own 49 steps), ``dmdo-fresh`` a DMDO one."""
    names = [r.name for r in bench_rows("generate", {"adp-pair": None, "refl-x": None, "cfg-edit": None,
                                                     "dmdo-fresh": None})]
    assert names[-4:] == ["adp-pair-1", "refl-x-1", "cfg-edit-49", "dmdo-fresh-6"]
    assert [r.sampler.num_timesteps for r in bench_rows("edit", {"cfg-edit": None})[-1:]] == [50]


@pytest.fixture(scope="module")
def student_folder(micro_teacher, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-student")
    teacher, _ = load_pretrained(micro_teacher)
    student = student_from_teacher(teacher)
    with torch.no_grad():
        student.text_scale_embedder.mlp[2].weight.normal_(0, 0.05)  # a student that differs from the teacher
    save_student(folder, student, StudentInfo(stage="dmdo"), micro_teacher)
    return folder


def test_timed_calls_are_the_pipelines_calls(student_folder):
    pipe = Pipeline.from_pretrained(student_folder)
    rows = {r.name: r for r in bench_rows("edit", {"dmdo": student_folder})}
    image = render(sample_scene(np.random.default_rng(0)))
    for name, accelerated in (("dmdo-6", True), ("euler-6f", False)):
        row = rows[name]
        call = timed_call(pipe, "edit", ["make the background gray"] * 2, [3, 4], row, [image, image])
        ref = pipe.edit([image, image], ["make the background gray"] * 2, [3, 4], sampler=row.sampler,
                        accelerated=accelerated)
        assert all(np.array_equal(a, b) for a, b in zip(call.images, ref.images))
        assert call.forwards == ref.forwards and 0 < call.sample_seconds < call.seconds


def test_the_teacher_may_be_a_shipped_name(student_folder, tmp_path, capsys):
    rows = bench_rows("generate", {"dmdo": student_folder})
    assert set(load_pipelines(resolve(Path("shapes-teacher")), {}, rows[:1])) == {"teacher"}
    # through the command, as the acceptance chains call it: the shipped teacher's config is found (and the micro
    # student is refused as distilled from another teacher) before anything is sampled
    assert main(["bench", "generate", "--teacher", "shapes-teacher", "--stage", f"dmdo={student_folder}",
                 "--rows", "dmdo-6", "--limit", "1", "--out", str(tmp_path / "bench")]) == 2
    assert "another teacher" in capsys.readouterr().err


def test_bench_command_end_to_end(micro_teacher, student_folder, tmp_path, capsys):
    enc = tmp_path / "enc.safetensors"
    train_encoder(EncoderConfig(steps=5, batch=8), enc)
    out = tmp_path / "bench"
    assert main(["bench", "generate", "--teacher", str(micro_teacher), "--stage", f"dmdo={student_folder}",
                 "--rows", "euler-6f,dpm-6f,dmdo-6", "--limit", "3", "--samples", "2", "--batch", "4",
                 "--out", str(out), "--encoder", str(enc), "--bootstrap", "50"]) == 0
    report = json.loads((out / "bench.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert list(rows) == ["teacher", "euler-6f", "dpm-6f", "dmdo-6"]
    assert rows["teacher"]["forwards_per_image"] == 49 * 2  # the prompt's prefill runs inside the first forward
    assert rows["dmdo-6"]["forwards_per_image"] == 6 and rows["euler-6f"]["forwards_per_image"] == 6
    assert rows["dmdo-6"]["vs_teacher"]["agreement"] <= 1.0 and "ci95" in rows["dpm-6f"]["vs_teacher"]
    vs_peers = rows["dmdo-6"]["vs_peers"]  # the distilled row against each training-free peer, paired
    assert list(vs_peers) == ["euler-6f", "dpm-6f"] and "vs_peers" not in rows["euler-6f"]
    for peer, vs in vs_peers.items():
        assert vs["diff"] == pytest.approx(rows["dmdo-6"]["overall"] - rows[peer]["overall"])
        assert vs["ci95"][0] <= vs["ci95"][1] and sum(vs["discordant"]) == round((1 - vs["agreement"]) * 3 * 2)
    for name in rows:  # result folders in the contract's layout, scored by the ordinary scorer
        assert main(["eval", "geneval", str(out / name)]) == 0
    assert "| dmdo-6 |" in (out / "bench.md").read_text() and "Δ vs dpm-6f" in (out / "bench.md").read_text()
    assert (out / "sheet.png").stat().st_size > 0
    assert all(0 < r["cpu"]["own_share"] for r in report["rows"])  # every call metered
    capsys.readouterr()


def test_interrupted_bench_resumes_to_the_same_report(micro_teacher, tmp_path, monkeypatch, capsys):
    import hyperbagel.eval.bench as bench

    enc = tmp_path / "enc.safetensors"
    train_encoder(EncoderConfig(steps=5, batch=8), enc)
    args = ["bench", "generate", "--teacher", str(micro_teacher), "--rows", "euler-6f", "--limit", "3",
            "--samples", "1", "--batch", "1", "--encoder", str(enc), "--bootstrap", "50"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "bench.json").read_text())

    real_save, saved = bench.save_tally, []

    def save_then_stop(path, tally, fingerprint):  # the process dies right after its first batch is saved
        real_save(path, tally, fingerprint)
        saved.append(tally.next_item)
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "save_tally", save_then_stop)
    out = tmp_path / "split"
    assert main([*args, "--out", str(out)]) == 130  # the CLI reports the interrupt
    monkeypatch.setattr(bench, "save_tally", real_save)
    assert saved == [1] and (out / "resume.safetensors").is_file()
    other = [*args[:-6], "--samples", "2", "--batch", "2", "--encoder", str(enc), "--bootstrap", "50"]
    assert main([*other, "--out", str(out)]) == 2
    assert "samples differ" in capsys.readouterr().err
    assert main([*args, "--out", str(out)]) == 0
    split = json.loads((out / "bench.json").read_text())
    assert not (out / "resume.safetensors").exists()
    assert [s["from_item"] for s in split["sessions"]] == [0, 1]
    for a, b in zip(whole["rows"], split["rows"]):
        for key in ("overall", "tags", "forwards_per_image", "pixel_l1_to_teacher", "kid", "colour"):
            assert a[key] == b[key], (a["row"], key)
        assert a.get("vs_teacher") == b.get("vs_teacher")
    assert main(["eval", "geneval", str(out / "euler-6f")]) == 0
    capsys.readouterr()

    def no_sampling(*a, **k):
        raise AssertionError("a finished bench was measured again")

    monkeypatch.setattr(bench, "load_pipelines", no_sampling)  # the same command again: the finished report
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "bench.json").read_text()) == split and "| euler-6f |" in capsys.readouterr().out
    monkeypatch.undo()
    assert main([*args, "--out", str(out), "--fresh"]) == 0  # --fresh measures again: one new session from 0
    assert [s["from_item"] for s in json.loads((out / "bench.json").read_text())["sessions"]] == [0]
    capsys.readouterr()


def test_a_retrained_stage_is_another_bench(student_folder, tmp_path):
    """Neither resumed nor shown as finished: the fingerprint holds each stage's weights, not only its path."""
    import shutil

    from hyperbagel.eval.bench import BenchSettings, _fingerprint

    folder = shutil.copytree(student_folder, tmp_path / "dmdo")
    rows, settings = bench_rows("generate", {"dmdo": folder}), BenchSettings("generate", tmp_path / "bench")
    before = _fingerprint(student_folder, {"dmdo": folder}, rows, settings, 3)
    assert _fingerprint(student_folder, {"dmdo": folder}, rows, settings, 3) == before
    student = folder / "student.safetensors"
    data = student.read_bytes()
    student.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one weight's last byte flipped
    assert _fingerprint(student_folder, {"dmdo": folder}, rows, settings, 3) != before


def test_eval_against_a_base_folder_pairs_images_by_seed(tmp_path, capsys):
    """Renders of each prompt's scene pass the judge, blank images fail: the paired counts are known by hand."""
    from hyperbagel.world import suites
    from hyperbagel.world.folders import write_record
    from hyperbagel.world.tasks import t2i

    items = suites.load_suite("geneval-shapes", 12)
    rng = np.random.default_rng(0)
    good = [render(t2i.scene_for_prompt(it, rng)) for it in items]
    blank = np.zeros_like(good[0])
    for i, it in enumerate(items):  # base: all renders; model: renders on the first 4 items only, two samples each
        write_record(tmp_path / "base", i, it, [good[i], good[i]])
        write_record(tmp_path / "model", i, it, [good[i], good[i]] if i < 4 else [good[i], blank])
    assert main(["eval", "geneval", str(tmp_path / "model"), "--against", str(tmp_path / "base"), "--json",
                 str(tmp_path / "s.json")]) == 0
    vs = json.loads((tmp_path / "s.json").read_text())["vs"]
    assert vs["base_overall"] == 1.0 and vs["discordant"] == [8, 0] and vs["agreement"] == 16 / 24
    assert vs["mcnemar_p"] == pytest.approx(2 * 0.5 ** 8)
    assert vs["ci95"][1] <= 0 and "McNemar p" in capsys.readouterr().out
    write_record(tmp_path / "short", 0, items[0], [good[0]])
    assert main(["eval", "geneval", str(tmp_path / "short"), "--against", str(tmp_path / "base")]) == 2
    assert "same items and samples" in capsys.readouterr().err


@pytest.mark.parametrize("native", ["0", "1"])
def test_bench_records_the_precision_it_ran(micro_teacher, tmp_path, monkeypatch, native):
    """``--bf16`` on a CPU without native bf16 runs (and fingerprints, and says) fp32; with it, bf16."""
    from hyperbagel.precision import ENV

    monkeypatch.setenv(ENV, native)
    enc = tmp_path / "enc.safetensors"
    train_encoder(EncoderConfig(steps=2, batch=8), enc)
    out = tmp_path / "bench"
    assert main(["bench", "generate", "--teacher", str(micro_teacher), "--rows", "euler-6f", "--limit", "2",
                 "--samples", "1", "--batch", "1", "--encoder", str(enc), "--bootstrap", "10", "--bf16",
                 "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["bf16"] is (native == "1")
    assert ("fp32 run (no native bf16)" in report["machine"]) is (native == "0")
