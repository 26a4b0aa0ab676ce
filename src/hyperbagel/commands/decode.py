"""Speculative-decoding commands: ``train draft`` and ``bench understand``, plus the ``--draft`` options that
``understand`` and ``generate|edit --think`` share (``add_draft_args``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hyperbagel.commands.groups import group
from hyperbagel.errors import HyperBagelError
from hyperbagel.pretrained import DEFAULT_MODEL, MODEL_HELP

VARIANT_NAMES = ("hyper-bagel", "eagle3", "no-zero-init", "no-ce", "no-zero-init-no-ce")


def add_commands(subparsers) -> None:
    train = group(subparsers, "train", "train a model", "train_command")
    p = train.add_parser("draft", help="train a speculative-decoding draft for a target (builds its data first; "
                                       "resumes if OUT has a checkpoint)")
    p.add_argument("--target", type=Path, default=Path(DEFAULT_MODEL), help="the target: " + MODEL_HELP)
    p.add_argument("--out", type=Path, default=Path("runs/draft"))
    p.add_argument("--variant", default="hyper-bagel", choices=VARIANT_NAMES,
                   help="the paper's method or one of its Table 1 ablations")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of the regenerated target data, shared by variants (default: OUT/../draft-data)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--config", type=Path, default=None, help="JSON file of DraftTrainConfig overrides")
    p.set_defaults(func=cmd_train_draft)

    bench = group(subparsers, "bench", "benchmarks", "bench_command")
    p = bench.add_parser("understand", help="speculative decoding vs plain decoding on vqa-shapes and think plans: "
                                            "τ, acceptance, tokens/s, speedup, greedy identity, Table 1 ablations")
    p.add_argument("--target", type=Path, default=Path(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--drafts", type=Path, nargs="+", required=True,
                   help="draft folders (their variant names come from their train_config.json)")
    p.add_argument("--out", type=Path, default=Path("out/bench-understand"))
    p.add_argument("--limit", type=int, default=None, help="items per split (default: all 900 vqa-shapes items)")
    p.add_argument("--think", type=int, default=100, help="think plans (geneval-shapes prompts) in the long split")
    p.add_argument("--gammas", default=None,
                   help="chain lengths tried for the fastest chain, e.g. 4,6,8 (default: 2 to 12)")
    p.add_argument("--trees", default="4,4,16;4,6,24;6,6,32;8,8,48",
                   help="tree settings tried, 'top_k,depth,total_tokens' separated by ';'")
    p.add_argument("--calibrate", type=int, default=None,
                   help="long items, spread over the split, used to pick the fastest settings (default: 20)")
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--module-target", action="store_true",
                   help="run the target's text steps through its modules, not fused copies of its layers (every "
                        "row, plain decoding included, uses the same target path either way)")
    p.set_defaults(func=cmd_bench_understand)


def add_draft_args(p: argparse.ArgumentParser) -> None:
    """``--draft`` and its decoding options, for ``understand`` and ``generate|edit --think``."""
    g = p.add_argument_group("speculative decoding")
    g.add_argument("--draft", type=Path, default=None, help="a draft folder (hyperbagel train draft): decode answers "
                                                             "and plans speculatively, output unchanged")
    g.add_argument("--spec", choices=("chain", "tree"), default="chain")
    g.add_argument("--gamma", type=int, default=5, help="chain: draft tokens per verification")
    g.add_argument("--top-k", type=int, default=4, help="tree: children per node")
    g.add_argument("--depth", type=int, default=6, help="tree: deepest draft token")
    g.add_argument("--total-tokens", type=int, default=24, help="tree: nodes verified, the root included")


def spec_config(args):
    from hyperbagel.decode.speculative import SpecConfig

    try:
        return SpecConfig(args.spec, args.gamma, args.top_k, args.depth, args.total_tokens)
    except ValueError as err:
        raise HyperBagelError(str(err)) from None


def load_draft_from_args(pipe, args) -> None:
    if getattr(args, "draft", None) is not None:
        pipe.load_draft(args.draft, spec_config(args))


def cmd_train_draft(args) -> int:
    from hyperbagel.config_types import config_from_json
    from hyperbagel.recipes.draft import DraftTrainConfig, train_draft

    data = args.data or args.out.parent / "draft-data"
    cfg = config_from_json(DraftTrainConfig, args.config, {"target": str(args.target), "out": str(args.out),
                                                           "data_dir": str(data), "variant": args.variant},
                           "train draft --config")
    if args.steps:
        cfg.steps = args.steps
    from hyperbagel.training.distributed import init

    init()  # the process group under torchrun
    out = train_draft(cfg)
    print(f"draft: {out}")
    return 0


def cmd_bench_understand(args) -> int:
    from hyperbagel.decode.speculative import SpecConfig
    from hyperbagel.eval.bench_understand import UnderstandBench, run_understand_bench

    given = {}  # options left out keep UnderstandBench's defaults
    try:
        if args.gammas is not None:
            given["gammas"] = tuple(int(g) for g in args.gammas.split(",") if g)
        trees = tuple(SpecConfig("tree", top_k=k, depth=d, total_tokens=n)
                      for k, d, n in (map(int, t.split(",")) for t in args.trees.split(";") if t))
    except ValueError as err:
        raise HyperBagelError(f"bad --gammas or --trees: {err}") from None
    if args.calibrate is not None:
        given["calibrate"] = args.calibrate
    settings = UnderstandBench(args.target, list(args.drafts), args.out, args.limit, args.think, trees=trees,
                               max_new_tokens=args.max_new_tokens, fused_target=not args.module_target, **given)
    report = run_understand_bench(settings)
    print(report["table"])
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return 0
