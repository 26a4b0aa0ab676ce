"""``evaluate``'s guidance: the scales given reach the sampler and are written into the run's record."""

import pytest

from hyperbagel.cli import main
from hyperbagel.eval.model_eval import EvalSettings, evaluate, suite_guidance
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline


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
