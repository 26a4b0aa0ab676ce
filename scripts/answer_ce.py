"""How well a model folder answers each vqa-shapes template, as the cross-entropy of the answer's first token on
training-layout samples ([ViT image, question, answer], as `train teacher` lays them out), beside chance (the log of
the number of answers); and, with ``--finetune``, whether a short training run on some templates alone moves it.

    python scripts/answer_ce.py runs/teacher-long                      # every template, 96 samples each
    python scripts/answer_ce.py runs/teacher-long --finetune exist --lr 3e-4 --objects 1:300,0:200
    python scripts/answer_ce.py runs/teacher-long --finetune all --objects 0:200   # every template, then the table
    python scripts/answer_ce.py runs/teacher-long --finetune all --describe 0.3    # the recipe's mix and loss

The fine-tune (AdamW, bf16 autocast, batch 24, the model's own copy in memory: nothing is written) prints the
answer's CE every 10 steps on its own training batches, for a probe of whether a template can be learned at all, and
then the per-template table again, on the same questions the model was scored on before (``all``: the seven
templates in turn). ``--objects N:STEPS,...`` is its schedule: exist and compare questions on scenes of N objects for
STEPS steps, and so on (0: the scenes the suite's questions have).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.sequence import IGNORE, Text, VitImage, embed, layout
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.recipes.shapes_tasks import _pixels
from hyperbagel.world.scene import scene_from_json
from hyperbagel.world.tasks import vqa


def question(rng: np.random.Generator, template: str, n_objects: int) -> dict:
    """A training question; exist and compare ones on scenes of ``n_objects`` objects when it is not 0."""
    free = n_objects and template in vqa.FREE_SCENE
    return vqa.sample_question(rng, template, resolution=64, n_objects=n_objects if free else None)


def _forward(model, tok: ShapesTokenizer, items: list[dict]):
    samples = [[VitImage(_pixels(scene_from_json(q["scene"]))), Text(tok.encode(q["question"])),
                Text(tok.encode(q["answer"]), loss=True)] for q in items]
    batch = layout(samples, model.cfg, [torch.Generator().manual_seed(i) for i in range(len(items))])
    return model.lm(embed(model, batch), batch.positions, gen=batch.gen, mask=batch.mask).hidden, batch.labels


def first_token_ce(model, tok: ShapesTokenizer, items: list[dict]) -> torch.Tensor:
    """Cross-entropy of each item's first answer token ``[N]`` (the token that decides a one-word answer)."""
    hidden, labels = _forward(model, tok, items)
    first = (labels != IGNORE).int().argmax(1)  # each row's first labelled position
    rows = torch.arange(len(items))
    logits = model.logits(hidden[rows, first]).float()
    return torch.nn.functional.cross_entropy(logits, labels[rows, first], reduction="none")


def token_mean_ce(model, tok: ShapesTokenizer, items: list[dict]) -> torch.Tensor:
    """The recipe's understanding loss: cross-entropy over every answer token of the batch (EOS included), one mean."""
    hidden, labels = _forward(model, tok, items)
    keep = labels != IGNORE
    return torch.nn.functional.cross_entropy(model.logits(hidden[keep]).float(), labels[keep])


def report(model, tok: ShapesTokenizer, rng: np.random.Generator, samples: int) -> None:
    """Print each template's answer CE on ``samples`` fresh training-layout questions, beside chance."""
    model.eval()
    for template in vqa.TEMPLATES:
        with torch.no_grad():
            ce = first_token_ce(model, tok, [question(rng, template, 0) for _ in range(samples)])
        print(f"{template:9s} answer CE {float(ce.mean()):.3f}  chance {math.log(len(vqa.ANSWERS[template])):.3f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--samples", type=int, default=96, help="per template")
    ap.add_argument("--finetune", default="", help="comma-separated templates to fine-tune on")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--objects", default="0:200", help="fine-tune schedule N:STEPS,...: exist and compare questions "
                                                         "on scenes of N objects (0: as the suite's) for STEPS steps")
    ap.add_argument("--describe", type=float, default=None,
                    help="fine-tune as the recipe does: this share of descriptions among the questions, the loss "
                         "over all answer tokens (default: questions only, the first answer token's loss)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, _ = load_pretrained(args.model)
    tok = ShapesTokenizer.load(f"{args.model}/tokenizer.json")
    rng = np.random.default_rng(args.seed)
    if not args.finetune:
        report(model, tok, np.random.default_rng(args.seed), args.samples)
        return
    templates = list(vqa.TEMPLATES) if args.finetune == "all" else args.finetune.split(",")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = [n for part in args.objects.split(",") for n in [int(part.split(":")[0])] * int(part.split(":")[1])]
    seen, start = [], time.time()
    for step, objects in enumerate(schedule, 1):
        if args.describe is None:
            items = [question(rng, templates[i % len(templates)], objects) for i in range(24)]
        else:  # the recipe's understanding samples (without the interleaved VAE latents) and its loss
            items = [vqa.sample_description(rng, 64) if rng.random() < args.describe
                     else question(rng, templates[rng.integers(len(templates))], objects) for _ in range(24)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (first_token_ce(model, tok, items).mean() if args.describe is None
                    else token_mean_ce(model, tok, items))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen.append(loss.item())
        if step % 10 == 0:
            print(f"step {step:4d} ({objects or 'suite'} objects) loss {np.mean(seen[-10:]):.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    print("after the fine-tune, on the samples the model was scored on before it:")
    report(model, tok, np.random.default_rng(args.seed), args.samples)


if __name__ == "__main__":
    main()
