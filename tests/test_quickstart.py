"""``hyperbagel quickstart``: an interrupted run continues where it stopped (finished stages are skipped, the stage
that was cut off resumes from its checkpoints) and ends with the same results as an uninterrupted run; the report is
built from its JSON alone; stages whose command does not exist are skipped, saying so."""

from __future__ import annotations

import json

import pytest

from hyperbagel.errors import HyperBagelError
from hyperbagel.eval.report import paper_tables, render_html
from hyperbagel.quickstart import MARKER, MICRO, SMOKE, QuickstartConfig, deterministic_results, plan, run_quickstart

TEST = SMOKE


def _history(folder) -> list:
    return json.loads((folder / "train" / "train_state.json").read_text())["history"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("qs") / "a"
    res = run_quickstart(TEST, run)
    assert res.stopped_after is None and {s["status"] for s in res.stages} == {"ran"}
    return run, res


def test_interrupted_run_continues_and_matches(uninterrupted, tmp_path, monkeypatch, capsys):
    import hyperbagel.recipes.distill_tscd as tscd

    a, _ = uninterrupted
    b = tmp_path / "b"
    stages = plan(TEST, b)
    names = [s.name for s in stages]
    # 1. a stop-after hook: everything up to the drafts
    first = run_quickstart(TEST, b, stop_after="draft-eagle3")
    assert first.stopped_after == "draft-eagle3" and first.report is None and not (b / "report.html").exists()
    assert [s["status"] for s in first.stages] == ["ran"] * (names.index("draft-eagle3") + 1)
    # 2. Ctrl-C in the middle of a stage: TSCD stops after its step-1 checkpoint, before its marker
    real = tscd.train_tscd

    def interrupted(cfg, progress=True, stop_after=None):
        real(cfg, progress, stop_after=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(tscd, "train_tscd", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_quickstart(TEST, b)
    cut = names.index("distill-tscd")
    assert all((b / st.folder / MARKER).is_file() for st in stages[:cut])
    assert not (b / "distill-tscd" / MARKER).exists() and len(_history(b / "distill-tscd")) == 1
    # 3. the same call again: finished stages are skipped, TSCD resumes at step 1, the rest runs
    monkeypatch.setattr(tscd, "train_tscd", real)
    capsys.readouterr()
    last = run_quickstart(TEST, b)
    status = {s["name"]: s["status"] for s in last.stages}
    assert all(status[n] == "cached" for n in names[:cut]) and all(status[n] == "ran" for n in names[cut:])
    assert "done already" in capsys.readouterr().err
    # the same losses, scores, forwards, τ and texts as the uninterrupted run
    assert deterministic_results(a) == deterministic_results(b)
    # 4. a finished run has nothing left to do
    assert {s["status"] for s in run_quickstart(TEST, b).stages} == {"cached"}


def test_report_and_tables(uninterrupted, capsys):
    a, res = uninterrupted
    html = (a / "report.html").read_text()
    data = json.loads((a / "report.json").read_text())
    assert render_html(data).split("report built")[0] == html.split("report built")[0]  # the page is its JSON
    for text in ("Table 1", "Table 2: GenEval-Shapes", "Table 3: GEdit-Shapes", "Speed", "data:image/png;base64",
                 "hyperbagel train teacher", "Answers: plain and speculative", "acceptance by draft position"):
        assert text in html or text.lower() in html.lower(), text
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    tables = paper_tables(data)
    assert "| hyper-bagel |" in tables and "| teacher |" in tables and "dmdo-6" in tables and "refl-1" in tables
    grid = data["grids"]["generate"]
    assert [r["row"] for r in grid["rows"]][0] == "teacher" and all(r["images"][0] for r in grid["rows"])
    assert all(s["status"] == "done" and s["command"] and "seconds" in s for s in data["stages"])
    from hyperbagel.cli import main

    (a / "report.html").unlink()
    assert main(["report", str(a), "--tables"]) == 0
    assert (a / "report.html").is_file() and "Table 2" in capsys.readouterr().out


def test_finished_training_stage_with_other_settings_is_refused(uninterrupted):
    a, _ = uninterrupted
    with pytest.raises(HyperBagelError, match="teacher .* other settings"):
        run_quickstart(TEST.replace(teacher_steps=3), a)


def test_starts_from_a_pretrained_teacher(uninterrupted, tmp_path):
    """``--teacher``: a shipped teacher is checked and copied in, no autoencoder or teacher is trained, the stages
    after it train from it; a run begun from one teacher refuses another, and a damaged one is refused by name."""
    from hyperbagel.pretrained.ship import ship

    a, _ = uninterrupted
    shipped, c = tmp_path / "shipped", tmp_path / "c"
    ship(a / "teacher", shipped, [], "hyperbagel train teacher --preset micro")
    cfg = TEST.replace(teacher_from=str(shipped))
    stages = [s.name for s in plan(cfg, c)]
    assert stages[0] == "pretrained-teacher" and "vae" not in stages and "teacher" not in stages
    assert f"--vae {c}/teacher/ae.safetensors" in {s.name: s for s in plan(cfg, c)}["reward"].command
    res = run_quickstart(cfg, c, stop_after="reward")  # the reward model reads the copied teacher's autoencoder
    assert [s["status"] for s in res.stages] == ["ran"] * (stages.index("reward") + 1)
    for f in shipped.iterdir():
        assert (c / "teacher" / f.name).read_bytes() == f.read_bytes(), f.name
    assert not (c / "vae").exists() and len(_history(c / "distill-cfg")) == TEST.cfg_steps
    assert {s["status"] for s in run_quickstart(cfg, c, stop_after="distill-cfg").stages} == {"cached"}

    ship(a / "teacher", shipped, [], "hyperbagel train teacher --preset micro", bf16=False)  # other weights
    with pytest.raises(HyperBagelError, match="pretrained-teacher .* other settings"):
        run_quickstart(cfg, c)
    with (shipped / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(HyperBagelError, match="tokenizer.json does not match its SHA-256"):
        run_quickstart(cfg, tmp_path / "d")
    with pytest.raises(HyperBagelError, match="model folder not found"):
        plan(TEST.replace(teacher_from=str(tmp_path / "nothing")), c)


def test_train_teacher_flag_trains_instead_of_copying(tmp_path, capsys):
    """``tiny`` starts from the shipped teacher; ``--train-teacher`` plans the autoencoder and a teacher instead, and
    asking for both a teacher to copy and one to train is refused."""
    from hyperbagel.cli import main
    from hyperbagel.quickstart import TINY

    assert TINY.teacher_from == "shapes-teacher"
    assert main(["quickstart", "--preset", "tiny", "--train-teacher", "--list", "--out", str(tmp_path)]) == 0
    listed = capsys.readouterr().out.split()
    assert "vae" in listed and "teacher" in listed and "pretrained-teacher" not in listed
    assert main(["quickstart", "--train-teacher", "--teacher", "shapes-teacher", "--list"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_time_left_scales_by_measured_stages_only(tmp_path):
    """A stage without an estimate (the pretrained teacher's copy, done in no time) does not shrink the time left."""
    import io

    from hyperbagel.quickstart import Display

    stages = plan(SMOKE.replace(teacher_from=str(tmp_path)), tmp_path / "run")
    estimates = {s.name: 60.0 for s in stages[1:]}
    shown = Display(stages, estimates, io.StringIO())
    before = shown._left(1)
    shown.finish(0, stages[0], 0.0)
    assert stages[0].name == "pretrained-teacher" and shown._left(1) == before
    shown.finish(1, stages[1], 120.0)  # twice its estimate: the rest is expected to take twice as long too
    assert shown._left(2) == 2 * 60.0 * (len(stages) - 2)


def test_missing_commands_are_skipped_and_said(monkeypatch, tmp_path):
    import hyperbagel.quickstart as qs

    real = qs._subcommands

    def without_adp(parser, group):
        return {k: v for k, v in real(parser, group).items() if k != "adp"}

    monkeypatch.setattr(qs, "_subcommands", without_adp)
    stages = {s.name: s for s in plan(TEST, tmp_path)}
    assert "does not exist" in stages["distill-adp"].unavailable
    assert "needs distill-adp" in stages["distill-refl"].unavailable
    assert stages["reward"].unavailable is None
    bench = " ".join(stages["bench-generate"].argv)
    assert "dmdo=" in bench and "adp=" not in bench and "refl=" not in bench
    assert "/distill-dmdo" in stages["showcase"].command


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="teacher_steps"):
        MICRO.replace(teacher_steps=0)
    with pytest.raises(ValueError, match="variants"):
        MICRO.replace(variants=("eagle3",))
    with pytest.raises(ValueError, match="teacher_from"):
        MICRO.replace(teacher_from="")
    with pytest.raises(ValueError, match="unknown QuickstartConfig fields"):
        QuickstartConfig.from_dict({"teacher_step": 3})
    assert QuickstartConfig.from_dict(MICRO.to_dict()) == MICRO
