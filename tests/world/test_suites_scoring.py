"""Suites regenerate byte-identically; the oracle scores 1.0 on all three, chance far below; scorers can fail."""

import json
from collections import Counter

import numpy as np
import pytest

from hyperbagel.errors import HyperBagelError
from hyperbagel.world import oracle, scoring, suites
from hyperbagel.world.folders import Record, read_records, write_record
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene, scene_from_json
from hyperbagel.world.tasks import edit, t2i


def test_suites_regenerate_byte_identically(tmp_path):
    for name in suites.SUITES:
        stored = suites.suite_path(name).read_bytes()
        assert suites.suite_text(suites.build_suite(name)).encode() == stored, name
    suites.write_suites(tmp_path)
    assert suites.check_suites(tmp_path) == []
    path = suites.suite_path("gedit-shapes", tmp_path)
    path.write_text(path.read_text().replace("remove", "delete", 1))
    assert suites.check_suites(tmp_path) == ["gedit-shapes"]


def test_suite_sizes_and_formats():
    geneval = suites.load_suite("geneval-shapes")
    assert Counter(item["tag"] for item in geneval) == {tag: 100 for tag in t2i.TAGS}
    assert all(list(item)[:2] == ["tag", "include"] and "prompt" in item for item in geneval)
    assert [item["tag"] for item in geneval[:6]] == list(t2i.TAGS)  # round-robin: every prefix covers every tag
    gedit = suites.load_suite("gedit-shapes")
    assert Counter(item["tag"] for item in gedit) == {tag: 50 for tag in edit.EDIT_TAGS}
    assert len({item["id"] for item in gedit}) == 300
    assert len(suites.load_suite("vqa-shapes", limit=9)) == 9
    with pytest.raises(HyperBagelError):
        suites.load_suite("mme")


def test_oracle_scores_exactly_one_on_every_full_suite():
    geneval = scoring.score_geneval(oracle.geneval_records(suites.load_suite("geneval-shapes"), "oracle"))
    assert geneval["n_images"] == 2400
    assert geneval["overall"] == 1.0 and geneval["strict"]["overall"] == 1.0
    assert set(geneval["tags"].values()) == {1.0}
    gedit = scoring.score_gedit(oracle.gedit_records(suites.load_suite("gedit-shapes"), "oracle"))
    assert gedit["n_images"] == 300 and gedit["overall"] == 1.0 and gedit["SC"]["overall"] == 1.0
    assert gedit["masked_l1"] == 0.0 and gedit["l1_target"] == 0.0
    items = suites.load_suite("vqa-shapes")
    predictions = {p["id"]: p["answer"] for p in oracle.vqa_predictions(items, "oracle")}
    vqa = scoring.score_vqa(predictions, items)
    assert vqa["accuracy"] == 1.0 and vqa["description_exact"] == 1.0 and vqa["n_questions"] == 700
    assert set(vqa["templates"].values()) == {1.0}


def test_gedit_splits_sc_into_the_edit_done_and_everything_else_kept():
    items = [i for i in suites.load_suite("gedit-shapes") if i["tag"] == "recolor"][:8]
    copy = [Record(i, (render(scene_from_json(i["source"])),)) for i in items]  # the source, unedited
    scores = scoring.score_gedit(copy)
    assert scores["preserved"]["tags"] == {"recolor": 1.0} and scores["edit_ok"]["tags"] == {"recolor": 0.0}
    assert scores["SC"]["overall"] == 0.0
    oracle_scores = scoring.score_gedit(oracle.gedit_records(items, "oracle"))
    assert oracle_scores["preserved"]["overall"] == oracle_scores["edit_ok"]["overall"] == 1.0


def test_chance_scores_far_below_one():
    geneval = scoring.score_geneval(oracle.geneval_records(suites.load_suite("geneval-shapes", 120), "chance"))
    assert geneval["overall"] < 0.35 and geneval["strict"]["overall"] < 0.1
    gedit = scoring.score_gedit(oracle.gedit_records(suites.load_suite("gedit-shapes", 60), "chance"))
    assert gedit["overall"] < 0.1
    items = suites.load_suite("vqa-shapes")
    predictions = {p["id"]: p["answer"] for p in oracle.vqa_predictions(items, "chance")}
    vqa = scoring.score_vqa(predictions, items)
    assert vqa["accuracy"] < 0.45 and vqa["description_exact"] < 0.05


def test_oracle_on_disk_round_trip(tmp_path):
    for suite, benchmark in (("geneval-shapes", "geneval"), ("gedit-shapes", "gedit")):
        out = oracle.write_control("oracle", suite, tmp_path / suite, limit=12)
        scores = scoring.score_geneval_folder(out) if benchmark == "geneval" else scoring.score_gedit_folder(out)
        assert scores["overall"] == 1.0 and scores["model"] == "oracle" and scores["run"]["limit"] == 12
    assert (tmp_path / "gedit-shapes" / "00000" / "source.png").exists()
    assert len(list((tmp_path / "geneval-shapes" / "00003" / "samples").glob("*.png"))) == 4
    path = oracle.write_control("oracle", "vqa-shapes", tmp_path / "vqa", limit=18)
    scores = scoring.score_vqa_file(path)
    assert scores["accuracy"] == 1.0 and scores["n_missing"] == 900 - 18 and scores["model"] == "oracle"


def test_scorers_see_mistakes(tmp_path):
    items = suites.load_suite("geneval-shapes", 6)
    records = oracle.geneval_records(items, "oracle")
    blank = np.zeros((64, 64, 3), dtype=np.uint8)
    spoiled = [Record(records[0].item, (blank,) + records[0].samples[1:])] + records[1:]
    scores = scoring.score_geneval(spoiled)
    assert scores["tags"][items[0]["tag"]] == 0.75 and scores["overall"] == pytest.approx(1 - 0.25 / 6)
    # think-mode plans: agreement is measured against the plan written beside each image
    rng = np.random.default_rng(0)
    scene = sample_scene(rng)
    item = t2i.caption_prompt(scene)
    write_record(tmp_path / "think", 0, item, [render(scene), blank], plans=["wrong plan.", item["prompt"]])
    scores = scoring.score_geneval(read_records(tmp_path / "think"))
    assert scores["overall"] == 0.5 and scores["plan_agreement"] == 0.0 and scores["n_plans"] == 2
    with pytest.raises(HyperBagelError):
        scoring.score_vqa({"nope": "yes"})


def test_result_folder_errors(tmp_path):
    with pytest.raises(HyperBagelError):
        scoring.score_geneval_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HyperBagelError):
        scoring.score_geneval_folder(tmp_path / "empty")
    (tmp_path / "p.jsonl").write_text('{"id": "vqa-00000"}\n')
    with pytest.raises(HyperBagelError):
        scoring.score_vqa_file(tmp_path / "p.jsonl")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "predictions.jsonl").write_text(json.dumps({"id": "vqa-00000", "answer": "yes"}) + "\n")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"model": "m", "sampler": "euler", "nfe": 6}))
    scores = scoring.score_vqa_file(tmp_path / "run" / "predictions.jsonl")
    assert (scores["model"], scores["sampler"], scores["nfe"]) == ("m", "euler", 6)


def test_spread_takes_each_tag_in_turn_with_suite_indices():
    items = [{"t": "a"}, {"t": "b"}, {"t": "a"}, {"t": "c"}, {"t": "b"}]
    assert suites.spread(items, "t", 3) == [(0, items[0]), (1, items[1]), (3, items[3])]
    assert suites.spread(items, "t", 2) == [(0, items[0]), (1, items[1])]
    assert suites.spread(items, "t", 9) == [(0, items[0]), (1, items[1]), (3, items[3]), (2, items[2]), (4, items[4])]
