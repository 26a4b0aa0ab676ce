"""``evaluate``: the guidance scales given reach the sampler and are written into the run's record; vqa-shapes
batches its descriptions apart from its short answers and still writes every prediction in suite order."""

import json

import pytest

from hyperbagel.cli import main
from hyperbagel.eval.model_eval import EvalSettings, batches, evaluate, suite_guidance
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline
from hyperbagel.world import folders
from hyperbagel.world.suites import load_suite


def test_suite_guidance_replaces_only_the_scales_given():
    assert suite_guidance("geneval-shapes") == T2I_GUIDANCE
    assert suite_guidance("gedit-shapes") == EDIT_GUIDANCE
    g = suite_guidance("gedit-shapes", image_scale=2.0)
    assert (g.text_scale, g.image_scale, g.interval) == (EDIT_GUIDANCE.text_scale, 2.0, EDIT_GUIDANCE.interval)


@pytest.mark.parametrize("suite", ["geneval-shapes", "gedit-shapes"])
def test_guidance_reaches_the_sampler_and_the_record(micro_folder, tmp_path, suite):
    pipe = Pipeline.from_pretrained(micro_folder)
    runs = {}
    for name, guidance in (("default", None), ("no-cfg", suite_guidance(suite, text_scale=1.0, image_scale=1.0))):
        settings = EvalSettings(suite, tmp_path / name, limit=1, samples=1, progress=False, guidance=guidance)
        runs[name] = evaluate(pipe, "micro", settings)["run"]
    assert runs["default"]["guidance"]["text_scale"] == 4.0
    assert runs["no-cfg"]["guidance"]["text_scale"] == 1.0
    # without guidance only the conditional branch runs: fewer forwards per image
    assert runs["no-cfg"]["nfe"] < runs["default"]["nfe"]


def test_cli_refuses_guidance_for_understanding(micro_folder, tmp_path, capsys):
    assert main(["eval-model", "--ckpt", str(micro_folder), "--suite", "vqa-shapes", "--out", str(tmp_path),
                 "--text-scale", "2"]) != 0
    assert "image suites" in capsys.readouterr().err


def test_vqa_batches_put_descriptions_together_and_image_suites_keep_their_order():
    items = load_suite("vqa-shapes", 60)
    described = {i for i, it in enumerate(items) if it["template"] == "describe"}
    assert 0 < len(described) < len(items)
    groups = batches(items, 8, "vqa-shapes")
    assert sorted(i for g in groups for i in g) == list(range(len(items)))
    assert all(len(g) <= 8 for g in groups)
    mixed = [g for g in groups if 0 < len(described & set(g)) < len(g)]
    assert len(mixed) <= 1  # only where the short answers run out
    assert batches(items, 8, "geneval-shapes") == [list(range(lo, min(lo + 8, 60))) for lo in range(0, 60, 8)]


def test_vqa_predictions_are_written_in_suite_order(micro_folder, tmp_path):
    items = load_suite("vqa-shapes", 12)  # descriptions at 7 and 8: answered in the last batch, written in place
    assert [i for i, it in enumerate(items) if it["template"] == "describe"] == [7, 8]
    settings = EvalSettings("vqa-shapes", tmp_path, limit=12, batch=4, max_new_tokens=4, progress=False)
    evaluate(Pipeline.from_pretrained(micro_folder), "micro", settings)
    lines = (tmp_path / folders.PREDICTIONS_FILE).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [it["id"] for it in items]
