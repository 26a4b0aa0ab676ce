"""Scores for the three suites, from result folders (or from records in memory), as JSON-ready dicts.

Every score dict has ``overall``, a per-tag dict, the counts, and the provenance of the run (``model``, ``sampler``,
``nfe`` and the whole ``run.json`` under ``run``). Overall scores are the unweighted mean over the tags present
(GenEval's and GEdit-Bench's convention).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import fmean

from hyperbagel.errors import HyperBagelError
from hyperbagel.world.detect import detect
from hyperbagel.world.folders import PREDICTIONS_FILE, Record, read_predictions, read_records, read_run
from hyperbagel.world.suites import load_suite
from hyperbagel.world.tasks import edit, t2i, vqa
from hyperbagel.world.tasks.think import plan_agrees


def _provenance(run: dict) -> dict:
    return {"model": run.get("model"), "sampler": run.get("sampler"), "nfe": run.get("nfe"), "run": run}


def _by_tag(values: dict[str, list[float]]) -> dict[str, float]:
    return {tag: fmean(v) for tag, v in values.items()}


def _overall(tags: dict[str, float]) -> float:
    return fmean(tags.values()) if tags else 0.0


def _summary(values: dict[str, list[float]]) -> dict:
    """The mean per tag (``tags``) and their unweighted mean (``overall``)."""
    tags = _by_tag(values)
    return {"overall": _overall(tags), "tags": tags}


def score_geneval(records: list[Record], run: dict | None = None) -> dict:
    """Lenient (GenEval-style) and strict accuracy per tag over images, plus think-mode plan agreement."""
    lenient, strict = defaultdict(list), defaultdict(list)
    any_correct, unexplained, speckles, agreement = [], [], [], []
    for record in records:
        item = record.item
        if "tag" not in item or "prompt" not in item:
            raise HyperBagelError(f"not a geneval-shapes item: {str(item)[:80]}")
        verdicts = []
        for j, image in enumerate(record.samples):
            d = detect(image)
            ok = t2i.check_t2i(item, d)
            verdicts.append(ok)
            lenient[item["tag"]].append(float(ok))
            strict[item["tag"]].append(float(t2i.check_strict(item, d)))
            unexplained.append(d.unexplained_fraction)
            speckles.append(d.speckles)
            if j < len(record.plans) and record.plans[j] is not None:
                agreement.append(float(plan_agrees(record.plans[j], d)))
        any_correct.append(float(any(verdicts)))
    scores = {
        "benchmark": "geneval-shapes",
        **_summary(lenient),
        "strict": _summary(strict),
        "prompts_any_correct": fmean(any_correct) if any_correct else 0.0,
        "n_images": len(unexplained),
        "n_prompts": len(records),
        "n_images_per_tag": {tag: len(v) for tag, v in lenient.items()},
        "unexplained_fraction": fmean(unexplained) if unexplained else 0.0,
        "speckles_per_image": fmean(speckles) if speckles else 0.0,
    }
    if agreement:
        scores["plan_agreement"] = fmean(agreement)
        scores["n_plans"] = len(agreement)
    return scores | _provenance(run or {})


def score_gedit(records: list[Record], run: dict | None = None) -> dict:
    """GEdit-style SC / PQ / O per tag (O is ``overall``), plus masked L1 to the source and L1 to the target, and SC's
    two halves: the edit done (``edit_ok``) and everything else kept (``preserved``)."""
    parts = ("O", "SC", "PQ", "edit_ok", "preserved")
    per_tag = {name: defaultdict(list) for name in parts}
    masked, to_target = [], []
    for record in records:
        item = record.item
        if "edit" not in item or "target" not in item:
            raise HyperBagelError(f"not a gedit-shapes item: {str(item)[:80]}")
        for image in record.samples:
            s = edit.check_edit(item, image)
            for name, value in zip(parts, (s.o, s.sc, s.pq, s.edit_ok, s.preserved)):
                per_tag[name][item["tag"]].append(float(value))
            to_target.append(s.l1_target)
            if s.masked_l1 is not None:
                masked.append(s.masked_l1)
    scores = {
        "benchmark": "gedit-shapes",
        **_summary(per_tag.pop("O")),  # O is the score itself
        **{name: _summary(values) for name, values in per_tag.items()},
        "masked_l1": fmean(masked) if masked else None,
        "l1_target": fmean(to_target) if to_target else None,
        "n_images": len(to_target),
        "n_edits": len(records),
    }
    return scores | _provenance(run or {})


def score_vqa(predictions: dict[str, str], items: list[dict] | None = None, run: dict | None = None) -> dict:
    """Accuracy per template and overall over the predicted questions, and exact description accuracy.

    Items without a prediction are counted in ``n_missing`` and left out; an id not in the suite is an error.
    """
    items = load_suite("vqa-shapes") if items is None else items
    by_id = {item["id"]: item for item in items}
    unknown = sorted(set(predictions) - set(by_id))
    if unknown:
        raise HyperBagelError(f"{len(unknown)} predictions have ids not in vqa-shapes, e.g. {unknown[:3]}")
    per_template, descriptions = defaultdict(list), []
    for item_id, answer in predictions.items():
        item = by_id[item_id]
        ok = float(vqa.is_correct(item, answer))
        (descriptions if item["template"] == vqa.DESCRIBE else per_template[item["template"]]).append(ok)
    templates = _by_tag(per_template)
    answered = [v for values in per_template.values() for v in values]
    accuracy = fmean(answered) if answered else 0.0
    scores = {
        "benchmark": "vqa-shapes",
        "overall": accuracy,
        "accuracy": accuracy,
        "templates": templates,
        "tags": templates,
        "description_exact": fmean(descriptions) if descriptions else None,
        "n_questions": len(answered),
        "n_descriptions": len(descriptions),
        "n_missing": len(by_id) - len(predictions),
    }
    return scores | _provenance(run or {})


def score_geneval_folder(out: Path) -> dict:
    return score_geneval(read_records(out), read_run(out))


def score_gedit_folder(out: Path) -> dict:
    return score_gedit(read_records(out), read_run(out))


def score_vqa_file(path: Path) -> dict:
    """Score a predictions file; a ``run.json`` in the same folder is its provenance."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    return score_vqa(read_predictions(path), run=read_run(path.parent))
