"""Issue 19's GPU check: FSDP2 steps of the DMDO recipe at BAGEL-7B width and reduced depth on one GPU, the peak
memory and the step time recorded beside `hyperbagel plan`'s prediction for the same settings.

Random weights (a teacher whose generation branch differs from its understanding one, a student beside it): this
measures memory and time, not quality. Under torchrun with one process the recipe shards with FSDP2 (one shard), as
it would on more GPUs.

    torchrun --nproc_per_node=1 scripts/gpu_dmdo_plan.py --device cuda --out OUT            # one GPU (≈ 5 min)
    torchrun --nproc_per_node=1 scripts/gpu_dmdo_plan.py --preset micro --layers 2 --image-size 64 --out /tmp/x

Writes OUT/dmdo-plan.json: the settings, each phase's seconds, every DMDO step's seconds, the peak memory, and the
plan's bytes for the stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from pathlib import Path

import torch

from hyperbagel.recipes.memory_plan import GIB
from hyperbagel.training.distributed import barrier, init, is_main


class Report:
    """OUT/dmdo-plan.json, written before the steps, again after each step and when the run ends (a failure's
    message included): a run cut short by its time limit or out of memory still returns its plan, phases and
    steps. Written by the main process only."""

    def __init__(self, path: Path, cuda: bool, result: dict):
        self.path, self.cuda, self.result = path, cuda, result
        self.start = time.perf_counter()
        self.times: list[float] = []  # the moment of each step's log line (the first holds the setup)

    def write(self) -> None:
        steps = [b - a for a, b in zip([self.start, *self.times], self.times)]
        self.result.update(step_s=steps[1:], first_step_with_setup_s=steps[0] if steps else None)
        if self.cuda:
            self.result.update(peak_allocated_gib=torch.cuda.max_memory_allocated() / GIB,
                               peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB)
        if is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.result, indent=1) + "\n")


class StepTimes(logging.Handler):
    """Each of the recipe's per-step log lines (``log_every=1``): its moment into the report, and the line printed
    with the peak memory so far."""

    def __init__(self, report: Report):
        super().__init__()
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        if "step" in record.getMessage():
            self.report.times.append(time.perf_counter())
            self.report.write()
            peak = f", peak {self.report.result['peak_allocated_gib']:.1f} GiB" if self.report.cuda else ""
            print(f"{record.getMessage()}{peak}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="bagel-7b")
    ap.add_argument("--layers", type=int, default=2, help="language-model depth (BAGEL-7B has 28)")
    ap.add_argument("--image-size", type=int, default=896, help="a multiple of 14 (ViT) and 16 (latents)")
    ap.add_argument("--steps", type=int, default=3, help="DMDO steps after a first (warm-up) one")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from hyperbagel.eval.random_folders import random_model_folder, random_student_folder
    from hyperbagel.recipes import distill_loop
    from hyperbagel.recipes.distill_dmdo import DMDOConfig, train_dmdo
    from hyperbagel.recipes.memory_plan import PlanSettings, plan_stage

    init(args.device)
    cuda = args.device.startswith("cuda")
    settings = PlanSettings(preset=args.preset, gpus=1, batch=1, image_size=args.image_size, context_tokens=64,
                            layers=args.layers, vit_tokens=(args.image_size // 14) ** 2,
                            gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / GIB if cuda else 1e6)
    mcfg = settings.model_config()
    plan = plan_stage("dmdo", settings)
    phases: dict[str, float] = {}
    report = Report(args.out / "dmdo-plan.json", cuda, {
        "machine": f"{platform.node()} {torch.cuda.get_device_name(0) if cuda else platform.machine()}, "
                   f"torch {torch.__version__}",
        "settings": dataclasses.asdict(settings), "model": {"layers": mcfg.llm.num_layers,
                                                            "hidden": mcfg.llm.hidden_size},
        "phases_s": phases, "step_s": [], "first_step_with_setup_s": None,
        "peak_allocated_gib": None, "peak_reserved_gib": None, "error": None,
        "plan_gib": {k: v / GIB for k, v in plan.bytes.items()}, "plan_total_gib": plan.total / GIB,
        "plan_params": {"trained": plan.trained_params, "frozen": plan.frozen_params},
    })
    report.write()
    t = time.perf_counter()
    teacher, student = args.out / "teacher", args.out / "student"
    if is_main():
        random_model_folder(teacher, args.preset, generation_noise=0.02, init_std=0.02, config=mcfg)
        phases["teacher folder"] = time.perf_counter() - t
        print(f"teacher folder: {phases['teacher folder']:.1f} s", flush=True)
        random_student_folder(teacher, student)
        phases["student folder"] = time.perf_counter() - t - phases["teacher folder"]
        print(f"student folder: {phases['student folder']:.1f} s", flush=True)
    barrier()

    cfg = DMDOConfig(teacher=str(teacher), init=str(student), out=str(args.out / "dmdo"), steps=1 + args.steps,
                     fake_updates=1, fake_init="teacher", batch={"gen": 1, "edit": 1}, device=args.device,
                     bf16=True, ckpt_every=10**6, log_every=1,
                     sharding={"param_dtype": settings.param_dtype, "activation_checkpointing": True})
    distill_loop.log.addHandler(StepTimes(report))  # the logger of every stage's per-step lines
    distill_loop.log.setLevel(logging.INFO)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    report.start = time.perf_counter()
    try:
        train_dmdo(cfg, progress=False)
    except BaseException as err:  # out of memory, a signal: the report says so, then the error goes on
        report.result["error"] = f"{type(err).__name__}: {err}"[:2000]
        raise
    finally:
        phases["dmdo (setup, steps, final checkpoint)"] = time.perf_counter() - report.start
        report.write()
    if is_main():
        print(json.dumps({k: report.result[k] for k in ("step_s", "peak_allocated_gib", "plan_total_gib",
                                                         "phases_s")}))


if __name__ == "__main__":
    main()
