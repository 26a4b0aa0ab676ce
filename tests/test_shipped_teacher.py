"""The shipped teacher (``shapes-teacher``): its files match their SHA-256; it reproduces the vqa-shapes score its
card records (all 900 items, greedy, fp32: 38 s on a two-core AVX2 machine); and issue 17's bar, 64 fixed
vqa-shapes questions (every 11th question of the suite, all seven templates) answered with accuracy ≥ 0.85.

The bar is kept as the issue states it. Where the shipped teacher's own card says it scores below it on vqa-shapes,
that test is an expected failure, strict: it still runs, and a teacher that passes it while its card says otherwise
fails the suite. Until the long run has been shipped (docs/teacher.md, "Scoring and shipping it"), the folder is not
in the package and these tests are skipped, saying so."""

import json

import pytest
import torch

from hyperbagel.pretrained import HERE, resolve, verify
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json
from hyperbagel.world.suites import load_suite

FOLDER = HERE / "shapes-teacher"
SHIPPED = (FOLDER / "config.json").is_file()
CARD_VQA = FOLDER / "scores-vqa-shapes.json"
BAR = 0.85
card_accuracy = json.loads(CARD_VQA.read_text())["overall"] if CARD_VQA.is_file() else None
pytestmark = pytest.mark.skipif(not SHIPPED, reason="shapes-teacher is not shipped yet")


def test_shipped_teacher_matches_its_hashes():
    assert resolve("shapes-teacher") == FOLDER
    assert set(verify(FOLDER)) >= {"ema.safetensors", "ae.safetensors", "config.json", "tokenizer.json",
                                   "MODEL_CARD.md", "scores-vqa-shapes.json"}


def test_shipped_teacher_reproduces_its_card_on_vqa_shapes(tmp_path):
    from hyperbagel.eval.model_eval import EvalSettings, evaluate
    from hyperbagel.pipeline import Pipeline

    card = json.loads(CARD_VQA.read_text())
    scores = evaluate(Pipeline.from_pretrained("shapes-teacher"), "shapes-teacher",
                      EvalSettings("vqa-shapes", tmp_path, progress=False))  # eval-model's defaults, as shipped
    assert scores["overall"] == pytest.approx(card["overall"], abs=0.01)
    assert scores["description_exact"] == pytest.approx(card["description_exact"], abs=0.01)


@pytest.mark.xfail(card_accuracy is not None and card_accuracy < BAR, strict=True,
                   reason=f"issue 17 (blocked): the shipped teacher's card records vqa-shapes {card_accuracy}, "
                          f"below the bar of {BAR}")
def test_shipped_teacher_answers_the_fixed_questions():
    from hyperbagel.pipeline import Pipeline

    questions = [item for item in load_suite("vqa-shapes") if item["template"] != "describe"][::11][:64]
    assert len(questions) == 64 and len({q["template"] for q in questions}) == 7
    pipe = Pipeline.from_pretrained("shapes-teacher")
    images = [render(scene_from_json(q["scene"])) for q in questions]
    answers = pipe.understand(images, [q["question"] for q in questions], max_new_tokens=8).texts
    accuracy = sum(a.strip() == q["answer"] for a, q in zip(answers, questions)) / len(questions)
    assert accuracy >= BAR, f"accuracy {accuracy:.3f} on the 64 fixed questions"


def test_commands_default_to_the_shipped_teacher(tmp_path, capsys):
    """Every command that takes a model folder uses the shipped teacher when given none; so do the recipes'
    configs and ``hyperbagel quickstart`` (tiny)."""
    from PIL import Image

    from hyperbagel.cli import main
    from hyperbagel.model.checkpoint import load_pretrained
    from hyperbagel.quickstart import TINY, plan
    from hyperbagel.recipes.distill_common import DistillConfig, load_setup
    from hyperbagel.recipes.draft import DraftTrainConfig

    question = next(q for q in load_suite("vqa-shapes") if q["template"] != "describe")
    Image.fromarray(render(scene_from_json(question["scene"]))).save(tmp_path / "scene.png")
    assert main(["understand", str(tmp_path / "scene.png"), question["question"], "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip()
    teacher, _ = load_pretrained(FOLDER)
    assert torch.equal(next(load_setup(DistillConfig()).pipe.model.parameters()), next(teacher.parameters()))
    assert DraftTrainConfig().target == "shapes-teacher"
    assert plan(TINY, tmp_path / "run")[0].name == "pretrained-teacher"


def test_its_autoencoder_loads_on_its_own():
    """``train reward``'s default ``--vae`` (and the quickstart's, started from this teacher) is the folder's
    ``ae.safetensors``, which embeds no config of its own: it is read from the folder's ``config.json``."""
    from hyperbagel.commands.distill import _default_autoencoder
    from hyperbagel.model.checkpoint import load_pretrained
    from hyperbagel.recipes.vae import load_autoencoder

    assert _default_autoencoder() == FOLDER / "ae.safetensors"
    alone, (_, inside) = load_autoencoder(_default_autoencoder()), load_pretrained(FOLDER)
    assert alone.config == inside.config
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), inside.state_dict().values()))
