"""``hyperbagel bench generate|edit``: the teacher, each distilled stage and training-free few-forward peers on the
same prompts, seeds and initial noise, scored by the exact judge and compared pairwise with the teacher.

Rows (``bench_rows``): ``teacher`` (BAGEL's sampler: 49 shifted Euler steps with CFG); the teacher with 6 forwards
through Euler, DPM-Solver++ 2M and UniPC (3 guided steps for text-to-image, 2 for editing, whose steps all fall in
the CFG interval); each stage's student with 6 one-forward Euler steps (and stage 1 with its own 49). Rows run
interleaved, batch by batch, so they share the machine's state; each call is timed end to end (context prefill,
sampling, VAE decode) and for its sampling loop alone. Per row: the suite's scores (the scorer on the row's result
folder, contract layout), forwards per image, seconds per image, speed-up over the teacher, paired statistics
against the teacher (``eval/paired.py``) and, for each distilled row, against each training-free peer (did
training beat sampling the teacher with as few forwards?), mean pixel difference from the teacher's image of the
same noise, and KID against real renders with the Shapes encoder (``eval/shapes_encoder.py``). The tally is saved
after every batch and an interrupted bench resumes where it stopped (``eval/bench_tally.py``).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hyperbagel.errors import HyperBagelError
from hyperbagel.eval.bench_tally import RESUME_FILE, Tally, load_tally, save_tally
from hyperbagel.eval.colour import BRIGHT, colour_stats
from hyperbagel.eval.cpu_meter import CpuMeter, CpuUse, disturbed, others_share
from hyperbagel.eval.model_eval import SEED_RULE, sample_seed
from hyperbagel.eval.paired import PerImage, compare, diff_cell, judge_image, overall
from hyperbagel.eval.shapes_encoder import encode, kid, load_encoder
from hyperbagel.files import atomic_write_text
from hyperbagel.flow.solvers import prepare
from hyperbagel.model.student import STUDENT_FILE, has_student, load_student, read_student_info
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline, SamplerSettings, defers
from hyperbagel.precision import use_bf16
from hyperbagel.pretrained import resolve, sha256
from hyperbagel.world import folders, scoring, suites
from hyperbagel.world.render import render
from hyperbagel.world.scene import scene_from_json
from hyperbagel.world.tasks import t2i

log = logging.getLogger(__name__)
SUITE = {"generate": "geneval-shapes", "edit": "gedit-shapes"}


@dataclass(frozen=True)
class Row:
    name: str
    describe: str
    model: str  # "teacher" or a stage name
    sampler: SamplerSettings
    accelerated: bool


@dataclass
class BenchSettings:
    task: str  # generate | edit
    out: Path
    limit: int | None = None
    samples: int = 4
    batch: int = 32  # images per sampling call
    seed: int = 0
    bootstrap: int = 2000
    encoder: Path = Path("runs/shapes-encoder/encoder.safetensors")
    bf16: bool = False  # every row under bf16 autocast (2× the throughput with AMX; fp32 without native bf16)
    progress: bool = True
    fresh: bool = False  # measure again, ignoring (and deleting) a saved partial run in ``out``, or a finished one

    def __post_init__(self) -> None:
        if self.task not in SUITE:
            raise HyperBagelError(f"bench task must be generate or edit, got {self.task!r}")
        if self.samples < 1 or self.batch < 1:
            raise HyperBagelError("bench --samples and --batch must be positive")


def bench_rows(task: str, stages: dict[str, Path]) -> list[Row]:
    peer_steps = 3 if task == "generate" else 2  # × 2 (text-to-image) or × 3 (editing, in the interval) forwards
    rows = [Row("teacher", "BAGEL's sampler: 49 shifted Euler steps with CFG", "teacher", SamplerSettings(50, 3.0),
                False)]
    for name, solver, label in (("euler-6f", "euler", "Euler"), ("dpm-6f", "dpmsolver++", "DPM-Solver++ 2M"),
                                ("unipc-6f", "unipc", "UniPC")):
        rows.append(Row(name, f"teacher, {label}, {peer_steps} guided steps (6 forwards), shift 3", "teacher",
                        SamplerSettings(peer_steps + 1, 3.0, solver), False))
    for stage in stages:
        if stage == "cfg":
            rows.append(Row("cfg-49", "stage 1 (CFG-distilled): 49 one-forward Euler steps", stage,
                            SamplerSettings(50, 3.0), True))
            steps = 6
        else:
            steps = stage_steps(stage, stages[stage])
        what = "1 forward from pure noise (t = 1 → 0)" if steps == 1 else f"{steps} one-forward Euler steps, shift 3"
        rows.append(Row(f"{stage}-{steps}", f"after stage {stage}: {what}", stage, SamplerSettings(steps + 1, 3.0),
                        True))
    return rows


# by stage name, for a stage's arms (``adp-…``, ``cfg-…``) before their folders exist; else 6 (stage 1 itself, "cfg",
# is benched at 49 steps and at 6 by ``bench_rows``)
STAGE_STEPS = {"adp": 1, "refl": 1, "cfg": 49}


def stage_steps(stage: str, folder: Path | None) -> int:
    """A distilled model's own sampling steps: its student file's, else by stage name (``STAGE_STEPS``)."""
    if folder is not None and has_student(folder):
        return read_student_info(folder).steps
    return STAGE_STEPS.get(stage.split("-")[0], 6)


@dataclass
class Call:
    images: list[np.ndarray]
    forwards: int
    seconds: float
    sample_seconds: float
    cpu: CpuUse | None = None


@torch.no_grad()
def timed_call(pipe: Pipeline, task: str, texts: list[str], seeds: list[int], row: Row,
               sources: list[np.ndarray] | None = None) -> Call:
    """``Pipeline.generate`` / ``edit`` step by step (the same calls, the same images), timing the sampling loop."""
    with CpuMeter() as meter:
        call = _call(pipe, task, texts, seeds, row, sources)
    call.cpu = meter.use
    return call


def _call(pipe: Pipeline, task: str, texts: list[str], seeds: list[int], row: Row,
          sources: list[np.ndarray] | None) -> Call:
    before = pipe.forwards
    start = time.perf_counter()
    gens = pipe._generators(seeds)
    if task == "generate":
        guidance = T2I_GUIDANCE
        branches, _ = pipe.generation_branches(texts, cfg_branches=not row.accelerated, defer=defers(len(texts)))
    else:
        guidance = EDIT_GUIDANCE
        branches, _ = pipe.edit_branches(sources, texts, gens, cfg_branches=not row.accelerated,
                                         defer=defers(len(texts)))
    noise = pipe._noise(gens)
    t0 = time.perf_counter()
    x = pipe._sample(branches, noise, guidance, row.sampler, row.accelerated, image_guidance=task == "edit")
    t1 = time.perf_counter()
    images = pipe._decode(x)
    return Call(images, pipe.forwards - before, time.perf_counter() - start, t1 - t0)


def _reference_images(task: str, items: list[dict], samples: int, seed: int) -> list[np.ndarray]:
    """Real renders for KID: a scene drawn for each (prompt, sample), or each edit's target."""
    if task == "edit":
        return [render(scene_from_json(it["target"])) for it in items]
    out = []
    for i, it in enumerate(items):
        for j in range(samples):
            rng = np.random.default_rng([seed, i, j, 7])
            out.append(render(t2i.scene_for_prompt(it, rng, int(it.get("resolution", 64)))))
    return out


def load_pipelines(teacher: Path, stages: dict[str, Path], rows: list[Row]) -> dict[str, Pipeline]:
    pipe = Pipeline.from_pretrained(teacher, student=False)
    pipes = {"teacher": pipe}
    config = (teacher / "config.json").read_text()
    for stage in {r.model for r in rows} - {"teacher"}:
        folder = stages[stage]
        if (folder / "config.json").read_text() != config:
            raise HyperBagelError(f"{folder} was distilled from another teacher than {teacher}")
        student, info = load_student(folder, pipe.model)
        pipes[stage] = Pipeline(pipe.model, pipe.vae, pipe.tokenizer, student, info)
    return pipes


def run_bench(teacher: Path, stages: dict[str, Path], rows: list[Row], settings: BenchSettings) -> dict:
    task, S = settings.task, settings.samples
    if rows[0].name != "teacher":
        raise HyperBagelError("the first bench row must be the teacher")
    teacher = resolve(teacher)  # a folder, or a shipped model's name
    asked_bf16 = settings.bf16
    settings = replace(settings, bf16=use_bf16(settings.bf16))  # what runs: fp32 where bf16 is not native
    items = suites.load_suite(SUITE[task], settings.limit)
    out = Path(settings.out)
    n_items = len(items)
    fingerprint = _fingerprint(teacher, stages, rows, settings, n_items)
    resume = out / RESUME_FILE
    if settings.fresh:
        resume.unlink(missing_ok=True)
    elif not resume.exists() and (done := _finished(out / "bench.json", fingerprint)):
        log.info("%s is this bench, finished: its report is shown (--fresh measures again)", out / "bench.json")
        return done
    pipes = load_pipelines(teacher, stages, rows)
    out.mkdir(parents=True, exist_ok=True)
    per_call = max(1, settings.batch // S)
    names = [r.name for r in rows]
    tally = load_tally(resume, fingerprint) or Tally(names, n_items, S)
    if tally.next_item:
        log.info("resuming the bench at item %d of %d (%s)", tally.next_item, n_items, resume)
    tally.sessions.append({"from_item": tally.next_item, "threads": torch.get_num_threads(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    encoder = load_encoder(settings.encoder)
    for row in rows:
        prepare(row.sampler.solver, row.sampler.shift)
    bar = tqdm(total=n_items * len(rows), initial=tally.next_item * len(rows), desc=f"bench {task}", unit="item",
               disable=not settings.progress)
    for lo in range(tally.next_item, n_items, per_call):
        chunk = items[lo: lo + per_call]
        idx = range(lo, lo + len(chunk))
        seeds = [sample_seed(settings.seed, i, j) for i in idx for j in range(S)]
        texts = [it["prompt" if task == "generate" else "instruction"] for it in chunk for _ in range(S)]
        sources = None
        if task == "edit":
            src = [render(scene_from_json(it["source"])) for it in chunk]
            sources = [s for s in src for _ in range(S)]
        teacher_images = None
        if len(tally.shown_texts) < SHEET_COLUMNS:  # one image per item: different prompts, each with its own noise
            tally.shown_texts += [texts[k * S] for k in range(len(chunk))]
            tally.shown_sources += [sources[k * S] for k in range(len(chunk))] if sources else []
        for row in rows:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
                call = timed_call(pipes[row.model], task, texts, seeds, row, sources)
            tally.count(row.name, call.forwards, call.seconds, call.sample_seconds, len(call.images), call.cpu)
            if teacher_images is None:
                teacher_images = call.images
            tally.pixel[row.name] += [float(np.abs(a.astype(np.float32) - b).mean())
                                      for a, b in zip(call.images, teacher_images)]
            tally.feats[row.name].append(encode(encoder, call.images))
            if len(tally.shown[row.name]) < SHEET_COLUMNS:
                tally.shown[row.name] += [call.images[k * S] for k in range(len(chunk))]
            for k, (i, it) in enumerate(zip(idx, chunk)):
                imgs = call.images[k * S:(k + 1) * S]
                folders.write_record(out / row.name, i, it, imgs, src[k] if sources else None)
                for j, im in enumerate(imgs):
                    tally.score[row.name][i, j], tally.verdict[row.name][i, j] = judge_image(task, it, im)
            bar.update(len(chunk))
        tally.next_item = lo + len(chunk)
        save_tally(resume, tally, fingerprint)
    bar.close()
    score, verdict, stats = tally.score, tally.verdict, tally.stats

    tags = np.array([it["tag"] for it in items])
    real = _reference_images(task, items, S, settings.seed)
    reference = encode(encoder, real)
    base = PerImage(tags, score["teacher"], verdict["teacher"])
    t_img = stats["teacher"]["seconds"] / stats["teacher"]["images"]
    t_smp = stats["teacher"]["sample_seconds"] / stats["teacher"]["images"]
    results, per = [], {}
    for row in rows:
        st = stats[row.name]
        run = {"model": row.model if row.model == "teacher" else str(stages[row.model]), "sampler": row.describe,
               "nfe": st["forwards"] / st["calls"], "forwards_total": st["forwards"], "seconds": st["seconds"],
               "seconds_per_output": st["seconds"] / st["images"], "seed_rule": SEED_RULE,
               "base_seed": settings.seed, "samples_per_item": S, "batch": settings.batch,
               "machine": f"{platform.machine()} {torch.get_num_threads()} threads", "torch": torch.__version__}
        folders.write_run(out / row.name, run)
        records = folders.read_records(out / row.name)  # read once: the scorer and the colour statistics
        scores = (scoring.score_geneval if task == "generate" else scoring.score_gedit)(
            records, folders.read_run(out / row.name))
        mine = per[row.name] = PerImage(tags, score[row.name], verdict[row.name])
        if abs(overall(tags, mine.score) - scores["overall"]) > 1e-9:
            raise HyperBagelError(f"bench row {row.name}: per-image scores disagree with the scorer")
        k_mean, k_std = kid(torch.cat(tally.feats[row.name]), reference)
        res = {
            "row": row.name, "describe": row.describe, "overall": scores["overall"], "tags": scores["tags"],
            "forwards_per_image": st["forwards"] / st["calls"],
            "seconds_per_image": st["seconds"] / st["images"],
            "sample_seconds_per_image": st["sample_seconds"] / st["images"],
            "speedup": t_img / (st["seconds"] / st["images"]),
            "sample_speedup": t_smp / (st["sample_seconds"] / st["images"]),
            "pixel_l1_to_teacher": float(np.mean(tally.pixel[row.name])),
            "kid": k_mean, "kid_std": k_std, "scores": scores,
            "colour": colour_stats(im for rec in records for im in rec.samples),
            "cpu": _cpu_shares(st),
        }
        if row.name != "teacher":
            res["vs_teacher"] = compare(base, mine, settings.bootstrap, settings.seed)
        results.append(res)
    for res, row in zip(results, rows):  # did training beat simply sampling the teacher with as few forwards?
        if row.accelerated:
            res["vs_peers"] = {p.name: compare(per[p.name], per[row.name], settings.bootstrap, settings.seed)
                               for p in peers(rows)}
    report = {"task": task, "suite": SUITE[task], "items": n_items, "samples": S, "seed": settings.seed,
              "batch": settings.batch, "bf16": settings.bf16, "fingerprint": fingerprint,
              "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads"
                         + (", bf16 asked, fp32 run (no native bf16)" if asked_bf16 and not settings.bf16 else ""),
              "sessions": tally.sessions, "rows": results, "real_colour": colour_stats(real)}
    report["table"] = table(report)
    atomic_write_text(json.dumps(report, indent=1) + "\n", out / "bench.json")
    (out / "bench.md").write_text(report["table"] + "\n")
    sheet(tally.shown, tally.shown_texts, out / "sheet.png", tally.shown_sources or None)
    resume.unlink()
    return report


def peers(rows: list[Row]) -> list[Row]:
    """The training-free rows: the teacher's own model sampled with few forwards."""
    return [r for r in rows if r.name != "teacher" and not r.accelerated]


def _cpu_shares(st: dict) -> dict | None:
    """This process's CPU time over the row's wall time × threads, and other processes' over wall × cores; None
    for a tally resumed from a bench that did not meter its calls."""
    if "own_cpu" not in st:
        return None
    own = st["own_cpu"] / max(st["seconds"] * torch.get_num_threads(), 1e-9)
    others = others_share(st["others_cpu"], st["seconds"]) if "others_cpu" in st else None
    return {"own_share": own, "others_share": others}


def _finished(report: Path, fingerprint: dict) -> dict | None:
    """The report of a finished bench with these settings; None when there is none (a re-run then measures)."""
    if not report.is_file():
        return None
    done = json.loads(report.read_text())
    return done if done.get("fingerprint") == fingerprint else None


def _fingerprint(teacher: Path, stages: dict[str, Path], rows: list[Row], settings: BenchSettings, items: int) -> dict:
    """What a resumed (or finished) bench must share with the run it continues (or shows)."""
    return {"teacher": str(teacher.resolve()),
            "stages": {k: [str(Path(v).resolve()), _digest(Path(v) / STUDENT_FILE)]  # a retrained stage differs
                       for k, v in stages.items() if k in {r.model for r in rows}},
            "rows": [[r.name, r.describe, r.model, list(astuple(r.sampler)), r.accelerated] for r in rows],
            "task": settings.task, "items": items, "samples": settings.samples, "batch": settings.batch,
            "seed": settings.seed, "bf16": settings.bf16, "encoder": str(Path(settings.encoder).resolve())}


def _digest(path: Path) -> str | None:
    return sha256(path) if path.is_file() else None  # a folder without a student is refused when loaded


SHEET_COLUMNS = 8


def sheet(rows: dict[str, list[np.ndarray]], texts: list[str], path: Path, sources: list[np.ndarray] | None = None,
          scale: int = 2) -> None:
    """A side-by-side PNG: one line per bench row (the same seeds, so the same initial noise, in every column),
    the sources of edits on top, the prompts or instructions as column captions."""
    from PIL import Image, ImageDraw

    lines = ([("source", sources)] if sources else []) + list(rows.items())
    n = min(SHEET_COLUMNS, len(texts))
    side, label, caption_h = 64 * scale, 90, 40
    sheet_img = Image.new("RGB", (label + n * (side + 4), caption_h + len(lines) * (side + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet_img)
    for c in range(n):
        words, text, out = texts[c].split(), "", []
        for w in words:
            if len(text) + len(w) > side // 6:
                out.append(text)
                text = ""
            text += w + " "
        out.append(text)
        draw.multiline_text((label + c * (side + 4), 0), "\n".join(out[:3]), fill=(0, 0, 0))
    for r, (name, images) in enumerate(lines):
        y = caption_h + r * (side + 4)
        draw.text((2, y + side // 2 - 6), name, fill=(0, 0, 0))
        for c in range(n):
            tile = Image.fromarray(images[c]).resize((side, side), Image.NEAREST)
            sheet_img.paste(tile, (label + c * (side + 4), y))
    sheet_img.save(path)


def table(report: dict) -> str:
    """A Markdown table of the rows."""
    rows = report["rows"]
    tag_names = list(rows[0]["tags"])
    head = ["row", "fwd/img", "s/img", "speed-up (sampling)", "overall", *tag_names, "Δ vs teacher [95% CI]",
            "McNemar p", "agree", "|Δpx|", "KID×10³", "bright / sat"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vs = r.get("vs_teacher")
        delta = diff_cell(vs) if vs else "—"
        cells = [r["row"], f"{r['forwards_per_image']:.0f}", f"{r['seconds_per_image']:.4f}",
                 f"{r['speedup']:.1f}× ({r['sample_speedup']:.1f}×)", f"{r['overall']:.3f}",
                 *(f"{r['tags'][t]:.3f}" for t in tag_names), delta,
                 f"{vs['mcnemar_p']:.3g}" if vs else "—", f"{vs['agreement']:.3f}" if vs else "—",
                 f"{r['pixel_l1_to_teacher']:.1f}", f"{1e3 * r['kid']:.2f}", _colour_cell(r.get("colour"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    bf16 = ", bf16" if report.get("bf16") else ""
    lines.append(f"{report['suite']}: {report['items']} items × {report['samples']} samples, batch "
                 f"{report['batch']}{bf16}, {report['machine']}; s/img end to end (prefill, sampling, decode), "
                 "speed-up over the teacher end to end and (sampling loop alone).")
    if "real_colour" in report:
        lines.append(f"bright / sat: share of pixels brighter than {BRIGHT} (max channel) / their mean saturation "
                     f"(eval/colour.py); real renders {_colour_cell(report['real_colour'])}.")
    if busy := disturbed(rows):
        lines.append(f"**Timings disturbed**: other processes used the machine's CPU during these rows' calls "
                     f"({', '.join(busy)} of wall time × cores): their speed-ups are not clean.")
    return "\n".join(lines + _peer_table(rows))


def _peer_table(rows: list[dict]) -> list[str]:
    """Each distilled row against each training-free peer: paired Δ [95 % CI] and McNemar p, and the KIDs."""
    trained = [r for r in rows if r.get("vs_peers")]
    if not trained:
        return []
    kid = {r["row"]: r["kid"] for r in rows}
    names = list(trained[0]["vs_peers"])
    lines = ["", "| row | " + " | ".join(f"Δ vs {p} [95% CI], McNemar p" for p in names) + " | KID×10³ (peers) |",
             "|" + "---|" * (len(names) + 2)]
    for r in trained:
        cells = [f"{diff_cell(v)}, {v['mcnemar_p']:.3g}"
                 for v in r["vs_peers"].values()]
        peer_kid = " / ".join(f"{1e3 * kid[p]:.2f}" for p in names)
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {1e3 * r['kid']:.2f} ({peer_kid}) |")
    lines += ["", "Distilled rows against the training-free peers on the same items and noise (the teacher's model, "
              "as few forwards)."]
    return lines


def _colour_cell(colour: dict | None) -> str:
    return "—" if colour is None else f"{100 * colour['bright']:.1f} % / {colour['saturation']:.2f}"
