"""How much of the teacher's guidance a CFG-distilled student reproduces, per task and per time band.

Along the teacher's own guided rollouts (the states stage 1 trains on, from rows it never trained on), at every
``--every``-th state: the teacher's conditional velocity ``v_c``, its guided velocity ``v_g`` (the stage-1 target)
and the student's ``v_s`` at the same scales. With ``d = v_g − v_c`` (what guidance adds; ``distill.cfg.
guidance_shares``):
- ``applied`` = <v_s − v_c, d> / |d|²: the share of the guidance direction the student applies (1 is exact; below 1
  the student under-guides);
- ``left`` = |v_s − v_g|² / |d|²: the share of the guidance's energy the student misses (0 is exact; a student
  that equals ``v_c`` leaves 1; above 1, its error off the guidance direction outweighs what it gets right);
- ``mse`` = |v_s − v_g|², stage 1's loss on these states;
- ``bf16`` = |v_g − v_g^fp32|²: how far the target stage 1 trains on (the teacher's branches under bf16 autocast, as
  ``DistillConfig.bf16``) is from the same guided velocity in fp32: noise no student can fit, amplified by CFG.
Per group, per band of ``t`` and (sampled scales) per text scale, over rows and states inside the CFG interval
(outside it ``d = 0``): ``applied`` and ``left`` weighted by each state's ``|d|²`` (so Σ<v_s − v_c, d> / Σ|d|² and
Σ|v_s − v_g|² / Σ|d|²: states where guidance adds almost nothing cannot swamp the ratios), ``mse`` and ``bf16`` plain
means. States outside the interval, where the target is ``v_c`` itself, are kept under ``--outside``: there only
``mse`` (|v_s − v_c|², guidance the student adds where the teacher adds none) means anything.

    python scripts/guidance_fidelity.py --student runs/distill-cfg [--teacher shapes-teacher] [--rows 8]
        [--batches 2] [--scales default|sampled] [--every 4] [--bands 0.4,0.7,0.9] [--outside]

``default`` feeds every row the sampler's default scales (text 4.0; editing image 1.5), the bench's; ``sampled``
draws them as stage 1 does (text ~ U[1, 5], image ~ U[1, 2.5]).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform

import torch

from hyperbagel.distill.cfg import guidance_shares, teacher_guided_velocity
from hyperbagel.flow.guidance import interval_mask
from hyperbagel.flow.sampler import euler
from hyperbagel.flow.schedule import bagel_timesteps
from hyperbagel.model.student import read_student_info
from hyperbagel.recipes.distill_cfg import CFGDistillConfig
from hyperbagel.recipes.distill_common import GROUPS, Runner, autocast, conditions, load_setup, new_student

HELD_OUT = 1_000_000  # step indices far past any training run's, so the rows' generators are ones it never drew


def _bands(edges: list[float]) -> list[tuple[float, float]]:
    """``[0.4, 0.7]`` → (0, 0.4], (0.4, 0.7], (0.7, 1]."""
    cuts = [0.0, *sorted(e for e in edges if 0.0 < e < 1.0), 1.0]
    return list(zip(cuts[:-1], cuts[1:]))


def _band(t: float, bands: list[tuple[float, float]]) -> str:
    for lo, hi in bands:
        if lo < t <= hi:
            return f"({lo}, {hi}]"
    return "0"


def _scale_bin(scale: float) -> str:
    lo = min(int(scale), 4)
    return f"[{lo}, {lo + 1})"


def fidelity(setup, student: Runner, cfg: CFGDistillConfig, group: str, batch: int, scales: str,
             every: int, outside: bool) -> list[dict]:
    """One batch of rows: per kept state and row, its ``t``, text scale, measures and guidance energy."""
    c = conditions(setup, cfg, HELD_OUT + batch, group, cfg_branches=True)
    if scales == "default":
        info = read_student_info(cfg.init)
        c = dataclasses.replace(c, text_scale=torch.full_like(c.text_scale, info.text_scale),
                                image_scale=torch.full_like(c.image_scale, info.image_scale if group == "edit"
                                                            else 1.0))
    ids, fwd, branches = setup.ids, setup.teacher, c.branches
    rows: list[dict] = []
    with torch.no_grad(), autocast(cfg):

        def guided(x, t):  # stage 1's own target
            return teacher_guided_velocity(fwd, branches, ids, x, float(t), c.text_scale, c.image_scale, c.guidance)

        def guided_fp32(x, t):
            with torch.autocast(x.device.type, enabled=False):
                return guided(x.float(), t).float()

        trajectory: list = []
        euler(guided, c.noise, bagel_timesteps(cfg.rollout_timesteps, cfg.shift), trajectory)
        for t, x, v_g in trajectory[::every]:
            tt = torch.full((x.shape[0],), float(t))
            if not (outside or bool(interval_mask(tt, c.guidance.interval).any())):
                continue
            v_c = fwd.velocity(branches.cond, x, tt, ids)[0].float()
            v_s = student.velocity(branches.cond, x, tt, ids, **c.scales(tt))[0].float()
            v_g = v_g.float()
            applied, left = guidance_shares(v_s, v_c, v_g)
            energy = ((v_g - v_c) ** 2).flatten(1).sum(1)
            mse = ((v_s - v_g) ** 2).flatten(1).mean(1)
            bf16 = ((v_g - guided_fp32(x, t)) ** 2).flatten(1).mean(1)
            for r in range(x.shape[0]):
                rows.append({"t": float(t), "text": float(c.text_scale[r]), "applied": float(applied[r]),
                             "left": float(left[r]), "mse": float(mse[r]), "bf16": float(bf16[r]),
                             "energy": float(energy[r])})
    return rows


def summarise(rows: list[dict], bands: list[tuple[float, float]]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    scales = sorted({_scale_bin(r["text"]) for r in rows})
    groups = {"all": rows, **{k: [r for r in rows if _band(r["t"], bands) == k]
                              for k in (_band(hi, bands) for _, hi in bands)}}
    if len(scales) > 1:  # sampled scales: also by text scale
        groups |= {f"text {k}": [r for r in rows if _scale_bin(r["text"]) == k] for k in scales}
    for key, kept in groups.items():
        if kept:
            energy = sum(r["energy"] for r in kept)  # 0 outside the interval: no direction to share
            out[key] = {m: sum(r[m] * r["energy"] for r in kept) / energy if energy else float("nan")
                        for m in ("applied", "left")} | {
                m: sum(r[m] for r in kept) / len(kept) for m in ("mse", "bf16")} | {"states": len(kept)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="a stage-1 (or later) model folder with student.safetensors")
    ap.add_argument("--teacher", default="shapes-teacher")
    ap.add_argument("--rows", type=int, default=8, help="rows per batch and group")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--scales", choices=("default", "sampled"), default="default")
    ap.add_argument("--every", type=int, default=4, help="keep every N-th state of the 49")
    ap.add_argument("--groups", default="gen,edit")
    ap.add_argument("--bands", default="0.4,0.7,0.9", help="the t bands' inner edges")
    ap.add_argument("--outside", action="store_true", help="also keep states outside the CFG interval (mse only)")
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args()
    groups = [g for g in args.groups.split(",") if g]
    bands = _bands([float(e) for e in args.bands.split(",") if e])
    if set(groups) - set(GROUPS):
        ap.error(f"--groups takes {','.join(GROUPS)}")
    cfg = CFGDistillConfig(teacher=args.teacher, init=args.student, batch={g: args.rows for g in groups}, bf16=True)
    setup = load_setup(cfg)
    student = Runner(new_student(setup, cfg.init, trainable=False))
    report = {"student": args.student, "teacher": args.teacher, "scales": args.scales, "rows": args.rows,
              "batches": args.batches, "every": args.every, "bands": bands,
              "outside": args.outside, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "groups": {}}
    for group in groups:
        rows = [r for b in range(args.batches) for r in fidelity(setup, student, cfg, group, b, args.scales,
                                                                   args.every, args.outside)]
        report["groups"][group] = summarise(rows, bands)
        print(f"{group} ({args.scales} scales, {args.rows}×{args.batches} rows):")
        print(f"  {'t band':<12} {'states':>6} {'applied':>8} {'left':>7} {'mse':>8} {'bf16':>8}")
        for band, s in report["groups"][group].items():
            print(f"  {band:<12} {s['states']:>6} {s['applied']:>8.3f} {s['left']:>7.3f} {s['mse']:>8.4f} "
                  f"{s['bf16']:>8.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
