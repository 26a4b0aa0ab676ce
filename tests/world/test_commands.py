"""The world and eval commands run through the CLI."""

import json

from hyperbagel.cli import build_parser, main


def test_world_and_eval_commands(tmp_path, capsys):
    assert main(["world", "show", "--out", str(tmp_path / "sheet.png"), "--n", "2"]) == 0
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    assert main(["world", "oracle", "--suite", "geneval-shapes", "--out", str(tmp_path / "g"), "--limit", "6"]) == 0
    assert main(["eval", "geneval", str(tmp_path / "g"), "--json", str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["overall"] == 1.0
    assert main(["world", "chance", "--suite", "gedit-shapes", "--out", str(tmp_path / "e"), "--limit", "6"]) == 0
    assert main(["eval", "gedit", str(tmp_path / "e"), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["overall"] < 1.0
    assert main(["world", "oracle", "--suite", "vqa-shapes", "--out", str(tmp_path / "v"), "--limit", "9"]) == 0
    assert main(["eval", "vqa", str(tmp_path / "v" / "predictions.jsonl"), "--json", str(tmp_path / "v.json")]) == 0
    scores = json.loads((tmp_path / "v.json").read_text())
    assert scores["accuracy"] == 1.0 and scores["description_exact"] == 1.0
    capsys.readouterr()
    assert main(["eval", "geneval", str(tmp_path / "nothing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_demo_and_suites_check(tmp_path, capsys):
    assert main(["world", "demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "geneval-shapes" in out and "oracle" in out and "chance" in out
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    assert all(v["overall"] == 1.0 for k, v in scores.items() if k.startswith("oracle/"))
    assert (tmp_path / "demo" / "contact-sheet.png").exists()
    assert main(["world", "suites", "--check"]) == 0
    help_text = build_parser().format_help()
    assert "world" in help_text and "eval" in help_text
