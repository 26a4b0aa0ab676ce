"""Task generators: GenEval-format prompts and checks, edits applied by hand, VQA answers and their balance."""

from collections import Counter

import numpy as np
import pytest

from hyperbagel.world import palette as P
from hyperbagel.world.detect import detect, detection_of
from hyperbagel.world.render import render
from hyperbagel.world.scene import Obj, Scene, is_valid, sample_scene, scene_from_json, scene_to_json
from hyperbagel.world.suites import load_suite
from hyperbagel.world.tasks import edit, t2i, vqa
from hyperbagel.world.tasks.edit import Edit, apply_edit, check_edit, instruction, make_item, referring_phrase
from hyperbagel.world.tasks.think import plan_agrees, think_plan
from hyperbagel.world.vocab import split_words

# ---------------------------------------------------------------------------------------------------- t2i


def test_prompts_have_genevals_format():
    assert t2i.counting("circle", 3) == {
        "tag": "counting",
        "include": [{"class": "circle", "count": 3}],
        "exclude": [{"class": "circle", "count": 4}],
        "prompt": "three circles",
    }
    assert t2i.position("circle", "left of", "square") == {
        "tag": "position",
        "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
        "prompt": "a circle left of a square",
    }
    assert t2i.color_attr("circle", "red", "square", "blue")["prompt"] == "a red circle and a blue square"
    sizes = {tag: len(t2i.all_prompts(tag)) for tag in t2i.TAGS}
    assert sizes == {
        "single_object": 3,
        "two_object": 6,
        "counting": 9,
        "colors": 21,
        "position": 24,
        "color_attr": 294,
    }


def _d(*objs, background="black"):
    return detection_of(Scene(tuple(objs), background))


RED_BIG_CIRCLE = Obj("circle", "red", "large", 2, 2)
BLUE_SMALL_CIRCLE = Obj("circle", "blue", "small", 40, 40)
SQUARE = Obj("square", "green", "small", 40, 4)


def test_t2i_checks_on_hand_scenes():
    check = t2i.check_t2i
    assert check(t2i.single_object("circle"), _d(RED_BIG_CIRCLE, SQUARE))
    assert not check(t2i.single_object("triangle"), _d(RED_BIG_CIRCLE, SQUARE))
    assert check(t2i.two_object("circle", "square"), _d(RED_BIG_CIRCLE, SQUARE))
    assert not check(t2i.two_object("circle", "square"), _d(RED_BIG_CIRCLE))
    assert check(t2i.counting("circle", 2), _d(RED_BIG_CIRCLE, BLUE_SMALL_CIRCLE, SQUARE))
    assert not check(t2i.counting("circle", 2), _d(RED_BIG_CIRCLE))
    # colours: the largest circle decides
    assert check(t2i.colors("circle", "red"), _d(RED_BIG_CIRCLE, BLUE_SMALL_CIRCLE))
    assert not check(t2i.colors("circle", "blue"), _d(RED_BIG_CIRCLE, BLUE_SMALL_CIRCLE))
    # position: the circle at x≈12 is left of the square at x≈46 (and above it? dy = 12 − 10 = 2: no)
    assert check(t2i.position("circle", "left of", "square"), _d(RED_BIG_CIRCLE, SQUARE))
    assert not check(t2i.position("circle", "right of", "square"), _d(RED_BIG_CIRCLE, SQUARE))
    # every circle must stand in the relation: the small circle at (46, 46) is below the square, not left of it
    assert not check(t2i.position("circle", "left of", "square"), _d(RED_BIG_CIRCLE, BLUE_SMALL_CIRCLE, SQUARE))
    assert check(t2i.color_attr("circle", "blue", "square", "green"), _d(RED_BIG_CIRCLE, BLUE_SMALL_CIRCLE, SQUARE))
    assert not check(t2i.color_attr("circle", "green", "square", "green"), _d(RED_BIG_CIRCLE, SQUARE))


def test_strict_check_wants_nothing_extra():
    item = t2i.color_attr("circle", "red", "square", "green")
    assert t2i.check_strict(item, _d(RED_BIG_CIRCLE, SQUARE))
    assert t2i.check_t2i(item, _d(RED_BIG_CIRCLE, SQUARE, BLUE_SMALL_CIRCLE))
    assert not t2i.check_strict(item, _d(RED_BIG_CIRCLE, SQUARE, BLUE_SMALL_CIRCLE))
    assert not t2i.check_strict(item, _d(RED_BIG_CIRCLE, SQUARE, background="gray"))
    scene = Scene((RED_BIG_CIRCLE, SQUARE))
    assert t2i.check_strict(t2i.caption_prompt(scene), detection_of(scene))
    assert not t2i.check_strict(t2i.caption_prompt(scene), _d(RED_BIG_CIRCLE))


@pytest.mark.parametrize("tag", t2i.TAGS)
def test_scenes_for_prompts_pass(tag):
    rng = np.random.default_rng(0)
    for item in t2i.all_prompts(tag)[:30]:
        for extras in (True, False):
            scene = t2i.scene_for_prompt(item, rng, extras=extras)
            d = detect(render(scene))
            assert is_valid(scene) and t2i.check_t2i(item, d)
            assert extras or t2i.check_strict(item, d)
        plan, planned = think_plan(item, rng)
        assert plan_agrees(plan, detection_of(planned)) and t2i.check_t2i(item, detection_of(planned))
    sizes = [len(t2i.scene_for_prompt(t2i.all_prompts(tag)[0], rng).objects) for _ in range(100)]
    assert tag == "counting" or max(sizes) > min(sizes)  # extras vary the scenes


# ---------------------------------------------------------------------------------------------------- edits

CIRCLE = Obj("circle", "red", "large", 4, 4)  # box [4, 24)², centre (14, 14): top left
SQ = Obj("square", "blue", "small", 44, 6)  # box [44, 56) × [6, 18): top right
TRI = Obj("triangle", "white", "small", 8, 44)  # box [8, 20) × [44, 56): bottom left
SOURCE = Scene((CIRCLE, SQ, TRI))


def _hand(e: Edit, text: str, expected: Scene):
    assert instruction(SOURCE, e) == text
    assert apply_edit(SOURCE, e) == expected and is_valid(expected)
    item = make_item(SOURCE, e, expected)
    assert scene_from_json(item["target"]) == expected and edit.edit_from_json(item["edit"]) == e
    assert check_edit(item, render(expected)).o == 1.0
    assert check_edit(item, render(SOURCE)).sc == 0.0  # doing nothing is never a successful edit
    return item


def test_recolor_by_hand():
    _hand(
        Edit("recolor", SQ, color="red"),
        "make the square red",
        Scene((CIRCLE, Obj("square", "red", "small", 44, 6), TRI)),
    )


def test_reshape_by_hand():
    e = Edit("reshape", CIRCLE, shape="triangle")
    _hand(e, "turn the circle into a triangle", Scene((Obj("triangle", "red", "large", 4, 4), SQ, TRI)))


def test_remove_by_hand():
    _hand(Edit("remove", TRI), "remove the triangle", Scene((CIRCLE, SQ)))
    assert apply_edit(Scene((CIRCLE,)), Edit("remove", CIRCLE)) is None  # a scene keeps at least one object


def test_background_by_hand():
    _hand(Edit("background", background="gray"), "make the background gray", Scene((CIRCLE, SQ, TRI), "gray"))


def test_add_by_hand():
    # "bottom" cell centre (32, 53.3); a large box's ideal corner (22, 43.3) → (22, 43), centre (32, 53). The triangle
    # ends at x = 20, so x = 22 keeps the 2 px gap; the circle ends at y = 24, far above.
    e = Edit("add", shape="square", color="green", size="large", region="bottom")
    item = _hand(
        e, "add a large green square at the bottom", Scene((CIRCLE, SQ, TRI, Obj("square", "green", "large", 22, 43)))
    )
    # any free spot inside the region passes; outside it, or overlapping, fails
    assert check_edit(item, render(Scene((CIRCLE, SQ, TRI, Obj("square", "green", "large", 30, 42))))).sc == 1.0
    assert check_edit(item, render(Scene((CIRCLE, SQ, TRI, Obj("square", "green", "large", 40, 24))))).sc == 0.0
    assert apply_edit(Scene((CIRCLE, SQ, TRI, Obj("circle", "red", "small", 40, 40))), e) is None  # already four
    e = Edit("add", shape="square", color="green", size="small", region="center")
    expected = Scene((CIRCLE, SQ, TRI, Obj("square", "green", "small", 26, 26)))  # centre (32, 32): exact
    _hand(e, "add a small green square in the center", expected)


def test_move_by_hand():
    # "bottom right" cell centre (53.3, 53.3); the large circle's ideal corner (43.3, 43.3) → (43, 43); the square ends
    # at y = 18 and the triangle at x = 20, both at least 2 px away.
    e = Edit("move", CIRCLE, region="bottom right")
    item = _hand(e, "move the circle to the bottom right", Scene((Obj("circle", "red", "large", 43, 43), SQ, TRI)))
    assert check_edit(item, render(Scene((Obj("circle", "red", "large", 40, 40), SQ, TRI)))).sc == 1.0
    assert check_edit(item, render(Scene((Obj("circle", "red", "large", 26, 40), SQ, TRI)))).sc == 0.0  # bottom
    # the square cannot go to the top left: the circle fills that cell
    assert apply_edit(SOURCE, Edit("move", SQ, region="top left")) is None
    assert apply_edit(SOURCE, Edit("move", SQ, region="top right")) is None  # already there


def test_referring_phrases_are_unique():
    a, b = Obj("circle", "red", "small", 2, 2), Obj("circle", "blue", "small", 30, 2)
    assert referring_phrase(Scene((a, SQ)), a) == "the circle"
    assert referring_phrase(Scene((a, b)), a) == "the red circle"
    twin = Obj("circle", "red", "small", 30, 30)
    assert referring_phrase(Scene((a, twin)), a) is None
    assert apply_edit(Scene((a, twin)), Edit("remove", a)) is None
    assert all(e.obj != a for e in edit.candidate_edits(Scene((a, twin)), "recolor"))


def test_edit_check_preservation():
    item = make_item(
        SOURCE, Edit("recolor", SQ, color="red"), Scene((CIRCLE, Obj("square", "red", "small", 44, 6), TRI))
    )
    good = Scene((CIRCLE, Obj("square", "red", "small", 45, 7), TRI))  # centre moved √2 px: still in place
    assert check_edit(item, render(good)).sc == 1.0
    far = Scene((CIRCLE, Obj("square", "red", "small", 47, 6), TRI))  # 3 px: not in place
    assert check_edit(item, render(far)).sc == 0.0
    drift = Scene((Obj("circle", "red", "large", 7, 4), Obj("square", "red", "small", 44, 6), TRI))  # circle moved
    assert check_edit(item, render(drift)).preserved is False
    extra = Scene((CIRCLE, Obj("square", "red", "small", 44, 6), TRI, Obj("circle", "cyan", "small", 40, 40)))
    assert check_edit(item, render(extra)).sc == 0.0
    noisy = render(Scene((CIRCLE, Obj("square", "red", "small", 44, 6), TRI)))
    noisy[30:34, 30:34] = (90, 90, 0)
    score = check_edit(item, noisy)
    assert score.sc == 1.0 and score.pq == pytest.approx(1 - 16 / 64**2) and score.o == pytest.approx(score.pq**0.5)
    assert score.masked_l1 > 0 and score.l1_target > 0


@pytest.mark.parametrize("tag", edit.EDIT_TAGS)
def test_sampled_edits_are_consistent(tag):
    rng = np.random.default_rng(1)
    for _ in range(100):
        item = edit.sample_edit_item(rng, tag)
        source, target = scene_from_json(item["source"]), scene_from_json(item["target"])
        e = edit.edit_from_json(item["edit"])
        assert is_valid(source) and is_valid(target) and source != target
        assert apply_edit(source, e) == target and instruction(source, e) == item["instruction"]


# ---------------------------------------------------------------------------------------------------- VQA


def test_vqa_answers_on_a_hand_scene():
    scene = Scene((CIRCLE, SQ, TRI, Obj("circle", "cyan", "small", 44, 30)))
    answers = {
        "is there a red circle?": "yes",
        "is there a red square?": "no",
        "how many circles are there?": "two",
        "how many triangles are there?": "one",
        "what color is the square?": "blue",
        "what color is the circle?": None,  # two circles
        "what shape is the white object?": "triangle",
        "where is the red circle?": "top left",
        "where is the triangle?": "bottom left",
        "where is the circle?": None,
        "what shape is right of the triangle?": None,  # the square and the cyan circle both do
        "what shape is below the square?": None,  # the cyan circle (50, 36) and the triangle (14, 50) both are
        # the triangle (14, 50) is below the red circle (14, 14); the cyan circle (50, 36) is not: its shrunk dy is
        # (22 − 3.2) / 42.2 ≈ 0.45 < 0.5
        "what shape is below the red circle?": "triangle",
        "what shape is above the cyan circle?": "square",
        "are there more circles than squares?": "yes",
        "are there more squares than triangles?": "no",
        "what is this?": None,
    }
    for question, answer in answers.items():
        assert vqa.answer_for(question, scene) == answer, question
    assert vqa.answer_for("describe the image.", scene).startswith("a large red circle at the top left")


def test_free_scene_questions_take_an_object_count():
    """Training curricula ask exist and compare questions on scenes of a given size; the answer still holds."""
    rng = np.random.default_rng(0)
    for template in vqa.FREE_SCENE:
        for n in (1, 2):
            for answer in vqa.ANSWERS[template]:
                item = vqa.sample_question(rng, template, answer, n_objects=n)
                scene = scene_from_json(item["scene"])
                assert len(scene.objects) == n and vqa.answer_for(item["question"], scene) == answer
    with pytest.raises(ValueError, match="n_objects"):
        vqa.sample_question(rng, "color", n_objects=1)


def test_vqa_suite_is_balanced_and_correct():
    items = load_suite("vqa-shapes")
    by_template = Counter(item["template"] for item in items)
    assert by_template == {**{t: 100 for t in vqa.TEMPLATES}, vqa.DESCRIBE: 200}
    for template in vqa.TEMPLATES:
        counts = Counter(item["answer"] for item in items if item["template"] == template)
        assert set(counts) == set(vqa.ANSWERS[template])
        assert max(counts.values()) - min(counts.values()) <= 1, (template, counts)
    for item in items:
        scene = scene_from_json(item["scene"])
        assert is_valid(scene) and vqa.answer_for(item["question"], scene) == item["answer"]
    tokens = [len(split_words(item["answer"])) for item in items if item["template"] == vqa.DESCRIBE]
    assert 20 <= min(tokens) and max(tokens) <= 60


def test_vqa_scoring_rules():
    item = {"template": "count", "answer": "two"}
    assert vqa.is_correct(item, " Two. ") and not vqa.is_correct(item, "2")
    scene = sample_scene(np.random.default_rng(0))
    desc = vqa.sample_description(np.random.default_rng(0))
    assert vqa.is_correct(desc, desc["answer"]) and not vqa.is_correct(desc, "a circle.")
    assert scene_to_json(scene_from_json(scene_to_json(scene))) == scene_to_json(scene)
    assert P.NUMBER_WORDS[2] == "two"
