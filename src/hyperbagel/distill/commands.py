"""Generation-acceleration commands: ``distill cfg|tscd|dmdo`` (the three stages) and ``bench generate|edit``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hyperbagel.errors import HyperBagelError

STAGES = {
    "cfg": ("stage 1: CFG distillation (one forward = the guided velocity)", None, "runs/distill-cfg"),
    "tscd": ("stage 2: trajectory-segmented consistency distillation (3 segments, adversarial)", "runs/distill-cfg",
             "runs/distill-tscd"),
    "dmdo": ("stage 3: distribution matching on the generator's ODE paths (the 6-step model)", "runs/distill-tscd",
             "runs/distill-dmdo"),
}


def _group(subparsers, name: str, help: str, dest: str, metavar: str):
    """The sub-command group ``name`` (``distill``, ``bench``), created unless another module made it already."""
    parser = subparsers.choices.get(name) or subparsers.add_parser(name, help=help)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, metavar=metavar, required=True)


def add_commands(subparsers) -> None:
    dsub = _group(subparsers, "distill", "distil the generation branch (cfg → tscd → dmdo)", "distill_command",
                  "STAGE")
    for stage, (text, init, out) in STAGES.items():
        p = dsub.add_parser(stage, help=text, description=text + ". Resumes if OUT has a checkpoint.")
        p.add_argument("--teacher", type=Path, default=Path("runs/teacher"), help="the teacher's model folder")
        if init is not None:
            p.add_argument("--init", type=Path, default=Path(init), help="the previous stage's folder")
        p.add_argument("--out", type=Path, default=Path(out))
        p.add_argument("--steps", type=int, default=None)
        p.add_argument("--config", type=Path, default=None, help="JSON file of config overrides")
        p.set_defaults(func=cmd_distill, stage=stage)

    bsub = _group(subparsers, "bench", "benchmarks", "bench_command", "WHAT")
    for task, suite in (("generate", "geneval-shapes"), ("edit", "gedit-shapes")):
        p = bsub.add_parser(task, help=f"{suite}: the teacher, each stage and training-free 6-forward peers")
        p.add_argument("--teacher", type=Path, default=Path("runs/teacher"))
        p.add_argument("--stage", action="append", default=None, metavar="NAME=FOLDER",
                       help="a distilled model folder (repeatable); default: runs/distill-{cfg,tscd,dmdo} if present")
        p.add_argument("--rows", default=None,
                       help="comma-separated rows to run (default: all); see `hyperbagel bench generate --list`")
        p.add_argument("--list", action="store_true", help="list the rows and exit")
        p.add_argument("--out", type=Path, default=Path(f"out/bench-{task}"))
        p.add_argument("--limit", type=int, default=None, help="first N items of the suite (every tag is covered)")
        p.add_argument("--samples", type=int, default=4, help="images per prompt or edit")
        p.add_argument("--batch", type=int, default=32, help="images per sampling call")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% CI")
        p.add_argument("--bf16", action="store_true", help="every row under bf16 autocast (faster on CPU)")
        p.add_argument("--encoder", type=Path, default=Path("runs/shapes-encoder/encoder.safetensors"),
                       help="the Shapes encoder for KID (trained on real renders if missing)")
        p.set_defaults(func=cmd_bench, suite=suite, task=task)


def cmd_distill(args) -> int:
    from hyperbagel.recipes.distill_cfg import CFGDistillConfig, train_cfg
    from hyperbagel.recipes.distill_dmdo import DMDOConfig, train_dmdo
    from hyperbagel.recipes.distill_tscd import TSCDConfig, train_tscd

    config_cls, train = {"cfg": (CFGDistillConfig, train_cfg), "tscd": (TSCDConfig, train_tscd),
                         "dmdo": (DMDOConfig, train_dmdo)}[args.stage]
    overrides = json.loads(args.config.read_text()) if args.config else {}
    fields = {"teacher": str(args.teacher), "out": str(args.out)}
    if getattr(args, "init", None) is not None:
        fields["init"] = str(args.init)
    try:
        cfg = config_cls(**{**fields, **overrides})
    except (TypeError, ValueError) as err:
        raise HyperBagelError(f"distill {args.stage} config: {err}") from None
    if args.steps:
        cfg.steps = args.steps
    out = train(cfg)
    print(f"{args.stage}-distilled model: {out}")
    return 0


def parse_stages(values: list[str] | None) -> dict[str, Path]:
    if not values:
        return {s: Path(f"runs/distill-{s}") for s in STAGES if Path(f"runs/distill-{s}/student.safetensors").exists()}
    stages = {}
    for v in values:
        name, sep, folder = v.partition("=")
        if not sep or not name or not folder:
            raise HyperBagelError(f"--stage takes NAME=FOLDER, got {v!r}")
        stages[name] = Path(folder)
    return stages


def cmd_bench(args) -> int:
    from hyperbagel.eval.bench import BenchSettings, bench_rows, run_bench

    settings = BenchSettings(task=args.task, out=args.out, limit=args.limit, samples=args.samples, batch=args.batch,
                             seed=args.seed, bootstrap=args.bootstrap, encoder=args.encoder,
                             bf16=args.bf16)
    stages = parse_stages(args.stage)
    rows = bench_rows(args.task, stages)
    if args.list:
        for row in rows:
            print(f"{row.name:16s} {row.describe}")
        return 0
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = sorted(set(wanted) - {r.name for r in rows})
        if unknown:
            raise HyperBagelError(f"unknown rows {unknown}; rows are {[r.name for r in rows]}")
        rows = [r for r in rows if r.name in wanted or r.name == "teacher"]
    report = run_bench(args.teacher, stages, rows, settings)
    print(report["table"])
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return 0

