"""Regions, relations, captions and the vocabulary."""

import numpy as np
import pytest

from hyperbagel.world.captions import (
    CaptionError,
    Layout,
    caption,
    layout_of,
    parse_caption,
    scene_for_caption,
    scene_for_layout,
)
from hyperbagel.world.regions import region_of, relations
from hyperbagel.world.scene import Obj, Scene, is_valid, sample_scene, scene_from_json
from hyperbagel.world.suites import load_suite
from hyperbagel.world.tasks import edit, t2i, vqa
from hyperbagel.world.tasks.think import think_plan
from hyperbagel.world.vocab import SPECIAL_TOKENS, all_words, join_words, split_words


def test_regions():
    assert region_of(5, 5, 64) == "top left"
    assert region_of(32, 5, 64) == "top"
    assert region_of(32, 32, 64) == "center"
    assert region_of(5, 32, 64) == "left"
    assert region_of(60, 60, 64) == "bottom right"
    assert region_of(21.0, 21.0, 64) == "top left" and region_of(21.5, 21.5, 64) == "center"
    assert region_of(10.5, 5, 32) == "top left" and region_of(11, 5, 32) == "top"


def test_relations_follow_genevals_rule():
    a, b = (10, 30, 12, 12), (40, 30, 12, 12)
    assert relations(a, b) == {"left of"} and relations(b, a) == {"right of"}
    assert relations((30, 5, 12, 12), (30, 50, 12, 12)) == {"above"}
    # 45°: each component is 1/√2 ≈ 0.707 before shrinking; shrinking by 0.1 × 24 = 2.4 px of 20 leaves ≈ 0.62 > 0.5.
    assert relations((10, 10, 12, 12), (30, 30, 12, 12)) == {"left of", "above"}
    # close boxes: the shrink (0.1 × 40 = 4 px) of a 5 px offset leaves 0.2 < 0.5 → no relation
    assert relations((30, 30, 20, 20), (35, 30, 20, 20)) == set()
    assert relations(a, a) == set()


def test_caption_matches_the_contract_example():
    scene = Scene(
        (
            Obj("circle", "red", "large", 2, 1),  # centre (12, 11): top left
            Obj("square", "blue", "small", 26, 26),  # centre (32, 32): center
            Obj("triangle", "white", "small", 26, 50),  # centre (32, 56): bottom
        )
    )
    text = "a large red circle at the top left, a small blue square in the center"
    text += " and a small white triangle at the bottom."
    assert is_valid(scene) and caption(scene) == text
    assert caption(Scene(scene.objects[:1])) == "a large red circle at the top left."
    assert (
        caption(Scene(scene.objects[:2])) == "a large red circle at the top left and a small blue square in the center."
    )
    assert (
        caption(Scene(scene.objects[:1], background="gray"))
        == "a large red circle at the top left on a gray background."
    )


def test_reading_order_is_row_then_x():
    scene = Scene((Obj("square", "red", "small", 40, 2), Obj("circle", "blue", "small", 2, 6)))
    assert caption(scene) == "a small blue circle at the top left and a small red square at the top right."


@pytest.mark.parametrize("resolution", [64, 32])
def test_caption_scene_caption_round_trip(resolution):
    rng = np.random.default_rng(resolution)
    for _ in range(1000):
        scene = sample_scene(rng, resolution, background=("black", "gray")[int(rng.integers(2))])
        text = caption(scene)
        layout = parse_caption(text)
        assert layout == layout_of(scene)
        rebuilt = scene_for_caption(text, rng, resolution)
        assert is_valid(rebuilt) and caption(rebuilt) == text
        assert layout_of(scene_for_layout(layout, rng, resolution)) == layout


def test_parse_caption_rejects_non_captions():
    for bad in ["a large red circle at the top left", "a huge red circle at the top left.", "hello.", ".",
                "a small red circle in the top.", "a small red circle at the center."]:  # fmt: skip
        with pytest.raises(CaptionError):
            parse_caption(bad)
    with pytest.raises(CaptionError):  # five objects
        parse_caption(", ".join(["a small red circle at the top"] * 5) + ".")
    with pytest.raises(CaptionError):  # four large objects cannot share one corner region
        scene_for_layout(Layout((("square", "red", "large", "top left"),) * 4), np.random.default_rng(0))


def _world_texts():
    rng = np.random.default_rng(0)
    for item in load_suite("geneval-shapes"):
        yield item["prompt"]
        yield think_plan(item, rng)[0]
    for item in load_suite("gedit-shapes"):
        yield item["instruction"]
        yield caption(scene_from_json(item["target"]))
    for item in load_suite("vqa-shapes"):
        yield item["question"]
        yield item["answer"]
    for _ in range(300):
        yield caption(sample_scene(rng, background="gray"))
        yield t2i.caption_prompt(sample_scene(rng))["prompt"]
    for tag in edit.EDIT_TAGS:
        for prompt in t2i.all_prompts(t2i.TAGS[edit.EDIT_TAGS.index(tag)]):
            yield prompt["prompt"]
        for _ in range(50):
            yield edit.sample_edit_item(rng, tag)["instruction"]
    gray = sample_scene(rng, background="gray")
    yield edit.instruction(gray, edit.sample_edit(rng, gray, "background")[0])  # make the background black
    for template in vqa.TEMPLATES:
        for answer in vqa.ANSWERS[template]:
            yield vqa.sample_question(rng, template, answer)["question"]
            yield answer


def test_vocabulary_covers_every_text_and_round_trips():
    vocab = set(all_words())
    assert len(vocab) == len(all_words()) and all_words()[:4] == SPECIAL_TOKENS
    seen = set()
    for text in _world_texts():
        words = split_words(text)
        assert set(words) <= vocab, (text, set(words) - vocab)
        assert join_words(words) == text
        seen.update(words)
    assert seen == vocab - set(SPECIAL_TOKENS)  # and no word is dead
    chat = ["<|im_start|>", "describe", "the", "image", ".", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    assert split_words(join_words(chat)) == chat
