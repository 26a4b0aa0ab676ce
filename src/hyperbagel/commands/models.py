"""Model commands: ``train vae|teacher``, ``generate``, ``edit``, ``understand`` and ``eval-model``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from hyperbagel.commands.decode import add_draft_args, load_draft_from_args
from hyperbagel.commands.groups import group
from hyperbagel.errors import HyperBagelError
from hyperbagel.pretrained import DEFAULT_MODEL, MODEL_HELP


def add_commands(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a model (vae, teacher)")
    tsub = train.add_subparsers(dest="train_command", metavar="MODEL", required=True)

    p = tsub.add_parser("vae", help="train the Shapes World autoencoder")
    p.add_argument("--out", type=Path, default=Path("runs/vae"))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--preset", default="tiny", choices=("micro", "tiny"), help="the model preset whose VAE to train")
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint every N steps (default 250)")
    p.set_defaults(func=cmd_train_vae)

    p = tsub.add_parser("vit", help="pre-train the teacher's ViT on its own (what `train teacher` does first), for "
                        "runs that share one (the teacher config's vit_init)")
    p.add_argument("--preset", default="tiny", choices=("micro", "tiny"))
    p.add_argument("--vae", type=Path, default=Path("runs/vae/ae.safetensors"))
    p.add_argument("--out", type=Path, default=Path("runs/vit"),
                   help="folder for vit.safetensors and vit_pretrain.json")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--config", type=Path, default=None, help="JSON file of ViTPretrainConfig overrides")
    p.set_defaults(func=cmd_train_vit)

    p = tsub.add_parser("teacher", help="train the unified teacher on Shapes World (resumes if OUT has a checkpoint)")
    p.add_argument("--preset", default="tiny", choices=("micro", "tiny"))
    p.add_argument("--vae", type=Path, default=Path("runs/vae/ae.safetensors"))
    p.add_argument("--out", type=Path, default=Path("runs/teacher"))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--config", type=Path, default=None, help="JSON file of TeacherConfig overrides")
    p.add_argument("--device", default=None, help="cpu (default) or cuda: the model's device, bf16 autocast")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that build batches ahead of the model (default: 0 on the CPU, all cores but one "
                        "with --device cuda)")
    p.set_defaults(func=cmd_train_teacher)

    bench = group(subparsers, "bench", "benchmarks", "bench_command")
    p = bench.add_parser("kills", help="SIGKILL recipes (micro) at random moments and during checkpoint writes, "
                                       "restart them, and check that they end as an uninterrupted run")
    p.add_argument("--recipes", default="vae,vit,teacher,draft,reward,cfg,tscd,dmdo,adp,refl,quickstart")
    p.add_argument("--kills", type=int, default=3, help="kills per recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bench-kills"))
    p.set_defaults(func=cmd_bench_kills)

    p = bench.add_parser("fuzz", help="property-based fuzzing of the input surfaces: every input must succeed or end "
                                      "in one clear line, never a stack trace")
    p.add_argument("--surfaces", default="pipeline,model-folder,result-folder,config,cli")
    p.add_argument("--examples", type=int, default=1000, help="generated inputs per surface")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bench-fuzz"))
    p.set_defaults(func=cmd_bench_fuzz)

    p = subparsers.add_parser("plan", help="memory per GPU of each training stage under FSDP2, from the real modules")
    p.add_argument("--preset", default="bagel-7b", choices=("bagel-7b", "tiny", "micro"))
    p.add_argument("--stage", default="all", help="a stage (vae, vit, teacher, draft, reward, cfg, tscd, dmdo, adp, "
                   "refl) or all")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU")
    p.add_argument("--batch", type=int, default=1, help="samples per GPU per forward")
    p.add_argument("--image-size", type=int, default=1024, help="generated image side (px)")
    p.add_argument("--context-tokens", type=int, default=256)
    p.add_argument("--vit-tokens", type=int, default=1024)
    p.add_argument("--no-activation-checkpointing", action="store_true")
    p.add_argument("--param-dtype", default="bfloat16", choices=("bfloat16", "float32"),
                   help="the dtype FSDP2 gathers parameters in (the recipes' sharding.param_dtype)")
    p.set_defaults(func=cmd_plan)

    p = subparsers.add_parser("generate", help="text-to-image")
    _model_args(p)
    p.add_argument("prompt")
    p.add_argument("--out", type=Path, default=Path("generated.png"))
    p.add_argument("--think", action="store_true", help="write a plan first, then draw it")
    _sampler_args(p, text_scale=4.0, image_scale=1.0)
    add_draft_args(p)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("edit", help="edit an image by an instruction")
    _model_args(p)
    p.add_argument("image", type=Path)
    p.add_argument("instruction")
    p.add_argument("--out", type=Path, default=Path("edited.png"))
    p.add_argument("--think", action="store_true")
    _sampler_args(p, text_scale=4.0, image_scale=1.5)
    add_draft_args(p)
    p.set_defaults(func=cmd_edit)

    p = subparsers.add_parser("understand", help="answer a question about an image")
    _model_args(p)
    p.add_argument("image", type=Path)
    p.add_argument("question")
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    add_draft_args(p)
    p.set_defaults(func=cmd_understand)

    p = subparsers.add_parser("eval-model", help="run a model on a suite, write its result folder, score it")
    p.add_argument("--ckpt", type=Path, default=Path(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--suite", required=True, choices=("geneval-shapes", "gedit-shapes", "vqa-shapes"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--samples", type=int, default=4, help="images per prompt or edit")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the scores here")
    p.add_argument("--bf16", action="store_true", help="run the language model under bf16 CPU autocast")
    p.add_argument("--text-scale", type=float, default=None,
                   help="image suites: text guidance scale (default: the task's, 4.0)")
    p.add_argument("--image-scale", type=float, default=None,
                   help="gedit-shapes: image guidance scale (default 1.5)")
    p.set_defaults(func=cmd_eval_model)

    p = subparsers.add_parser("ship", help="make a trained model folder a shipped one: bf16 weights, model card, "
                                           "SHA256SUMS")
    p.add_argument("run", type=Path, help="the trained model folder (as train teacher leaves it)")
    p.add_argument("--out", type=Path, required=True, help="e.g. src/hyperbagel/pretrained/shapes-teacher")
    p.add_argument("--scores", type=Path, nargs="*", default=[],
                   help="score JSON files of the full suites (eval-model --json) to put in the card (none: the card "
                        "says it is not scored yet; ship again once it is)")
    p.add_argument("--command", required=True, help="the command that trained it, for the card")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: round to bf16)")
    p.set_defaults(func=cmd_ship)

    p = subparsers.add_parser("sheet", help="one PNG of a model's images, edits and answers on the first item of each "
                                            "suite tag, each judged")
    p.add_argument("--ckpt", type=Path, default=Path(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--out", type=Path, default=Path("sheet.png"))
    p.add_argument("--per-row", type=int, default=6)
    p.set_defaults(func=cmd_sheet)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", type=Path, default=Path(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode, draft and denoising steps (pays off over many calls; CUDA graphs "
                        "for denoising on a GPU)")


def _sampler_args(p: argparse.ArgumentParser, text_scale: float, image_scale: float) -> None:
    p.add_argument("--steps", type=int, default=None,
                   help="timesteps of the schedule, steps − 1 denoising steps (default: 50 for the teacher, the "
                        "student's own, 7 = 6 one-forward steps, for a distilled model)")
    p.add_argument("--shift", type=float, default=None, help="timestep shift (default 3.0, or the student's)")
    p.add_argument("--student", type=Path, default=None,
                   help="a distilled model folder whose student denoises (default: the --ckpt folder's, if any)")
    p.add_argument("--baseline", action="store_true", help="sample with the teacher even when a student is present")
    p.add_argument("--text-scale", type=float, default=text_scale)
    p.add_argument("--image-scale", type=float, default=image_scale)


def _guidance(args, base):
    """The scales as given; the pipeline checks them against the range its sampling model was trained on."""
    import dataclasses

    try:
        return dataclasses.replace(base, text_scale=args.text_scale, image_scale=args.image_scale)
    except ValueError as err:
        raise HyperBagelError(str(err)) from None


def _pipeline(args):
    from hyperbagel.pipeline import Pipeline

    student = getattr(args, "student", None)
    if getattr(args, "baseline", False):
        student = False
    pipe = Pipeline.from_pretrained(args.ckpt, student=student, compile=getattr(args, "compile", False))
    load_draft_from_args(pipe, args)  # --draft: speculative decoding for answers and think plans
    return pipe


def _sampler(args, pipe):
    """The sampler settings the flags ask for; None leaves the pipeline's default (teacher or student)."""
    from hyperbagel.pipeline import SamplerSettings

    if args.steps is None and args.shift is None:
        return None
    info = pipe.student_info if pipe.student is not None else None
    steps = args.steps if args.steps is not None else (info.steps + 1 if info else 50)
    shift = args.shift if args.shift is not None else (info.shift if info else 3.0)
    return SamplerSettings(steps, shift)


def _save(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def cmd_train_vae(args) -> int:
    import dataclasses

    from hyperbagel.model.presets import preset
    from hyperbagel.recipes.vae import VAETrainConfig, shapes_world_image, train_vae

    vae = preset(args.preset).vae
    cfg = VAETrainConfig(vae=vae)
    try:
        if args.steps:
            cfg = dataclasses.replace(cfg, steps=args.steps)
        if args.ckpt_every:
            cfg = dataclasses.replace(cfg, checkpoint_every=args.ckpt_every)
    except ValueError as err:  # the config's own checks: --steps, --ckpt-every
        raise HyperBagelError(str(err)) from None
    from hyperbagel.training.distributed import init

    init()  # the process group under torchrun
    train_vae(cfg, lambda rng: shapes_world_image(rng, vae.resolution), args.out)
    print(f"autoencoder: {args.out / 'ae.safetensors'}")
    return 0


def cmd_sheet(args) -> int:
    from hyperbagel.eval.model_sheet import model_sheet

    verdicts = model_sheet(args.ckpt, args.out, args.per_row)
    for task, items in verdicts.items():
        print(f"{task}: {sum(v['ok'] for v in items)}/{len(items)} judged correct")
    print(f"wrote {args.out}")
    return 0


def cmd_bench_kills(args) -> int:
    import dataclasses
    import platform

    import torch

    from hyperbagel.eval.kill_bench import kill_and_compare, micro_recipes
    from hyperbagel.files import atomic_write_text
    from hyperbagel.model.autoencoder import AutoEncoder
    from hyperbagel.model.presets import preset
    from hyperbagel.recipes.vae import save_autoencoder

    if args.kills < 1:
        raise HyperBagelError("--kills must be at least 1")
    args.out = args.out.resolve()  # the recipes run with it as their working directory
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_autoencoder(AutoEncoder(preset("micro").vae), args.out / "ae.safetensors")
    recipes = micro_recipes(args.out / "ae.safetensors", args.out)
    names = args.recipes.split(",")
    if unknown := [n for n in names if n not in recipes]:
        raise HyperBagelError(f"unknown recipes {unknown}; the bench knows {', '.join(recipes)}")
    rows, results = [], []
    for name in names:
        r = kill_and_compare(recipes[name], args.out, args.kills, args.seed)
        results.append(dataclasses.asdict(r) | {"ok": r.ok})
        killed = sum(k["killed"] for k in r.kills)
        during = sum(k["killed"] and k["checkpoint_write_seen"] for k in r.kills)
        rows.append(f"| {name} | {killed} / {len(r.kills)} | {during} | {r.history_equal} | {r.weights_equal} | "
                    f"{r.seconds_uninterrupted:.1f} |")
    table = "\n".join(["| recipe | killed / starts | killed mid-checkpoint | losses equal | weights equal | "
                        "uninterrupted s |", "|---|---|---|---|---|---|", *rows])
    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}"
    atomic_write_text(json.dumps({"machine": machine, "kills": args.kills, "seed": args.seed, "results": results},
                                 indent=1) + "\n", args.out / "kills.json")
    print(f"bench kills ({machine}, {args.kills} kills per recipe, seed {args.seed}):\n{table}")
    return 0 if all(r["ok"] for r in results) else 1


def cmd_bench_fuzz(args) -> int:
    import dataclasses
    import platform
    import time

    from hyperbagel.eval.fuzz import fuzz
    from hyperbagel.eval.random_folders import random_accelerated_folders
    from hyperbagel.files import atomic_write_text

    if args.examples < 1:
        raise HyperBagelError("--examples must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    student, draft = random_accelerated_folders(args.out)  # random weights: fuzzing is about inputs, not quality
    start = time.perf_counter()
    reports = fuzz(args.surfaces.split(","), args.examples, args.seed, student, draft)
    rows = [f"| {r.surface} | {r.tried} | {r.counts['ok']} | {r.counts['clear']} | {r.counts['trace']} |"
            for r in reports]
    table = "\n".join(["| surface | inputs | succeeded | clear one-line errors | stack traces |",
                       "|---|---|---|---|---|", *rows])
    machine = f"{platform.machine()} {os.cpu_count()} cores"
    atomic_write_text(json.dumps({"machine": machine, "examples": args.examples, "seed": args.seed,
                                  "seconds": time.perf_counter() - start,
                                  "surfaces": [dataclasses.asdict(r) for r in reports]}, indent=1) + "\n",
                      args.out / "fuzz.json")
    print(f"bench fuzz ({machine}, {args.examples} inputs per surface, seed {args.seed}, "
          f"{time.perf_counter() - start:.0f} s):\n{table}")
    for r in reports:
        for trace in r.traces:
            print(f"  {r.surface}: {trace}")
    return 0 if all(r.counts["trace"] == 0 for r in reports) else 1


def cmd_plan(args) -> int:
    from hyperbagel.recipes.memory_plan import STAGES, PlanSettings, plan_table, settings_line

    stages = list(STAGES) if args.stage == "all" else [args.stage]
    if any(stage not in STAGES for stage in stages):
        raise HyperBagelError(f"unknown stage {args.stage!r}; stages are {', '.join(STAGES)} or all")
    if not 1 <= args.gpus <= 4096 or args.gpu_memory <= 0 or args.batch < 1:
        raise HyperBagelError("--gpus must be from 1 to 4096, --batch at least 1 and --gpu-memory positive")
    s = PlanSettings(args.preset, args.gpus, args.gpu_memory, args.batch, args.image_size, args.context_tokens,
                     args.vit_tokens, not args.no_activation_checkpointing, args.param_dtype)
    print(f"memory plan (GiB per GPU at {s.gpus} GPUs): {settings_line(s)}")
    print(plan_table(stages, s))
    return 0


def cmd_train_vit(args) -> int:
    from hyperbagel.config_types import config_from_json
    from hyperbagel.files import atomic_write_text
    from hyperbagel.recipes.teacher import TeacherConfig, save_pretrained_vit
    from hyperbagel.recipes.vit import ViTPretrainConfig
    from hyperbagel.training.distributed import init, is_main

    vit = config_from_json(ViTPretrainConfig, args.config, {}, "train vit --config")
    if args.steps:
        vit.steps = args.steps
    if vit.steps <= 0 or vit.batch <= 0:
        raise HyperBagelError("train vit: steps and batch must be positive")
    if not args.vae.is_file():
        raise HyperBagelError(f"autoencoder not found: {args.vae} (train one with `hyperbagel train vae`)")
    init()  # the process group under torchrun
    cfg = TeacherConfig(preset=args.preset, vae=str(args.vae), vit_pretrain=vit)
    history = save_pretrained_vit(cfg, args.out / "vit.safetensors", progress=True)
    if is_main():
        atomic_write_text(json.dumps(history) + "\n", args.out / "vit_pretrain.json")
        print(f"ViT: {args.out / 'vit.safetensors'} (last: {history[-1]})")
    return 0


def cmd_train_teacher(args) -> int:
    from hyperbagel.config_types import config_from_json
    from hyperbagel.recipes.teacher import TeacherConfig, train_teacher
    from hyperbagel.training.distributed import init, is_main

    cfg = config_from_json(TeacherConfig, args.config, {"preset": args.preset, "vae": str(args.vae),
                                                        "out": str(args.out)}, "train teacher --config")
    if args.steps:
        cfg.steps = args.steps
    if args.device:
        cfg.device = args.device
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise HyperBagelError("--device cuda: this torch build sees no CUDA device")
        if args.workers is None:
            cfg.workers = max(1, (os.cpu_count() or 2) - 1)
    if args.workers is not None:
        if args.workers < 0:
            raise HyperBagelError("--workers must be 0 or more")
        cfg.workers = args.workers
    init(cfg.device)  # the process group under torchrun
    out = train_teacher(cfg)
    if is_main():
        print(f"teacher: {out}")
    return 0


def cmd_ship(args) -> int:
    from hyperbagel.pretrained.ship import ship

    sums = ship(args.run, args.out, args.scores, args.command, bf16=not args.fp32)
    size = sum((args.out / name).stat().st_size for name in sums)
    print(f"shipped {args.run} → {args.out}: {len(sums)} files, {size / 2**20:.1f} MiB")
    return 0


def cmd_generate(args) -> int:
    from hyperbagel.pipeline import T2I_GUIDANCE

    pipe = _pipeline(args)
    res = pipe.generate(args.prompt, args.seed, _guidance(args, T2I_GUIDANCE), _sampler(args, pipe), think=args.think)
    _save(res.images[0], args.out)
    if res.plans:
        print(f"plan: {res.plans[0]}")
    print(f"wrote {args.out} ({res.forwards} model forwards, {res.seconds:.2f} s{_who(pipe, args)})")
    return 0


def _who(pipe, args) -> str:
    if pipe.student is None:
        return ""
    return f", {pipe.student_info.stage}-distilled student"


def cmd_edit(args) -> int:
    from hyperbagel import inputs
    from hyperbagel.pipeline import EDIT_GUIDANCE

    pipe = _pipeline(args)
    image = inputs.image(args.image, pipe.cfg.image_size)
    res = pipe.edit(image, args.instruction, args.seed, _guidance(args, EDIT_GUIDANCE), _sampler(args, pipe),
                    think=args.think)
    _save(res.images[0], args.out)
    if res.plans:
        print(f"plan: {res.plans[0]}")
    print(f"wrote {args.out} ({res.forwards} model forwards, {res.seconds:.2f} s{_who(pipe, args)})")
    return 0


def cmd_understand(args) -> int:
    from hyperbagel import inputs
    from hyperbagel.decode.sampling import SamplingConfig

    pipe = _pipeline(args)
    image = inputs.image(args.image, pipe.cfg.image_size)
    try:
        sampling = SamplingConfig(args.temperature, args.top_p)
    except ValueError as err:
        raise HyperBagelError(str(err)) from None
    res = pipe.understand(image, args.question, args.max_new_tokens, sampling, args.seed)
    print(res.texts[0])
    print(f"({res.forwards} model forwards, {res.seconds:.2f} s)")
    return 0


def cmd_eval_model(args) -> int:
    from hyperbagel.eval.model_eval import EvalSettings, evaluate, suite_guidance

    guidance = None
    if args.text_scale is not None or args.image_scale is not None:
        if args.suite == "vqa-shapes":
            raise HyperBagelError("--text-scale and --image-scale apply to the image suites, not to vqa-shapes")
        try:
            guidance = suite_guidance(args.suite, args.text_scale, args.image_scale)
        except ValueError as err:
            raise HyperBagelError(str(err)) from None
    from hyperbagel.precision import use_bf16

    pipe = _pipeline(args)
    bf16 = use_bf16(args.bf16, pipe.fwd.device.type)
    if bf16:
        import torch

        for fwd in (pipe.fwd, pipe.student_fwd):
            if fwd is not None:
                fwd.autocast = torch.bfloat16
    precision = "bf16-autocast" if bf16 else "fp32 (bf16 asked; no native bf16 here)" if args.bf16 else "fp32"
    settings = EvalSettings(args.suite, args.out, args.limit, args.samples, args.batch, args.seed,
                            precision=precision, guidance=guidance)
    scores = evaluate(pipe, str(args.ckpt), settings)
    text = json.dumps(scores, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0
