#!/usr/bin/env python3
"""The teacher's training-efficiency probes (issue 17 item 1) on one CUDA GPU: every arm at once, then scored.

Each arm is the default recipe (the 7,000-step schedule: these are the first steps of the real run) with one change,
as ``train teacher --config`` overrides. All arms train side by side on the one GPU for the same wall clock, each a
process of its own (a step of this 20 M-parameter model is bound by the host's op dispatch, which leaves the GPU
mostly idle), keeping the EMA model every ``--every`` steps. When the clock runs out they are stopped and each
arm's snapshots are scored on fixed subsets of the suites (the first items, which cycle through every tag):
vqa-shapes 300 × 1, GenEval-Shapes 120 × 2, GEdit-Shapes 60 × 2, with the default samplers.

What comes back, in ``--export``: ``ARM.json`` per arm (overrides, loss history, steps, seconds, scores per
snapshot) and ``probes.json`` (machine, settings). The CPU cost per step of each arm is measured at home
(``scripts/teacher_step_cost.py --config``); the two together give each arm's score against CPU minutes.

    PYTHONPATH=src timeout 560 python3 scripts/gpu_probes.py --vae runs/vae/ae.safetensors --export "$OUT"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARMS: dict[str, dict] = {
    "base": {},
    "repa": {"align": {"repa": 0.5, "layer": 4}},
    "colours": {"align": {"labels": 1.0, "layer": 4}},
    "repa-colours": {"align": {"repa": 0.5, "labels": 1.0, "layer": 4}},
    # generation-heavy first, with single objects or pairs in caption scenes; then the default mix
    "curriculum": {"curriculum": [
        {"until": 0.15, "batch": {"gen": 40, "edit": 8, "und": 16}, "mix": {"caption_objects": 2}},
        {"until": 0.5, "batch": {"gen": 32, "edit": 16, "und": 16}},
    ]},
    # model shape: 12 layers (a 2-layer draft stays ≤ 15 % of a step... of a 16-layer one; 12 is the floor)
    "wide-12": {"llm": {"hidden_size": 384, "num_heads": 12, "num_kv_heads": 6, "intermediate_size": 768,
                        "num_layers": 12}},
    "narrow-12": {"llm": {"hidden_size": 192, "num_heads": 6, "num_kv_heads": 3, "intermediate_size": 384,
                          "num_layers": 12}},
    # the optimiser and the noise: twice the learning rate; training times shifted toward noise (SD3's shift 3),
    # where a scene's layout, colours and count are decided
    "lr-2x": {"lr": 2e-3},
    "shift-3": {"timestep_shift": 3.0},
    # batch size: half the samples per step (≈ half the CPU cost, so twice the steps in the same hours)
    "half-batch": {"batch": {"gen": 12, "edit": 8, "und": 12}},
}
DEFAULT_ARMS = ("base", "repa", "curriculum", "wide-12", "narrow-12", "lr-2x", "shift-3", "half-batch")

# (suite, items, images per item, bf16 autocast)
SUBSETS = (("vqa-shapes", 300, 1, False), ("geneval-shapes", 120, 2, True), ("gedit-shapes", 60, 2, True))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def score_arm(arm: str, work: Path, device: str, export: Path, scale: float = 1.0) -> None:
    """Score every snapshot of one arm on the subsets, newest first; rewrite ``export/ARM.json`` after each."""
    import torch

    from hyperbagel.eval.model_eval import EvalSettings, evaluate
    from hyperbagel.pipeline import Pipeline

    folder = work / arm
    report = json.loads((export / f"{arm}.json").read_text())
    report["scores"] = {}
    snaps = sorted((folder / "snapshots").iterdir(), reverse=True) if (folder / "snapshots").is_dir() else []
    for snap in snaps:
        step = int(snap.name)
        try:
            pipe = Pipeline.from_pretrained(snap, device=device)
        except Exception as err:  # a snapshot the stop cut short
            log(f"{arm} {step}: skipped ({err!r})")
            continue
        row = {}
        for suite, limit, samples, bf16 in SUBSETS:
            limit = max(1, round(limit * scale))
            pipe.fwd.autocast = torch.bfloat16 if bf16 else None
            settings = EvalSettings(suite, work / f"eval-{arm}-{step}-{suite}", limit, samples=samples, batch=300,
                                    progress=False, precision="bf16-autocast" if bf16 else "fp32")
            t = time.perf_counter()
            scores = evaluate(pipe, f"{arm}-{step}", settings)
            row[suite] = {k: v for k, v in scores.items() if not isinstance(v, str)}
            row[suite]["seconds"] = time.perf_counter() - t
        report["scores"][str(step)] = row
        (export / f"{arm}.json").write_text(json.dumps(report, indent=1) + "\n")
        log(f"{arm} {step}: vqa {row['vqa-shapes']['overall']:.3f} geneval {row['geneval-shapes']['overall']:.3f} "
            f"gedit {row['gedit-shapes']['overall']:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--export", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hyperbagel-probes"))
    ap.add_argument("--train-seconds", type=float, default=330, help="wall clock of every arm's training")
    ap.add_argument("--every", type=int, default=50, help="snapshot every N steps")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"from {', '.join(ARMS)}")
    ap.add_argument("--workers", type=int, default=1, help="data-loading processes per arm")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--extra", default="{}", help="overrides for every arm (JSON), e.g. small batches for a smoke test")
    ap.add_argument("--subset-scale", type=float, default=1.0, help="scale the scoring subsets (smoke tests)")
    ap.add_argument("--packed", action="store_true",
                    help="one forward per step for all task groups (TeacherConfig.packed) in the arms that allow it")
    ap.add_argument("--vit", type=Path, default=None,
                    help="a pre-trained ViT to share (recipes.teacher.save_pretrained_vit), made on the host")
    ap.add_argument("--own-vit", action="store_true",
                    help="each arm pre-trains its own ViT (default: one pre-training, shared by every arm)")
    ap.add_argument("--score", default=None, help=argparse.SUPPRESS)  # internal: score one arm
    args = ap.parse_args()
    if args.score:
        score_arm(args.score, args.work, args.device, args.export, args.subset_scale)
        return 0

    import torch

    arms = args.arms.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    args.export.mkdir(parents=True, exist_ok=True)
    machine = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
               "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor()}
    log(f"machine: {machine}; arms: {arms}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    shared = {}
    if args.vit is not None:
        shared = {"vit_init": str(args.vit.resolve()), "vit_pretrain": {"steps": 0}}
        log(f"shared ViT from {args.vit}")
    elif not args.own_vit:  # the arms' ViT pre-training is the same for all (the base model's): run it once
        from hyperbagel.recipes.teacher import TeacherConfig, save_pretrained_vit

        t = time.perf_counter()
        base = TeacherConfig(**{**json.loads(args.extra), "vae": args.vae, "device": args.device,
                                "workers": args.workers})
        history = save_pretrained_vit(base, args.work / "vit.safetensors")
        shared = {"vit_init": str(args.work / "vit.safetensors"), "vit_pretrain": {"steps": 0}}
        log(f"shared ViT pre-trained in {time.perf_counter() - t:.0f} s: {history[-1]}")
    procs = {}
    for arm in arms:
        packed = {"packed": True} if args.packed and "align" not in ARMS[arm] else {}
        overrides = {**json.loads(args.extra), **shared, **packed, **ARMS[arm], "snapshot_every": args.every,
                     "ckpt_every": 10**9, "log_every": 25}
        (args.work / f"{arm}.config.json").write_text(json.dumps(overrides))
        cmd = [sys.executable, "-m", "hyperbagel.cli", "train", "teacher", "--device", args.device, "--vae", args.vae,
               "--out", str(args.work / arm), "--config", str(args.work / f"{arm}.config.json"),
               "--workers", str(args.workers)]
        logf = open(args.work / f"{arm}.log", "w")
        procs[arm] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT), time.time())
        (args.export / f"{arm}.json").write_text(json.dumps({"arm": arm, "overrides": ARMS[arm],
                                                             "command": " ".join(cmd[2:])}, indent=1) + "\n")
    t0 = time.time()
    while time.time() - t0 < args.train_seconds and any(p.poll() is None for p, _ in procs.values()):
        time.sleep(5)
    for arm, (proc, started) in procs.items():
        running = proc.poll() is None
        proc.kill()
        proc.wait()
        snaps = sorted(p.name for p in (args.work / arm / "snapshots").glob("*")) if (args.work / arm).is_dir() else []
        vit = args.work / arm / "vit_pretrain.json"
        report = json.loads((args.export / f"{arm}.json").read_text())
        report.update(train_wall_s=time.time() - started, stopped_by_clock=running, exit_code=proc.returncode,
                      snapshots=snaps, vit_pretrain=json.loads(vit.read_text())[-1] if vit.is_file() else None,
                      log_tail=(args.work / f"{arm}.log").read_text()[-3000:])
        (args.export / f"{arm}.json").write_text(json.dumps(report, indent=1) + "\n")
        log(f"{arm}: snapshots {snaps[-3:]} (exit {proc.returncode}, stopped by the clock: {running})")
    # the loss history lives in each run's log (log_every) and snapshots; the step times in its log lines
    for arm in arms:
        report = json.loads((args.export / f"{arm}.json").read_text())
        report["log"] = [line for line in (args.work / f"{arm}.log").read_text().splitlines() if " INFO " in line]
        (args.export / f"{arm}.json").write_text(json.dumps(report, indent=1) + "\n")
    scorers = [subprocess.Popen([sys.executable, __file__, "--score", arm, "--work", str(args.work), "--export",
                                 str(args.export), "--device", args.device, "--vae", args.vae,
                                 "--subset-scale", str(args.subset_scale)], env=env)
               for arm in arms]
    for s in scorers:
        s.wait()
    (args.export / "probes.json").write_text(json.dumps({
        "machine": machine, "train_seconds": args.train_seconds, "every": args.every, "arms": arms,
        "subsets": SUBSETS, "subset_scale": args.subset_scale, "workers_per_arm": args.workers,
        "extra": json.loads(args.extra), "packed": args.packed, "shared_vit": not args.own_vit,
        "vit": str(args.vit) if args.vit else None}, indent=1) + "\n")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
