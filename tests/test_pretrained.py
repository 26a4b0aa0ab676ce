"""Shipped model folders: short names, shipping a trained folder (bf16 weights, card, hashes), hash checks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperbagel.errors import HyperBagelError
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.pipeline import Pipeline
from hyperbagel.pretrained import resolve, verify
from hyperbagel.pretrained.ship import ship


def test_resolve_takes_folders_and_rejects_unknown_names(tmp_path):
    assert resolve(tmp_path) == tmp_path
    with pytest.raises(HyperBagelError, match="shipped models: shapes-teacher"):
        resolve(tmp_path / "nothing-here")


def test_ship_rounds_to_bf16_writes_card_and_hashes(micro_folder, tmp_path):
    scores = tmp_path / "vqa.json"
    scores.write_text(json.dumps({"benchmark": "vqa-shapes", "overall": 0.5, "description_exact": 0.25,
                                  "tags": {"exist": 0.5}, "n_questions": 7, "n_descriptions": 1}))
    out = tmp_path / "shipped"
    sums = ship(Path(micro_folder), out, [scores], "hyperbagel train teacher --preset micro")
    assert {"ema.safetensors", "ae.safetensors", "config.json", "tokenizer.json", "MODEL_CARD.md"} <= set(sums)
    assert verify(out) == sums
    card = (out / "MODEL_CARD.md").read_text()
    assert "hyperbagel train teacher --preset micro" in card and "| vqa-shapes | 0.500" in card
    shipped, _ = load_pretrained(out)
    trained, _ = load_pretrained(micro_folder)
    for (name, a), (_, b) in zip(shipped.state_dict().items(), trained.state_dict().items()):
        assert torch.equal(a, b.to(torch.bfloat16).float()), name
    answer = Pipeline.from_pretrained(out).understand(np.zeros((64, 64, 3), np.uint8), "describe the image.")
    assert answer.texts and answer.forwards > 0


def test_ships_before_scoring_and_again_with_the_scores(micro_folder, tmp_path):
    out = tmp_path / "shipped"
    ship(Path(micro_folder), out, [], "cmd")
    assert "Not scored yet." in (out / "MODEL_CARD.md").read_text()
    scores = tmp_path / "s.json"
    scores.write_text(json.dumps({"benchmark": "gedit-shapes", "overall": 0.25}))
    sums = ship(Path(micro_folder), out, [scores], "cmd")
    assert "| gedit-shapes | 0.250" in (out / "MODEL_CARD.md").read_text() and "scores-gedit-shapes.json" in sums
    ship(Path(micro_folder), out, [], "cmd")  # shipped again without it: no stale score file stays behind
    assert not list(out.glob("scores-*.json")) and verify(out)


def test_verify_names_a_changed_file(micro_folder, tmp_path):
    out = tmp_path / "shipped"
    ship(Path(micro_folder), out, [], "cmd")
    data = bytearray((out / "tokenizer.json").read_bytes())
    data[-2] ^= 1
    (out / "tokenizer.json").write_bytes(bytes(data))
    with pytest.raises(HyperBagelError, match="tokenizer.json does not match"):
        verify(out)
