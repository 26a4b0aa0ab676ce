"""``hyperbagel bench understand``: speculative decoding against plain decoding, measured in one run.

Items: every vqa-shapes question (one-word answers: the *short* split; descriptions: *long*) and think plans for
geneval-shapes prompts (*long*). Each item's context is prefilled once (with its trace); then every row decodes from
a copy of it, greedy, fp32, batch 1, the rows interleaved item by item so that machine load drifts alike for all.
Timing covers decoding only (the draft's read of the context included), not the shared prefill. Every row runs the
same target code: by default its text steps go through fused copies of its layers, as the drafts' do
(``model/fused_layer.py``; ``fused_target=False`` keeps the modules).

Rows: plain decoding; prompt-lookup decoding (no draft model: drafts copied from the prompt and the answer so far,
at its fastest γ; the free peer every trained draft has to beat); vanilla EAGLE-3 (chain γ = 10 and its fastest γ);
Hyper-Bagel chain γ = 10 (the paper's metric) and the fastest γ; the fastest Hyper-Bagel tree; and the paper's
Table 1 ablations at γ = 10. The fastest settings are picked on ``calibrate`` long items spread over the split (every
tried setting's τ and speedup are kept in ``bench.json``'s ``calibration.sweep``: speedup against γ). Metrics: τ =
committed tokens (<|im_end|> included) per target forward, bonus included; per-position acceptance α_n and the
paper's 10-α = accepted / attempted draft positions over a 10-token chain (τ ≈ (1 − α¹¹)/(1 − α) if acceptance were
position-independent); tokens/s and the wall-clock speedup over plain decoding; and token identity with plain
decoding on every item.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hyperbagel.decode.draft import load_draft
from hyperbagel.decode.draft_config import VARIANTS
from hyperbagel.decode.generate import generate_text
from hyperbagel.decode.lookup import LookupConfig, lookup_generate
from hyperbagel.decode.speculative import SpecConfig, speculative_generate
from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_write_text
from hyperbagel.model.context import Context
from hyperbagel.pipeline import Pipeline
from hyperbagel.world import suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json

log = logging.getLogger(__name__)
MAIN, BASELINE = "hyper-bagel", "eagle3"
ABLATIONS = tuple(VARIANTS)  # the paper's Table 1 rows, Hyper-Bagel first
PAPER_TABLE1 = {"eagle3": (3.6184, 0.7327), "hyper-bagel": (3.7709, 0.7452), "no-zero-init": (2.8273, 0.6494),
                "no-ce": (3.6642, 0.7365), "no-zero-init-no-ce": (3.4832, 0.7207)}


@dataclass
class UnderstandBench:
    target: Path
    drafts: list[Path]
    out: Path
    limit: int | None = None  # items per vqa split
    think: int = 100
    gammas: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12)
    trees: tuple[SpecConfig, ...] = field(default_factory=lambda: (SpecConfig("tree", top_k=4, depth=6,
                                                                              total_tokens=24),))
    calibrate: int = 20
    max_new_tokens: int = 80
    progress: bool = True
    fused_target: bool = True  # the target's text steps through FusedLayer copies, for every row alike


@dataclass
class _Item:
    id: str
    split: str  # short | long
    kind: str  # vqa | describe | think
    question: str
    scene: dict | None


def _items(settings: UnderstandBench) -> list[_Item]:
    vqa = suites.load_suite("vqa-shapes")
    short = [it for it in vqa if it["template"] != "describe"][: settings.limit]
    describe = [it for it in vqa if it["template"] == "describe"][: settings.limit]
    prompts = suites.load_suite("geneval-shapes")
    prompts = prompts[:: max(1, len(prompts) // max(settings.think, 1))][: settings.think]  # every tag
    return ([_Item(it["id"], "short", "vqa", it["question"], it["scene"]) for it in short]
            + [_Item(it["id"], "long", "describe", it["question"], it["scene"]) for it in describe]
            + [_Item(it.get("id", f"think-{i}"), "long", "think", it["prompt"], None) for i, it in enumerate(prompts)])


def calibration_items(long_items: list, n: int) -> list:
    """``n`` long items spread evenly over the split (descriptions and think plans alike), not its first ``n``."""
    if n >= len(long_items):
        return list(long_items)
    return [long_items[i * len(long_items) // n] for i in range(n)]


def _context(pipe: Pipeline, item: _Item) -> Context:
    if item.kind == "think":  # the context think mode decodes a plan from: [prompt]
        ctx = Context.empty(pipe.model, 1, trace=True)
        pipe.fwd.prefill_text(ctx, [pipe._text_block(item.question)])
        return ctx
    return pipe.context_for_question([render(scene_from_json(item.scene))], [item.question], trace=True)


def _draft_name(folder: Path) -> str:
    cfg = folder / "train_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("variant", folder.name)
    return folder.name


@dataclass
class _Row:
    name: str
    draft: str | None
    spec: SpecConfig | LookupConfig | None  # None: plain decoding
    runs: dict[str, dict] = field(default_factory=dict)  # item id → run record


def _decode(pipe: Pipeline, drafts: dict, ctx: Context, prompt: list[int], row: _Row, max_new: int) -> dict:
    if row.spec is None:
        res = generate_text(pipe.fwd, ctx.copy(), max_new)
        return {"tokens": res.tokens[0], "committed": len(res.tokens[0]) + int(res.stopped[0]),
                "forwards": res.forwards, "seconds": res.seconds, "accepted": [], "proposed": []}
    if isinstance(row.spec, LookupConfig):
        res = lookup_generate(pipe.fwd, ctx.copy(), prompt, max_new, cfg=row.spec)
    else:
        res = speculative_generate(pipe.fwd, drafts[row.draft], ctx.copy(), max_new, spec=row.spec)
    return {"tokens": res.tokens, "committed": res.committed, "forwards": res.forwards, "seconds": res.seconds,
            "accepted": res.accepted, "proposed": res.proposed}


def acceptance(accepted: list[int], proposed: list[int]) -> tuple[list[float], float]:
    """Per-position acceptance α_n (n = 1 … max offered) and accepted / attempted over all positions."""
    a, p = np.asarray(accepted), np.asarray(proposed)
    if not len(a):
        return [], float("nan")
    per, hits, tries = [], 0, 0
    for n in range(1, int(p.max()) + 1):
        reached = int(((a >= n - 1) & (p >= n)).sum())
        ok = int(((a >= n) & (p >= n)).sum())
        per.append(ok / reached if reached else float("nan"))
        hits, tries = hits + ok, tries + reached
    return per, hits / tries if tries else float("nan")


def _summary(row: _Row, plain: _Row, ids: list[str]) -> dict:
    runs = [row.runs[i] for i in ids]
    base = [plain.runs[i] for i in ids]
    committed = sum(r["committed"] for r in runs)
    forwards = sum(r["forwards"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    plain_seconds = sum(r["seconds"] for r in base)
    per, alpha = acceptance([x for r in runs for x in r["accepted"]], [x for r in runs for x in r["proposed"]])
    return {
        "items": len(runs),
        "tokens": committed,
        "target_forwards": forwards,
        "tau": committed / max(forwards, 1),
        "alpha_per_position": per,
        "alpha": alpha,
        "seconds": seconds,
        "tokens_per_s": committed / seconds if seconds else float("nan"),
        "speedup": plain_seconds / seconds if seconds else float("nan"),
        "identical": sum(r["tokens"] == b["tokens"] for r, b in zip(runs, base)),
    }


def _time_rows(pipe, drafts, items, rows, max_new, progress, desc) -> None:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="item", dynamic_ncols=True)
    for item in items:
        ctx, prompt = _context(pipe, item), pipe.tokenizer.encode(item.question)
        for row in rows:
            row.runs[item.id] = _decode(pipe, drafts, ctx, prompt, row, max_new)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def _fastest(pipe, drafts, items, draft: str | None, specs: list, max_new, progress,
             sweep: list[dict] | None = None):
    """The fastest of ``specs`` on ``items`` (``draft`` None: prompt lookup's settings); each setting's τ and speedup
    are appended to ``sweep``."""
    plain = _Row("plain", None, None)
    rows = [_Row(s.label, draft, s) for s in specs]
    _time_rows(pipe, drafts, items, [plain, *rows], max_new, progress, f"calibrate {draft or 'lookup'}")
    ids = [it.id for it in items]
    summaries = {r.name: _summary(r, plain, ids) for r in rows}
    speed = {name: s["speedup"] for name, s in summaries.items()}
    log.info("calibration %s: %s", draft or "lookup", ", ".join(f"{k} {v:.2f}×" for k, v in speed.items()))
    if sweep is not None:
        sweep += [{"draft": draft, "spec": asdict(r.spec), "label": r.name, "items": len(ids),
                   "tau": summaries[r.name]["tau"], "speedup": speed[r.name]} for r in rows]
    return max(rows, key=lambda r: speed[r.name]).spec


def run_understand_bench(settings: UnderstandBench) -> dict:
    pipe = Pipeline.from_pretrained(settings.target, student=False, fused_text=settings.fused_target)
    drafts = {}
    for folder in settings.drafts:
        name = _draft_name(folder)
        if name in drafts:
            raise HyperBagelError(f"two drafts named {name!r}; pass one folder per variant")
        drafts[name] = load_draft(folder, pipe.model)
    if MAIN not in drafts:
        raise HyperBagelError(f"no {MAIN!r} draft among {sorted(drafts)}")
    items = _items(settings)
    long_items = [it for it in items if it.split == "long"]
    calib = calibration_items(long_items, settings.calibrate)
    # warm up the allocator and the kernels
    _time_rows(pipe, drafts, calib[:2], [_Row("plain", None, None), _Row("w", MAIN, SpecConfig(gamma=4))],
               settings.max_new_tokens, False, "warm-up")
    chains = [SpecConfig("chain", gamma=g) for g in settings.gammas]
    sweep: list[dict] = []  # every calibrated setting: τ and speedup against γ (and tree size)
    best_chain = _fastest(pipe, drafts, calib, MAIN, chains, settings.max_new_tokens, settings.progress, sweep)
    best_tree = _fastest(pipe, drafts, calib, MAIN, list(settings.trees), settings.max_new_tokens, settings.progress,
                         sweep)
    best_base = (_fastest(pipe, drafts, calib, BASELINE, chains, settings.max_new_tokens, settings.progress, sweep)
                 if BASELINE in drafts else None)

    best_lookup = _fastest(pipe, drafts, calib, None, [LookupConfig(gamma=g) for g in settings.gammas],
                           settings.max_new_tokens, settings.progress, sweep)

    plain = _Row("plain decoding", None, None)
    rows = [plain, _Row(f"prompt lookup (no draft), {best_lookup.label} (fastest)", None, best_lookup)]
    ten = SpecConfig("chain", gamma=10)
    if BASELINE in drafts:
        rows += [_Row(f"vanilla EAGLE-3, {ten.label}", BASELINE, ten),
                 _Row(f"vanilla EAGLE-3, {best_base.label} (fastest)", BASELINE, best_base)]
    rows += [_Row(f"Hyper-Bagel, {ten.label}", MAIN, ten),
             _Row(f"Hyper-Bagel, {best_chain.label} (fastest chain)", MAIN, best_chain),
             _Row(f"Hyper-Bagel, {best_tree.label} (fastest tree)", MAIN, best_tree)]
    rows += [_Row(f"ablation {name}, {ten.label}", name, ten) for name in ABLATIONS
             if name in drafts and name not in (MAIN, BASELINE)]
    _time_rows(pipe, drafts, items, rows, settings.max_new_tokens, settings.progress, "bench understand")

    splits = {"short": [it.id for it in items if it.split == "short"],
              "long": [it.id for it in items if it.split == "long"], "all": [it.id for it in items]}
    kinds = {k: [it.id for it in items if it.kind == k] for k in ("vqa", "describe", "think")}
    report_rows = []
    for row in rows:
        report_rows.append({
            "name": row.name, "draft": row.draft, "spec": None if row.spec is None else asdict(row.spec),
            "splits": {s: _summary(row, plain, ids) for s, ids in splits.items() if ids},
            "kinds": {k: _summary(row, plain, ids) for k, ids in kinds.items() if ids},
        })
    table1 = []
    for name in ABLATIONS:
        match = [r for r in report_rows if r["draft"] == name and r["spec"] == asdict(ten)]
        if match:
            s = match[0]["splits"]["all"]
            table1.append({"variant": name, "tau": s["tau"], "alpha_10": s["alpha"],
                           "paper_tau": PAPER_TABLE1[name][0], "paper_alpha_10": PAPER_TABLE1[name][1]})
    identical = {r["name"]: r["splits"]["all"]["identical"] for r in report_rows}
    report = {
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()
                        if k not in ("trees", "drafts")},
                     "drafts": {n: str(f) for n, f in zip(drafts, settings.drafts)},
                     "trees": [t.label for t in settings.trees]},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": "float32",
                    "batch": 1, "decoding": "greedy"},
        "calibration": {"fastest_chain": best_chain.label, "fastest_tree": best_tree.label,
                        "fastest_lookup": best_lookup.label,
                        "fastest_eagle3_chain": best_base.label if best_base else None,
                        "items": [it.id for it in calib], "sweep": sweep},
        "rows": report_rows,
        "table1": table1,
        "greedy_identity": {"items": len(items), "identical": identical,
                            "all_identical": all(v == len(items) for v in identical.values())},
    }
    report["table"] = format_table(report)
    settings.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(report, indent=1) + "\n", settings.out / "bench.json")
    (settings.out / "bench.md").write_text(report["table"] + "\n")
    return report


def format_table(report: dict) -> str:
    lines = ["| configuration | split | τ | 10-α | tokens/s | speedup | identical |", "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        is_ten = row["spec"] is not None and row["spec"].get("mode") == "chain" and row["spec"]["gamma"] == 10
        for split in ("short", "long"):
            s = row["splits"].get(split)
            if s is None:
                continue
            alpha = f"{s['alpha']:.4f}" if is_ten else ""
            lines.append(f"| {row['name']} | {split} | {s['tau']:.3f} | {alpha} | {s['tokens_per_s']:.1f} | "
                         f"{s['speedup']:.2f}× | {s['identical']}/{s['items']} |")
    lines += ["", "| Table 1 (chain γ = 10, all items) | τ | 10-α | paper τ | paper 10-α |", "|---|---|---|---|---|"]
    for t in report["table1"]:
        lines.append(f"| {t['variant']} | {t['tau']:.4f} | {t['alpha_10']:.4f} | {t['paper_tau']:.4f} | "
                     f"{t['paper_alpha_10']:.4f} |")
    return "\n".join(lines)
