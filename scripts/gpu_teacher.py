#!/usr/bin/env python3
"""Train the default teacher on one CUDA GPU inside a wall-clock budget, and pack it for the trip home.

The training itself is the documented command, unchanged but for the device and the step count:

    hyperbagel train teacher --device cuda --vae VAE --out OUT --steps STEPS

This script only decides STEPS so that the run fits the budget, and exports the result:

1. calibration (also a smoke test of every CUDA path, so a bug costs seconds, not the lease): 5 steps of the
   default recipe from scratch, then 15 more after a resume, and 100 steps of ViT pre-training, each timed;
2. STEPS = the most (a multiple of 50, at most ``--max-steps``) that fit the time left, ViT pre-training included;
3. the command above, watched: at the deadline it is stopped, and its last checkpoint is what comes back;
4. export into ``--export``: the EMA weights in bf16, as safetensors shards of at most 15 MiB, and ``meta.json``
   (model config, training config, ViT pre-training and loss history, tokenizer, timings, machine).
   ``scripts/gpu_teacher_import.py`` turns them back into a model folder;
5. evaluations on the GPU, in the time that is left (``CHECKS``): ``eval.json``.

Example (on the GPU machine)::

    PYTHONPATH=src timeout 570 python3 scripts/gpu_teacher.py --vae runs/vae/ae.safetensors --export "$OUT"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
SHARD_BYTES = 15 * 2**20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def calibrate(vae: str, device: str, workers: int, work: Path, overrides: dict) -> dict:
    """Seconds per joint step and per ViT pre-training step of the default recipe on this machine."""
    from hyperbagel.model.checkpoint import build_model
    from hyperbagel.model.presets import preset
    from hyperbagel.recipes.teacher import TeacherConfig, train_teacher
    from hyperbagel.recipes.vit import pretrain_vit

    full = TeacherConfig(**overrides)
    cfg = TeacherConfig(**{**overrides, "vae": vae, "out": str(work / "calib"), "device": device, "workers": workers,
                           "ckpt_every": 10**9, "vit_pretrain": {**dataclasses.asdict(full.vit_pretrain), "steps": 0}})
    t = time.perf_counter()
    train_teacher(cfg, progress=False, stop_after=5)
    first = time.perf_counter() - t
    t = time.perf_counter()
    train_teacher(cfg, progress=False, stop_after=20)
    step_s = (time.perf_counter() - t) / 15
    history = json.loads((work / "calib" / "train" / "train_state.json").read_text())["history"]
    log(f"calibration: first 5 steps {first:.1f} s, then {step_s:.3f} s/step; step 20 losses "
        + " ".join(f"{k}={v:.3f}" for k, v in history[-1].items() if "/" in k))

    mcfg = preset(cfg.preset)
    vit = build_model(mcfg).vit_model.vision_model
    vcfg = dataclasses.replace(full.vit_pretrain, steps=min(100, full.vit_pretrain.steps or 100))
    t = time.perf_counter()
    pretrain_vit(vit, vcfg, mcfg.image_size, mcfg.vit.patch_size, mcfg.vit_max_num_patch_per_side, False, device,
                 workers)
    vit_step_s = (time.perf_counter() - t) / vcfg.steps
    log(f"calibration: ViT pre-training {vit_step_s * 1000:.1f} ms/step")
    shutil.rmtree(work / "calib", ignore_errors=True)
    return {"first_5_steps_s": first, "step_s": step_s, "vit_step_s": vit_step_s,
            "vit_steps": full.vit_pretrain.steps}


def export(folder: Path, dest: Path, extra: dict) -> list[str]:
    """The EMA weights as bf16 shards of at most SHARD_BYTES, and everything else of the folder in meta.json."""
    dest.mkdir(parents=True, exist_ok=True)
    ema = load_file(folder / "ema.safetensors")
    shards, current, size = [], {}, 0
    for name in sorted(ema):
        t = ema[name].to(torch.bfloat16).contiguous()
        if current and size + t.numel() * 2 > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.numel() * 2
    shards.append(current)
    names = []
    for i, shard in enumerate(shards):
        name = f"ema-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(dest / name), metadata={"format": "pt"})
        names.append(name)
    state = json.loads((folder / "train" / "train_state.json").read_text())
    meta = {
        "config.json": (folder / "config.json").read_text(),
        "train_config.json": (folder / "train_config.json").read_text(),
        "tokenizer.json": (folder / "tokenizer.json").read_text(),
        "vit_pretrain.json": (folder / "vit_pretrain.json").read_text() if (folder / "vit_pretrain.json").is_file()
        else None,
        "history": state["history"],
        "shards": names,
        **extra,
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return names


# (suite, weights, images per item, bf16 autocast): the shipped (bf16) weights on the full suites at the contract's
# sample counts, then the fp32 weights on the first sample of each item, to measure what rounding to bf16 changes
CHECKS = (("vqa-shapes", "bf16", 1, False), ("vqa-shapes", "fp32", 1, False),
          ("geneval-shapes", "bf16", 4, True), ("gedit-shapes", "bf16", 4, True),
          ("geneval-shapes", "fp32", 1, True), ("gedit-shapes", "fp32", 1, True))


def evaluate_exported(folder: Path, work: Path, device: str, report: Path, limit: int | None = None) -> None:
    """Score the fp32 EMA weights and the same weights rounded to bf16 (what ships) on the suites, in ``CHECKS``
    order, rewriting ``report`` after each; VQA in fp32 compute, images under bf16 autocast, as the CPU
    evaluations run them. Whatever finishes before the machine's time runs out is in the report."""
    from hyperbagel.eval.model_eval import EvalSettings, evaluate
    from hyperbagel.pipeline import Pipeline

    rounded = work / "teacher-bf16"
    shutil.copytree(folder, rounded, dirs_exist_ok=True, ignore=shutil.ignore_patterns("train"))
    ema = {k: v.to(torch.bfloat16).float() for k, v in load_file(folder / "ema.safetensors").items()}
    save_file(ema, str(rounded / "ema.safetensors"))
    results = {}
    for suite, weights, samples, bf16 in CHECKS:
        pipe = Pipeline.from_pretrained(rounded if weights == "bf16" else folder, device=device)
        if bf16:
            pipe.fwd.autocast = torch.bfloat16
        settings = EvalSettings(suite, work / f"eval-{suite}-{weights}", limit, samples=samples, batch=300,
                                progress=False, precision="bf16-autocast" if bf16 else "fp32")
        t = time.perf_counter()
        try:
            scores = evaluate(pipe, f"teacher-{weights}-weights", settings)
        except Exception as err:  # the weights are home already: report the failure and go on
            log(f"{suite} {weights}: failed: {err!r}")
            results[f"{suite}/{weights}"] = {"error": repr(err)}
            continue
        results[f"{suite}/{weights}"] = {"scores": scores, "seconds": time.perf_counter() - t, "samples": samples}
        report.write_text(json.dumps(results, indent=1) + "\n")
        head = {k: v for k, v in scores.items() if not isinstance(v, (dict, str))}
        log(f"{suite} {weights} × {samples}: {json.dumps(head)} ({time.perf_counter() - t:.0f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--budget", type=float, default=420,
                    help="seconds for calibration, training and export; the evaluations follow (run the script "
                         "under `timeout`: what they finish in time is in eval.json)")
    ap.add_argument("--eval-limit", type=int, default=None, help="items per suite in the evaluations (default: all)")
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--min-steps", type=int, default=200)
    ap.add_argument("--export", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hyperbagel-gpu"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--config", type=Path, default=None, help="TeacherConfig overrides (JSON), as train teacher's")
    args = ap.parse_args()
    t0 = time.perf_counter()
    deadline = t0 + args.budget
    machine = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
               "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor()}
    log(f"machine: {machine}")
    args.work.mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.config.read_text()) if args.config else {}
    cal = calibrate(args.vae, args.device, args.workers, args.work, overrides)
    # time left for the real run: its start-up (~first-10-steps less their share of steps), the ViT, the steps, a
    # final checkpoint and the export (20 s), and 10 % of the step time as a margin against slower stretches
    left = deadline - time.perf_counter() - 20 - cal["first_5_steps_s"] - cal["vit_steps"] * cal["vit_step_s"]
    steps = int(left / (1.1 * cal["step_s"])) // 50 * 50
    steps = min(args.max_steps, steps)
    if steps < args.min_steps:
        log(f"only {steps} steps fit the budget (minimum {args.min_steps}): not training")
        return 1
    out = args.work / "teacher"
    cmd = [sys.executable, "-m", "hyperbagel.cli", "train", "teacher", "--device", args.device, "--vae", args.vae,
           "--out", str(out), "--steps", str(steps), "--workers", str(args.workers),
           *(["--config", str(args.config)] if args.config else [])]
    log(f"running {' '.join(cmd)}")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    finished = True
    try:
        proc.wait(timeout=max(1.0, deadline - 15 - time.perf_counter()))
    except subprocess.TimeoutExpired:
        finished = False
        log("deadline reached: stopping the run; its last checkpoint comes back")
        proc.kill()
        proc.wait()
    train_s = time.perf_counter() - t
    if not (out / "ema.safetensors").is_file():
        log(f"no model folder was written (exit code {proc.returncode})")
        return 1
    state = json.loads((out / "train" / "train_state.json").read_text())
    done = state["step"]
    log(f"trained {done}/{steps} steps in {train_s:.0f} s (exit code {proc.returncode})")
    names = export(out, args.export, {
        "command": "hyperbagel " + " ".join(cmd[cmd.index("train"):]), "steps": steps, "steps_done": done,
        "finished": finished and proc.returncode == 0, "train_seconds": train_s, "calibration": cal,
        "machine": machine, "script_seconds": time.perf_counter() - t0,
    })
    log(f"exported {names} in {time.perf_counter() - t0:.0f} s since start")
    evaluate_exported(out, args.work, args.device, args.export / "eval.json", args.eval_limit)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0 if finished and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
