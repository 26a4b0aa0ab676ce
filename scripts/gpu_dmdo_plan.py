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


class StepTimes(logging.Handler):
    """The moment of each of the recipe's per-step log lines (``log_every=1``), each also printed with the peak
    memory so far: a run cut short by its time limit still shows what it measured."""

    def __init__(self, cuda: bool):
        super().__init__()
        self.times: list[float] = []
        self.cuda = cuda

    def emit(self, record: logging.LogRecord) -> None:
        if "step" in record.getMessage():
            self.times.append(time.perf_counter())
            peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if self.cuda else ""
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
    from hyperbagel.recipes.memory_plan import GIB, PlanSettings, plan_stage
    from hyperbagel.training.distributed import barrier, init, is_main

    init(args.device)
    cuda = args.device.startswith("cuda")
    phases, t = {}, time.perf_counter()
    settings = PlanSettings(preset=args.preset, gpus=1, batch=1, image_size=args.image_size, context_tokens=64,
                            layers=args.layers, vit_tokens=(args.image_size // 14) ** 2,
                            gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / GIB if cuda else 1e6)
    mcfg = settings.model_config()
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
    clock = StepTimes(cuda)
    distill_loop.log.addHandler(clock)  # the logger of every stage's per-step lines
    distill_loop.log.setLevel(logging.INFO)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    train_dmdo(cfg, progress=False)
    phases["dmdo (setup, steps, final checkpoint)"] = time.perf_counter() - t
    steps = [b - a for a, b in zip([t, *clock.times], clock.times)]  # the first holds the setup

    plan = plan_stage("dmdo", settings)
    result = {
        "machine": f"{platform.node()} {torch.cuda.get_device_name(0) if cuda else platform.machine()}, "
                   f"torch {torch.__version__}",
        "settings": dataclasses.asdict(settings), "model": {"layers": mcfg.llm.num_layers,
                                                            "hidden": mcfg.llm.hidden_size},
        "phases_s": phases, "step_s": steps[1:], "first_step_with_setup_s": steps[0] if steps else None,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB if cuda else None,
        "plan_gib": {k: v / GIB for k, v in plan.bytes.items()}, "plan_total_gib": plan.total / GIB,
        "plan_params": {"trained": plan.trained_params, "frozen": plan.frozen_params},
    }
    if is_main():
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "dmdo-plan.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: result[k] for k in ("step_s", "peak_allocated_gib", "plan_total_gib", "phases_s")}))


if __name__ == "__main__":
    main()
