"""A few worked examples for the report: answers decoded plainly and speculatively, and think-mode generations run
as the baseline (the teacher's sampler, plain decoding) and accelerated (the distilled student, the draft).

Questions come from vqa-shapes (one-word answers and descriptions, spread over the templates), prompts from
geneval-shapes (spread over the tags); seeds follow the evaluation rule, so every image can be regenerated.
Output: ``OUT/showcase.json`` and the images beside it (``answers/``, ``plans/``).
"""

from __future__ import annotations

import json
from pathlib import Path

from hyperbagel.decode.speculative import SpecConfig
from hyperbagel.eval.model_eval import sample_seed
from hyperbagel.pipeline import Pipeline
from hyperbagel.world import folders, suites
from hyperbagel.world.detect import detect
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json
from hyperbagel.world.tasks import t2i, vqa

SPEC = SpecConfig("tree", top_k=4, depth=6, total_tokens=24)  # `hyperbagel understand --draft`'s default


def _text(res) -> dict:
    return {"text": res.texts[0], "forwards": res.forwards, "seconds": res.seconds}


def run_showcase(teacher: Path, draft: Path, student: Path | None, out: Path, questions: int = 6, plans: int = 4,
                 max_new_tokens: int = 64) -> dict:
    pipe = Pipeline.from_pretrained(student or teacher, student=None if student else False)
    pipe.load_draft(draft, SPEC)
    out = Path(out)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    (out / "plans").mkdir(parents=True, exist_ok=True)
    items = suites.load_suite("vqa-shapes")
    short = [it for _, it in suites.spread([it for it in items if it["template"] != "describe"], "template",
                                           questions - questions // 3)]
    chosen = short + [it for it in items if it["template"] == "describe"][: questions // 3]
    answers = []
    for it in chosen:
        image = render(scene_from_json(it["scene"]))
        folders.save_png(image, out / "answers" / f"{it['id']}.png")
        plain = pipe.understand(image, it["question"], max_new_tokens, accelerated=False)
        fast = pipe.understand(image, it["question"], max_new_tokens, accelerated=True)
        answers.append({"id": it["id"], "template": it["template"], "question": it["question"],
                        "expected": it["answer"], "image": f"answers/{it['id']}.png", "plain": _text(plain),
                        "speculative": _text(fast), "identical": plain.texts[0] == fast.texts[0],
                        "correct": bool(vqa.is_correct(it, plain.texts[0]))})
    prompts = suites.load_suite("geneval-shapes")
    generations = []
    for k, (i, it) in enumerate(suites.spread(prompts, "tag", plans)):
        seed = sample_seed(0, i, 0)
        runs = {}
        for mode, accelerated in (("baseline", False), ("accelerated", None)):
            res = pipe.generate(it["prompt"], seed, think=True, max_think_tokens=max_new_tokens,
                                accelerated=accelerated)
            path = f"plans/{k:02d}-{mode}.png"
            folders.save_png(res.images[0], out / path)
            runs[mode] = {"plan": res.plans[0], "image": path, "forwards": res.forwards, "seconds": res.seconds,
                          "correct": bool(t2i.check_t2i(it, detect(res.images[0])))}
        generations.append({"prompt": it["prompt"], "tag": it["tag"], "seed": seed, **runs,
                            "plan_identical": runs["baseline"]["plan"] == runs["accelerated"]["plan"]})
    data = {"teacher": str(teacher), "draft": str(draft), "student": str(student) if student else None,
            "spec": SPEC.label, "max_new_tokens": max_new_tokens,
            "student_stage": pipe.student_info.stage if pipe.student is not None else None,
            "answers": answers, "generations": generations}
    (out / "showcase.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return {"answers": len(answers), "identical": sum(a["identical"] for a in answers),
            "generations": len(generations), "plans_identical": sum(g["plan_identical"] for g in generations),
            "texts": [a["plain"]["text"] for a in answers] + [g["baseline"]["plan"] for g in generations]}
