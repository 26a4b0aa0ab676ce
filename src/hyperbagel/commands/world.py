"""``hyperbagel world …`` (demo, suites, oracle, chance, show) and ``hyperbagel eval …`` (geneval, gedit, vqa)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hyperbagel.errors import HyperBagelError
from hyperbagel.world import scoring, suites
from hyperbagel.world.oracle import write_control
from hyperbagel.world.show import write_contact_sheet

DEMO_LIMITS = {"geneval-shapes": 24, "gedit-shapes": 24, "vqa-shapes": 54}


def add_commands(subparsers) -> None:
    world = subparsers.add_parser("world", help="Shapes World: demo, benchmark suites, controls, contact sheet")
    sub = world.add_subparsers(dest="world_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("demo", help="render and score a sample of the world (seconds)")
    p.add_argument("--out", type=Path, default=Path("world-demo"), help="folder for the sheet, images and scores")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("suites", help="regenerate the benchmark suites byte-identically from their seed")
    p.add_argument("--check", action="store_true", help="only check that the stored files match; exit 1 if not")
    p.add_argument("--dir", type=Path, default=None, help="suite folder (default: the package's data/suites)")
    p.set_defaults(func=cmd_suites)

    for control, text in (
        ("oracle", "write perfect answers for a suite (the judges must score them 1.0)"),
        ("chance", "write answers of unrelated random scenes / random answers for a suite"),
    ):
        p = sub.add_parser(control, help=text)
        p.add_argument("--suite", required=True, choices=suites.SUITES)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--limit", type=int, default=None, help="only the first N items")
        p.set_defaults(func=cmd_control, control=control)

    p = sub.add_parser("show", help="contact sheet PNG of scenes, prompts, edits and questions")
    p.add_argument("--out", type=Path, default=Path("shapes-world.png"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=6, help="samples per row")
    p.set_defaults(func=cmd_show)

    ev = subparsers.add_parser("eval", help="score result folders on the Shapes World suites")
    sub = ev.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)
    for name, text in (
        ("geneval", "score a GenEval-layout folder of text-to-image results (geneval-shapes)"),
        ("gedit", "score a folder of edit results (gedit-shapes)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("out", type=Path, metavar="OUT")
        p.add_argument("--json", type=Path, default=None, help="also write the scores here")
        p.add_argument("--against", type=Path, default=None, metavar="BASE",
                       help="a result folder of the same items and samples (the same seeds): paired difference, "
                            "its bootstrap 95%% CI and McNemar's p under the key `vs`")
        p.set_defaults(func=cmd_eval, benchmark=name)
    p = sub.add_parser("vqa", help="score a predictions file ({id, answer} per line) on vqa-shapes")
    p.add_argument("out", type=Path, metavar="PREDICTIONS.jsonl")
    p.add_argument("--json", type=Path, default=None, help="also write the scores here")
    p.set_defaults(func=cmd_eval, benchmark="vqa", against=None)


def _score(benchmark: str, path: Path) -> dict:
    if benchmark == "geneval":
        return scoring.score_geneval_folder(path)
    if benchmark == "gedit":
        return scoring.score_gedit_folder(path)
    return scoring.score_vqa_file(path)


def _write_json(scores: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores, indent=2) + "\n")


def cmd_eval(args: argparse.Namespace) -> int:
    scores = _score(args.benchmark, args.out)
    vs = None
    if args.against is not None:
        from hyperbagel.eval.paired import compare_folders

        task = {"geneval": "generate", "gedit": "edit"}[args.benchmark]
        scores["vs"] = vs = compare_folders(args.against, args.out, task)
    _write_json(scores, args.json)
    print(json.dumps(scores, indent=2))
    if vs is not None:
        print(f"{args.out} − {args.against}: {vs['diff']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}], "
              f"McNemar p = {vs['mcnemar_p']:.3g} ({vs['discordant'][0]} vs {vs['discordant'][1]} discordant)")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise HyperBagelError("--limit must be at least 1")
    path = write_control(args.control, args.suite, args.out, args.limit)
    print(f"wrote {args.control} answers for {args.suite} to {path}")
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    if args.check:
        bad = suites.check_suites(args.dir)
        if bad:
            print(f"suites differ from their regeneration: {', '.join(bad)}")
            return 1
        print(f"all {len(suites.SUITES)} suites match their regeneration from seed {suites.SUITE_SEED}")
        return 0
    for name, digest in suites.write_suites(args.dir).items():
        print(f"{suites.suite_path(name, args.dir)}  sha256 {digest}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise HyperBagelError("--n must be at least 1")
    from PIL import Image

    if Path(args.out).suffix.lower() not in Image.registered_extensions():
        raise HyperBagelError(f"--out {args.out}: name an image file (.png, .jpg, …)")
    print(f"wrote {write_contact_sheet(args.out, args.seed, args.n)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out: Path = args.out
    sheet = write_contact_sheet(out / "contact-sheet.png", seed=0, n=6)
    rows = []
    all_scores = {}
    for suite in suites.SUITES:
        benchmark = suite.split("-")[0]
        for control in ("oracle", "chance"):
            path = write_control(control, suite, out / control / suite, DEMO_LIMITS[suite])
            scores = _score(benchmark, path)
            all_scores[f"{control}/{suite}"] = scores
            extra = (
                f"strict {scores['strict']['overall']:.3f}"
                if benchmark == "geneval"
                else f"SC {scores['SC']['overall']:.3f}"
                if benchmark == "gedit"
                else f"description_exact {scores['description_exact']:.3f}"
            )
            count = scores.get("n_images", scores.get("n_questions", 0) + scores.get("n_descriptions", 0))
            rows.append((suite, control, scores["overall"], extra, count))
    _write_json(all_scores, out / "scores.json")
    print(f"{'suite':<16} {'control':<8} {'overall':>8}  {'also':<24} {'n':>5}")
    for suite, control, overall, extra, count in rows:
        print(f"{suite:<16} {control:<8} {overall:>8.3f}  {extra:<24} {count:>5}")
    print(f"contact sheet: {sheet}")
    print(f"scores: {out / 'scores.json'}  (first items of each suite; {time.perf_counter() - start:.1f} s)")
    return 0
