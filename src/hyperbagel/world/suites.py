"""The three fixed benchmark suites, generated from one recorded seed and kept in the repository as JSONL.

- ``geneval-shapes``: 100 prompts per text-to-image tag (600 GenEval metadata lines), scored on 4 images each;
- ``gedit-shapes``: 50 edits per edit tag (300), each with source scene, instruction and target scene;
- ``vqa-shapes``: 100 questions per template (700) plus 200 descriptions.

Items are interleaved round-robin over tags, so any prefix (``--limit``) covers every tag. Each item's randomness
comes from its own generator seeded by ``(SUITE_SEED, suite number, tag number, index within tag)``; the choice of
prompts and answers per tag (balanced) from ``(SUITE_SEED, suite number, tag number)``. ``build_suite`` regenerates
the files byte-identically.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from hyperbagel.errors import HyperBagelError
from hyperbagel.world.balance import balanced
from hyperbagel.world.tasks import edit, t2i, vqa

SUITE_SEED = 20250923  # recorded seed of the suites; changing it changes every benchmark number
SUITES: tuple[str, ...] = ("geneval-shapes", "gedit-shapes", "vqa-shapes")
SAMPLES_PER_PROMPT = 4
PER_TAG = {"geneval-shapes": 100, "gedit-shapes": 50, "vqa-shapes": 100}
N_DESCRIPTIONS = 200
SUITE_DIR = Path(__file__).resolve().parent.parent / "data" / "suites"


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([SUITE_SEED, *key])


def _round_robin(blocks: list[list[dict]]) -> list[dict]:
    out = []
    for i in range(max(len(b) for b in blocks)):
        out += [b[i] for b in blocks if i < len(b)]
    return out


def build_suite(name: str) -> list[dict]:
    """The suite's items, regenerated from ``SUITE_SEED``."""
    number = SUITES.index(name) if name in SUITES else None
    if number is None:
        raise HyperBagelError(f"unknown suite {name!r}; the suites are {', '.join(SUITES)}")
    n = PER_TAG[name]
    if name == "geneval-shapes":
        return _round_robin([t2i.sample_prompts(_rng(number, k), tag, n) for k, tag in enumerate(t2i.TAGS)])
    if name == "gedit-shapes":
        blocks = [
            [edit.sample_edit_item(_rng(number, k, i), tag) for i in range(n)] for k, tag in enumerate(edit.EDIT_TAGS)
        ]
        items = _round_robin(blocks)
        for i, item in enumerate(items):
            item["id"] = f"gedit-{i:05d}"
        return items
    blocks = []
    for k, template in enumerate(vqa.TEMPLATES):
        answers = balanced(_rng(number, k), vqa.ANSWERS[template], n)
        blocks.append([vqa.sample_question(_rng(number, k, i), template, a) for i, a in enumerate(answers)])
    k = len(vqa.TEMPLATES)
    descriptions = [vqa.sample_description(_rng(number, k, i)) for i in range(N_DESCRIPTIONS)]
    per_round = N_DESCRIPTIONS // n
    blocks += [descriptions[j::per_round] for j in range(per_round)]
    items = _round_robin(blocks)
    for i, item in enumerate(items):
        item["id"] = f"vqa-{i:05d}"
    return items


def suite_text(items: list[dict]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def suite_path(name: str, directory: Path | None = None) -> Path:
    return (SUITE_DIR if directory is None else Path(directory)) / f"{name}.jsonl"


def write_suites(directory: Path | None = None) -> dict[str, str]:
    """Regenerate every suite file; returns each file's sha256."""
    directory = SUITE_DIR if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name in SUITES:
        text = suite_text(build_suite(name))
        suite_path(name, directory).write_text(text)
        digests[name] = hashlib.sha256(text.encode()).hexdigest()
    return digests


def check_suites(directory: Path | None = None) -> list[str]:
    """Names of the suites whose stored file differs from a fresh regeneration (empty when all match)."""
    bad = []
    for name in SUITES:
        path = suite_path(name, directory)
        if not path.exists() or path.read_text() != suite_text(build_suite(name)):
            bad.append(name)
    return bad


@cache
def _load(name: str) -> tuple[str, ...]:
    if name not in SUITES:
        raise HyperBagelError(f"unknown suite {name!r}; the suites are {', '.join(SUITES)}")
    text = resources.files("hyperbagel").joinpath(f"data/suites/{name}.jsonl").read_text()
    return tuple(text.splitlines())


def spread(items: list[dict], key: str, n: int) -> list[tuple[int, dict]]:
    """``n`` items with their indices, taking each value of ``key`` in turn: the first item of every value in suite
    order, then the second of every value, and so on — a fair, never cherry-picked sample of a suite."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it[key], []).append((i, it))
    out, depth = [], 0
    while len(out) < n and any(len(g) > depth for g in groups.values()):
        out += [g[depth] for g in groups.values() if len(g) > depth][: n - len(out)]
        depth += 1
    return out


def load_suite(name: str, limit: int | None = None) -> list[dict]:
    """The stored suite's items (the first ``limit`` of them when given); fresh dicts on every call."""
    lines = _load(name)
    return [json.loads(line) for line in (lines if limit is None else lines[:limit])]
