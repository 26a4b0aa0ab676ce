"""Issue 18's targets read off bench reports: each one flips exactly when its measurement crosses it."""

import json

import pytest

from hyperbagel.cli import main
from hyperbagel.eval.verdict import ONE_STEP, SIX_STEP, Targets, checks, missing_suites


def _vs(diff, lo, hi):
    return {"diff": diff, "ci95": [lo, hi], "mcnemar_p": 0.01, "agreement": 0.9, "discordant": [3, 9]}


def report(task="generate", ci_lo=-0.01, kid=0.030, peer_lo=0.02, peer_kid=0.100, speedup=16.0, overall=0.55,
           teacher_overall=0.56, teacher_kid=0.030, seed=0):
    """A bench report with the teacher, one peer and the 6-step row ``dmdo-6`` (KIDs as the bench stores them)."""
    row = {"row": "dmdo-6", "overall": overall, "kid": kid, "speedup": speedup, "sample_speedup": speedup + 1,
           "vs_teacher": _vs(0.01, ci_lo, 0.04), "vs_peers": {"euler-6f": _vs(0.05, peer_lo, 0.09)}}
    return {"task": task, "suite": {"generate": "geneval-shapes", "edit": "gedit-shapes"}[task], "seed": seed,
            "rows": [{"row": "teacher", "overall": teacher_overall, "kid": teacher_kid, "speedup": 1.0,
                      "sample_speedup": 1.0},
                     {"row": "euler-6f", "overall": 0.50, "kid": peer_kid, "speedup": 15.0, "sample_speedup": 16.0,
                      "vs_teacher": _vs(-0.06, -0.1, -0.02)}, row]}


def holds(rep, targets=SIX_STEP["generate"]):
    return {c.what.split(":")[0]: c.holds for c in checks(rep, "dmdo-6", targets)}


def test_a_row_that_meets_every_target_holds_on_each():
    assert all(holds(report()).values()) and len(holds(report())) == 4


@pytest.mark.parametrize("field, value, failed", [
    ("ci_lo", -0.0201, "Δ vs teacher, 95 % CI lower bound"),
    ("kid", 0.0376, "KID×10³ vs the teacher's"),  # 1.253× the teacher's 0.030
    ("peer_lo", 0.0, "vs euler-6f"),
    ("peer_kid", 0.029, "vs euler-6f"),  # the row's KID 0.030 is not lower
    ("speedup", 14.99, "speed-up end to end"),
])
def test_each_target_fails_alone_when_its_measurement_crosses_it(field, value, failed):
    result = holds(report(**{field: value}))
    assert [k for k, ok in result.items() if not ok] == [failed]


def test_a_speed_up_measured_beside_other_work_does_not_hold():
    rep = report(speedup=40.0)
    rep["rows"][0]["cpu"] = {"own_share": 0.6, "others_share": 0.4}  # the teacher's calls shared the machine
    (speed,) = [c for c in checks(rep, "dmdo-6", SIX_STEP["generate"]) if c.what.endswith("speed-up end to end")]
    assert not speed.holds and "timings disturbed: teacher 40 %" in speed.measured
    rep["rows"][0]["cpu"]["others_share"] = 0.01
    assert holds(rep)["speed-up end to end"]


def test_the_boundaries_are_inclusive_where_the_issue_says_at_least():
    assert all(holds(report(ci_lo=-0.02, kid=0.0375, speedup=15.0)).values())


def test_one_step_targets_are_ratios_of_the_teachers_score():
    assert holds(report(overall=0.56 * 0.919), ONE_STEP["generate"]) == {"score vs the teacher's": False,
                                                                         "speed-up end to end": False}
    assert holds(report(overall=0.56 * 0.921, speedup=60.0), ONE_STEP["generate"]) == {
        "score vs the teacher's": True, "speed-up end to end": True}
    assert list(holds(report(task="edit"), ONE_STEP["edit"])) == ["score vs the teacher's"]


def test_a_teacher_at_zero_is_a_target_of_zero_not_a_division():
    """A teacher that scores 0 (or whose unbiased KID estimate is 0 or below) sets the bar at 0."""
    assert holds(report(teacher_overall=0.0, overall=0.0), ONE_STEP["edit"]) == {"score vs the teacher's": True}
    kid = "KID×10³ vs the teacher's"
    assert holds(report(teacher_kid=-0.002, kid=0.001))[kid] is False
    assert holds(report(teacher_kid=-0.002, kid=-0.001))[kid] is True


def test_a_bench_without_peers_cannot_claim_to_beat_them():
    rep = report()
    del rep["rows"][2]["vs_peers"]
    assert holds(rep, Targets(beat_peers=True)) == {"beats the training-free peers": False}


def test_every_seed_needs_both_suites():
    assert missing_suites([report(), report("edit"), report(seed=1)]) == ["edit (seed 1)"]
    assert missing_suites([report(task, seed=s) for s in (0, 1) for task in ("generate", "edit")]) == []


def test_the_command_exits_1_on_a_miss_0_when_all_hold_2_without_a_bench(tmp_path, capsys):
    for name, rep in (("ok-gen", report()), ("ok-edit", report("edit", speedup=21.0)), ("slow-edit", report("edit"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bench.json").write_text(json.dumps(rep))
    args = ["bench", "verdict", "--row", "dmdo-6", "--targets", "six-step"]
    assert main([*args, str(tmp_path / "ok-gen"), str(tmp_path / "ok-edit")]) == 0
    assert "8 of 8 targets hold" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "ok-gen"), str(tmp_path / "slow-edit")]) == 1
    assert "gedit-shapes, seed 0: speed-up end to end | ≥ 20× | 16.0× (sampling 17.0×) | **no**" in (
        capsys.readouterr().out)
    assert main([*args, str(tmp_path / "missing")]) == 2
    assert main([*args, str(tmp_path / "ok-gen")]) == 2
    assert "no bench given for edit (seed 0)" in capsys.readouterr().err
    one_step = ["bench", "verdict", "--row", "refl-1", "--targets", "one-step"]
    assert main([*one_step, str(tmp_path / "ok-gen"), str(tmp_path / "ok-edit")]) == 2
    assert "no row 'refl-1'" in capsys.readouterr().err
