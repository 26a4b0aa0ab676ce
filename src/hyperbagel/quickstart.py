"""``hyperbagel quickstart``: the whole pipeline on one preset, cached stage by stage, then the paper's tables and a
report; ``hyperbagel report RUN_DIR`` rebuilds the report.

A run folder (``runs/<preset>`` by default) holds one folder per stage. Each stage is a ``hyperbagel`` command (run
in this process: the parser's own function, so what the report prints is exactly what ran), or, for the two steps
that have no command (the Shapes encoder for KID and the showcase of answers and plans), a library call. A stage is
done when its folder holds ``DONE.json``, written last, with the command, its config, timings and a summary of its
results; a second run skips it. An interrupted stage has no marker and runs again, and every training recipe resumes
from its own checkpoints, so the run continues where it stopped. A finished training stage whose settings have
changed since is refused (its checkpoints belong to the old settings); a benchmark or showcase with changed inputs
(say, a 1-step stage that has appeared since) simply runs again.

Stage settings per preset live in :class:`QuickstartConfig` (``QUICKSTART_PRESETS``); ``estimates`` are each
stage's measured (``micro``) or extrapolated (``tiny``) seconds on this two-core machine, for the time-left display.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hyperbagel.decode.draft_config import VARIANTS as DRAFT_VARIANTS
from hyperbagel.errors import HyperBagelError, Interrupted
from hyperbagel.pretrained import DEFAULT_MODEL, copy_folder, resolve, sha256

log = logging.getLogger(__name__)

MARKER = "DONE.json"
RUN_FILE = "quickstart.json"
VARIANTS = tuple(DRAFT_VARIANTS)  # Hyper-Bagel and the Table 1 ablations, Hyper-Bagel first
SIX_STEP = ("cfg", "tscd", "dmdo")  # stages 1–3: the 6-step model
ONE_STEP = ("adp", "refl")  # stages 4–5: the 1-step model (issue 6)
OVERRIDE_KEYS = ("teacher", "draft", *SIX_STEP, *ONE_STEP, "reward")


# ----------------------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class QuickstartConfig:
    """Every stage's settings. Recipe config fields beyond the step counts go in ``overrides[stage]`` (the JSON the
    stage's command reads with ``--config``)."""

    preset: str = "micro"  # the model preset (hyperbagel.model.presets)
    # a trained or shipped teacher (a model folder or a shipped name such as "shapes-teacher") to start from: copied
    # into the run in place of training the autoencoder and the teacher; None trains both
    teacher_from: str | None = None
    vae_steps: int = 200
    teacher_steps: int = 150
    draft_steps: int = 60  # per variant
    cfg_steps: int = 30
    tscd_steps: int = 30
    dmdo_steps: int = 20
    reward_steps: int = 100
    reward_judge_images: int = 8  # generated images the reward's report scores against the exact judge
    adp_steps: int = 30
    refl_steps: int = 20
    encoder_steps: int = 150  # the Shapes encoder behind KID
    encoder_batch: int = 32
    variants: tuple[str, ...] = VARIANTS  # drafts: Hyper-Bagel and the Table 1 ablations
    overrides: dict[str, dict] = field(default_factory=dict)
    # bench generate / edit
    bench_limit: int | None = None  # first N items of each suite (None: all)
    bench_samples: int = 4
    bench_batch: int = 32
    bench_bf16: bool = False
    bootstrap: int = 2000
    # bench understand
    understand_limit: int | None = None  # items per vqa-shapes split (None: all)
    think: int = 100  # think plans in the long split
    gammas: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12)  # as bench understand's default
    trees: tuple[tuple[int, int, int], ...] = ((4, 4, 16), (4, 6, 24), (6, 6, 32), (8, 8, 48))
    calibrate: int = 20
    max_new_tokens: int = 80
    # showcase: answers (plain and speculative) and think plans (baseline and accelerated)
    showcase_questions: int = 6
    showcase_plans: int = 4
    estimates: dict[str, float] = field(default_factory=dict)  # stage → seconds on this machine

    def __post_init__(self) -> None:
        from hyperbagel.model.presets import PRESETS

        if self.preset not in PRESETS:
            raise ValueError(f"QuickstartConfig.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_steps") or f.name in ("encoder_batch", "bench_samples", "bench_batch", "bootstrap",
                                                       "calibrate", "max_new_tokens", "reward_judge_images"):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"QuickstartConfig.{f.name} must be a positive integer, got {v!r}")
        for name in ("bench_limit", "understand_limit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"QuickstartConfig.{name} must be a positive integer or null, got {v!r}")
        for name in ("think", "showcase_questions", "showcase_plans"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"QuickstartConfig.{name} must be a non-negative integer")
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "gammas", tuple(int(g) for g in self.gammas))
        object.__setattr__(self, "trees", tuple(tuple(int(x) for x in t) for t in self.trees))
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown or "hyper-bagel" not in self.variants:
            raise ValueError(f"QuickstartConfig.variants must include 'hyper-bagel' and name only {VARIANTS}, "
                             f"got {list(self.variants)}")
        if not self.gammas or min(self.gammas) < 1:
            raise ValueError(f"QuickstartConfig.gammas must be positive chain lengths, got {self.gammas}")
        if not self.trees or any(len(t) != 3 or min(t) < 1 for t in self.trees):
            raise ValueError(f"QuickstartConfig.trees must be (top_k, depth, total_tokens) triples, got {self.trees}")
        if self.teacher_from is not None and (not isinstance(self.teacher_from, str) or not self.teacher_from):
            raise ValueError(f"QuickstartConfig.teacher_from must be a model folder or shipped name, "
                             f"got {self.teacher_from!r}")
        unknown = sorted(set(self.overrides) - set(OVERRIDE_KEYS))
        if unknown:
            raise ValueError(f"QuickstartConfig.overrides has unknown stages {unknown}; stages are {OVERRIDE_KEYS}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> QuickstartConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown QuickstartConfig fields {unknown}")
        return cls(**d)

    def replace(self, **changes) -> QuickstartConfig:
        return dataclasses.replace(self, **changes)


_SMALL_DISTILL = {"batch": {"gen": 2, "edit": 2}, "warmup": 2, "ckpt_every": 10, "log_every": 10}

# micro: measured stage by stage with `nice -n 19`, one thread, while a teacher run held the other core
# (docs/quickstart.md)
MICRO = QuickstartConfig(
    preset="micro", vae_steps=120, teacher_steps=80, draft_steps=30, cfg_steps=20, tscd_steps=20, dmdo_steps=12,
    reward_steps=50, adp_steps=15, refl_steps=10, encoder_steps=100, encoder_batch=32,
    overrides={
        "teacher": {"curriculum": [], "batch": {"gen": 8, "edit": 4, "und": 12}, "warmup": 10, "ckpt_every": 40,
                    "log_every": 40, "vit_pretrain": {"steps": 200, "batch": 32}},
        "draft": {"data": {"samples": 96, "chunk_size": 48, "max_new_tokens": 32, "batch": 32}, "batch": 8,
                  "warmup": 5, "ckpt_every": 30, "log_every": 30},
        "cfg": {**_SMALL_DISTILL, "rollout_timesteps": 12, "states_per_rollout": 4, "lr": 1e-3},
        "tscd": {**_SMALL_DISTILL, "steps_per_segment": 2, "lr": 2e-4},
        "dmdo": {**_SMALL_DISTILL, "fake_updates": 2, "lr": 1e-4},
        "reward": {"batch": 16, "warmup": 5, "report_pairs": 48, "ckpt_every": 50, "log_every": 50},
        "adp": dict(_SMALL_DISTILL),
        "refl": {**_SMALL_DISTILL, "probe": 4},
    },
    bench_limit=12, bench_samples=2, bench_batch=24, bootstrap=200, reward_judge_images=6,
    understand_limit=6, think=4, gammas=(2, 3, 4, 6), trees=((2, 2, 4), (4, 4, 16)), calibrate=3,
    max_new_tokens=32, showcase_questions=4, showcase_plans=3,
    estimates={"vae": 30, "teacher": 40, "draft-hyper-bagel": 6, "draft-eagle3": 3, "draft-no-zero-init": 5,
               "draft-no-ce": 5, "draft-no-zero-init-no-ce": 6, "distill-cfg": 17, "distill-tscd": 4,
               "distill-dmdo": 4, "reward": 7, "distill-adp": 8, "distill-refl": 2, "shapes-encoder": 3,
               "bench-understand": 6, "bench-generate": 3, "bench-edit": 7, "showcase": 3},
)

# tiny: the README's main command. It starts from the pretrained teacher (``--train-teacher`` trains the autoencoder
# and a teacher with the short recipe below instead). The estimates are the stage times of its measured runs on a
# fresh clone, two threads on a two-core machine (docs/quickstart.md): from the shipped teacher on an AVX2-only CPU,
# all fp32 (2026-12-07), and for vae and teacher the --train-teacher run.
TINY = QuickstartConfig(
    preset="tiny", teacher_from=DEFAULT_MODEL, vae_steps=2000, teacher_steps=680, draft_steps=400, cfg_steps=40,
    tscd_steps=150, dmdo_steps=80,
    reward_steps=600, reward_judge_images=64, adp_steps=100, refl_steps=60, encoder_steps=800, encoder_batch=64,
    overrides={"draft": {"data": {"samples": 4096}},
               # the 45-minute recipe of docs/teacher.md's third run (the default recipe is the 12-hour one)
               "teacher": {"curriculum": [], "batch": {"gen": 16, "edit": 8, "und": 24}, "lr": 1e-3, "warmup": 100,
                           "ckpt_every": 200, "log_every": 20}},
    # one sample per prompt or edit and 64 items per understanding split: on a CPU without native bf16 the benches
    # run fp32 at about twice the time, and these sizes keep the whole run under two hours there (docs/quickstart.md)
    bench_limit=96, bench_samples=1, bench_batch=32, bench_bf16=True, bootstrap=2000,
    understand_limit=64, think=40, gammas=(2, 3, 4, 5, 6, 8, 10), trees=((4, 4, 16), (4, 6, 24), (6, 6, 32)),
    calibrate=10, max_new_tokens=80, showcase_questions=6, showcase_plans=4,
    estimates={"vae": 355, "teacher": 2374, "draft-hyper-bagel": 430, "draft-eagle3": 78, "draft-no-zero-init": 201,
               "draft-no-ce": 199, "draft-no-zero-init-no-ce": 172, "distill-cfg": 1637, "distill-tscd": 770,
               "distill-dmdo": 1168, "reward": 467, "distill-adp": 521, "distill-refl": 74, "shapes-encoder": 52,
               "bench-understand": 334, "bench-generate": 236, "bench-edit": 348, "showcase": 29},
)

# micro with every count cut to the bone: the whole pipeline, every stage, in seconds; it checks that everything runs
# (the tests, the kill bench), and measures nothing
_BONE = {"batch": {"gen": 1, "edit": 1}, "warmup": 1, "ckpt_every": 100, "log_every": 100}
SMOKE = MICRO.replace(
    vae_steps=3, teacher_steps=2, draft_steps=2, cfg_steps=2, tscd_steps=2, dmdo_steps=1, reward_steps=2,
    reward_judge_images=2, adp_steps=1, refl_steps=1, encoder_steps=2, encoder_batch=8,
    variants=("hyper-bagel", "eagle3"),
    overrides={"teacher": {"curriculum": [], "batch": {"gen": 2, "edit": 1, "und": 2}, "warmup": 1, "ckpt_every": 100,
                           "vit_pretrain": {"steps": 2, "batch": 4}},
               "draft": {"data": {"samples": 4, "chunk_size": 4, "max_new_tokens": 6, "batch": 4}, "batch": 2,
                         "warmup": 1},
               "cfg": {**_BONE, "rollout_timesteps": 4, "states_per_rollout": 2},
               "tscd": {**_BONE, "steps_per_segment": 2}, "dmdo": {**_BONE, "fake_updates": 1},
               "reward": {"batch": 4, "warmup": 1, "report_pairs": 8},
               "adp": dict(_BONE), "refl": {**_BONE, "probe": 1}},
    bench_limit=2, bench_samples=1, bench_batch=8, bootstrap=10, understand_limit=1, think=1, gammas=(2,),
    trees=((2, 2, 4),), calibrate=1, max_new_tokens=6, showcase_questions=2, showcase_plans=1, estimates={})

QUICKSTART_PRESETS = {"micro": MICRO, "tiny": TINY, "smoke": SMOKE}


# ----------------------------------------------------------------------------------------------------------------
# stages


@dataclass
class Stage:
    """One step of the pipeline: a ``hyperbagel`` command (``argv``) or a library call (``call``)."""

    name: str
    folder: str  # under the run folder; holds the marker
    describe: str
    argv: list[str] | None = None
    config: dict | None = None  # passed as --config: written to config_file (under the run folder) first
    config_file: str | None = None
    call: Callable[[], dict] | None = None
    call_text: str = ""  # the library call, as the report shows it
    rerun_on_change: bool = False  # benchmarks: a pure function of their inputs, so changed inputs mean run again
    unavailable: str | None = None  # why the stage cannot run (its command does not exist yet)
    done: bool = False  # its folder holds a marker with these settings

    @property
    def command(self) -> str:
        if self.argv is not None:
            return "hyperbagel " + " ".join(_quote(a) for a in self.argv)
        return self.call_text


def _quote(arg: str) -> str:
    return repr(arg) if not arg or any(c in arg for c in " ;'\"*?$&|<>()") else arg


def _pick(d: dict, keys: tuple[str, ...]) -> dict:
    return {k: d[k] for k in keys if k in d}


def plan(cfg: QuickstartConfig, run: Path) -> list[Stage]:
    """The stages of a run, in order (unavailable ones included, marked)."""
    r = str(run)
    ov = cfg.overrides
    cfgdir = f"{r}/configs"

    def with_config(name: str, argv: list[str], key: str) -> dict:
        """The stage's argv and config, with ``--config configs/NAME.json`` when the preset overrides ``key``."""
        if not ov.get(key):
            return {"argv": argv}
        return {"argv": [*argv, "--config", f"{cfgdir}/{name}.json"], "config": ov[key],
                "config_file": f"configs/{name}.json"}

    stages = _teacher_stages(cfg, run, with_config)
    for variant in cfg.variants:
        spec = with_config("draft", ["train", "draft", "--target", f"{r}/teacher", "--out",
                                           f"{r}/drafts/{variant}", "--variant", variant, "--data",
                                           f"{r}/drafts/draft-data", "--steps", str(cfg.draft_steps)], "draft")
        what = "the Hyper-Bagel draft (first builds the shared target data)" if variant == "hyper-bagel" else \
            f"Table 1 ablation draft: {variant}"
        stages.append(Stage(f"draft-{variant}", f"drafts/{variant}", what, **spec))
    init = None
    for stage in SIX_STEP:
        base = ["distill", stage, "--teacher", f"{r}/teacher", "--out", f"{r}/distill-{stage}",
                "--steps", str(getattr(cfg, f"{stage}_steps"))]
        if init:
            base[4:4] = ["--init", f"{r}/distill-{init}"]
        spec = with_config(f"distill-{stage}", base, stage)
        stages.append(Stage(f"distill-{stage}", f"distill-{stage}", f"6-step model, stage {stage}", **spec))
        init = stage
    # the 1-step model (issue 6): run when its commands exist
    vae = f"{r}/teacher/ae.safetensors" if cfg.teacher_from else f"{r}/vae/ae.safetensors"
    spec = with_config("reward", ["train", "reward", "--out", f"{r}/reward", "--vae", vae,
                                        "--steps", str(cfg.reward_steps), "--judge-model", f"{r}/teacher",
                                        "--judge-images", str(cfg.reward_judge_images)], "reward")
    stages.append(Stage("reward", "reward", "the reward model standing in for HPSv3 (for ReFL)", **spec))
    spec = with_config("distill-adp", ["distill", "adp", "--teacher", f"{r}/teacher", "--init",
                                             f"{r}/distill-dmdo", "--out", f"{r}/distill-adp", "--steps",
                                             str(cfg.adp_steps)], "adp")
    stages.append(Stage("distill-adp", "distill-adp", "1-step model, stage adp", **spec))
    spec = with_config("distill-refl", ["distill", "refl", "--teacher", f"{r}/teacher", "--init",
                                              f"{r}/distill-adp", "--reward", f"{r}/reward", "--out",
                                              f"{r}/distill-refl", "--steps", str(cfg.refl_steps)], "refl")
    stages.append(Stage("distill-refl", "distill-refl", "1-step model, stage refl", **spec))
    _mark_unavailable(stages)
    gen_stages = [s.name.removeprefix("distill-") for s in stages
                  if s.name.startswith("distill-") and s.unavailable is None]

    enc_path = f"{r}/shapes-encoder/encoder.safetensors"
    stages.append(Stage("shapes-encoder", "shapes-encoder", "the Shapes encoder behind KID (real renders only)",
                        call=lambda: _train_encoder(cfg, Path(enc_path)),
                        call_text=f"hyperbagel.eval.shapes_encoder.train_encoder(EncoderConfig(steps="
                                  f"{cfg.encoder_steps}, batch={cfg.encoder_batch}), {enc_path!r})"))
    drafts = [f"{r}/drafts/{v}" for v in cfg.variants]
    argv = ["bench", "understand", "--target", f"{r}/teacher", "--drafts", *drafts, "--out", f"{r}/bench-understand",
            "--think", str(cfg.think), "--gammas", ",".join(map(str, cfg.gammas)),
            "--trees", ";".join(",".join(map(str, t)) for t in cfg.trees), "--calibrate", str(cfg.calibrate),
            "--max-new-tokens", str(cfg.max_new_tokens)]
    if cfg.understand_limit is not None:
        argv += ["--limit", str(cfg.understand_limit)]
    stages.append(Stage("bench-understand", "bench-understand", "speculative decoding: Table 1, τ, speedups", argv,
                        rerun_on_change=True))
    for task in ("generate", "edit"):
        argv = ["bench", task, "--teacher", f"{r}/teacher"]
        for s in gen_stages:
            argv += ["--stage", f"{s}={r}/distill-{s}"]
        argv += ["--out", f"{r}/bench-{task}", "--samples", str(cfg.bench_samples), "--batch", str(cfg.bench_batch),
                 "--bootstrap", str(cfg.bootstrap), "--encoder", enc_path]
        if cfg.bench_limit is not None:
            argv += ["--limit", str(cfg.bench_limit)]
        if cfg.bench_bf16:
            argv.append("--bf16")
        suite = "GenEval-Shapes" if task == "generate" else "GEdit-Shapes"
        stages.append(Stage(f"bench-{task}", f"bench-{task}", f"{suite}: teacher, peers and every stage, same noise",
                            argv, rerun_on_change=True))
    student = f"{r}/distill-{gen_stages[-1]}" if gen_stages else None
    stages.append(Stage("showcase", "showcase", "answers (plain vs speculative) and think plans (baseline vs "
                                                "accelerated)",
                        call=lambda: _showcase(cfg, run, student),
                        call_text=f"hyperbagel.eval.showcase.run_showcase(teacher={r + '/teacher'!r}, draft="
                                  f"{r + '/drafts/hyper-bagel'!r}, student={student!r}, out={r + '/showcase'!r}, "
                                  f"questions={cfg.showcase_questions}, plans={cfg.showcase_plans}, "
                                  f"max_new_tokens={cfg.max_new_tokens})",
                        rerun_on_change=True))
    return stages


def _teacher_stages(cfg: QuickstartConfig, run: Path, with_config: Callable[..., dict]) -> list[Stage]:
    """The autoencoder and the teacher, trained; or a pretrained teacher (its autoencoder inside) copied in. The
    copy's command names the weights' SHA-256, so a run started from one teacher refuses another."""
    r = str(run)
    if cfg.teacher_from:
        from hyperbagel.model.checkpoint import MODEL_FILE

        source = resolve(cfg.teacher_from)
        digest = sha256(source / MODEL_FILE) if (source / MODEL_FILE).is_file() else "missing"
        return [Stage("pretrained-teacher", "teacher", f"the pretrained teacher {cfg.teacher_from} (copied in)",
                      call=lambda: {"files": copy_folder(source, run / "teacher")},
                      call_text=f"hyperbagel.pretrained.copy_folder({cfg.teacher_from!r}, {r + '/teacher'!r})  "
                                f"# {MODEL_FILE} sha256 {digest}")]
    spec = with_config("teacher", ["train", "teacher", "--preset", cfg.preset, "--vae", f"{r}/vae/ae.safetensors",
                                   "--out", f"{r}/teacher", "--steps", str(cfg.teacher_steps)], "teacher")
    return [Stage("vae", "vae", "the Shapes World autoencoder",
                  ["train", "vae", "--preset", cfg.preset, "--out", f"{r}/vae", "--steps", str(cfg.vae_steps)]),
            Stage("teacher", "teacher", "the unified teacher (CE + flow matching)", **spec)]


def _mark_unavailable(stages: list[Stage]) -> None:
    """Stages whose command the CLI does not have (yet), or whose options it does not take, and their dependants."""
    from hyperbagel.cli import build_parser

    parser = build_parser()
    missing: set[str] = set()
    needs = {"distill-adp": {"distill-dmdo"}, "distill-refl": {"distill-adp", "reward"}}
    for st in stages:
        if st.argv is None:
            continue
        group, name = st.argv[0], st.argv[1]
        sub = _subcommands(parser, group)
        if name not in sub:
            st.unavailable = f"`hyperbagel {group} {name}` does not exist in this version"
        else:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    parser.parse_args(st.argv)
                except SystemExit:
                    last = (err.getvalue().strip().splitlines() or ["?"])[-1]
                    st.unavailable = f"`hyperbagel {group} {name}` does not take the quickstart's options ({last})"
        blocked = needs.get(st.name, set()) & missing
        if st.unavailable is None and blocked:
            st.unavailable = f"needs {', '.join(sorted(blocked))}, which is not available"
        if st.unavailable is not None:
            missing.add(st.name)


def _subcommands(parser, group: str) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and group in action.choices:
            for sub in action.choices[group]._actions:
                if isinstance(sub, argparse._SubParsersAction):
                    return sub.choices
    return {}


def _train_encoder(cfg: QuickstartConfig, path: Path) -> dict:
    from hyperbagel.eval.shapes_encoder import EncoderConfig, train_encoder

    train_encoder(EncoderConfig(steps=cfg.encoder_steps, batch=cfg.encoder_batch), path)
    return {"encoder": str(path)}


def _showcase(cfg: QuickstartConfig, run: Path, student: str | None) -> dict:
    from hyperbagel.eval.showcase import run_showcase

    return run_showcase(run / "teacher", run / "drafts" / "hyper-bagel", Path(student) if student else None,
                        run / "showcase", cfg.showcase_questions, cfg.showcase_plans, cfg.max_new_tokens)


def _run_argv(argv: list[str]) -> None:
    from hyperbagel.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            raise HyperBagelError(f"hyperbagel {' '.join(argv)}: {err.getvalue().strip()}") from None
    rc = args.func(args)
    if rc:
        raise HyperBagelError(f"hyperbagel {' '.join(argv)} exited with {rc}")


# ----------------------------------------------------------------------------------------------------------------
# markers and results


def read_marker(folder: Path) -> dict | None:
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged marker: the stage is not done


def _settings(stage: Stage, run: Path) -> dict:
    """What a stage's result depends on, with the run folder's own path taken out (a moved run stays valid)."""
    text = json.dumps({"command": stage.command, "config": stage.config})
    return json.loads(text.replace(str(run), "RUN"))


def stage_results(folder: Path) -> dict:
    """A summary of a finished stage's outputs: final training losses or the bench's headline numbers."""
    state = folder / "train" / "train_state.json"
    if state.is_file():
        s = json.loads(state.read_text())
        if "losses" in s:  # the autoencoder's
            return {"steps": s.get("step"), "final": (s.get("losses") or [None])[-1]}
        history = s.get("history", [])
        return {"steps": len(history), "final": history[-1] if history else None}
    bench = folder / "bench.json"
    if bench.is_file():
        b = json.loads(bench.read_text())
        if "table1" in b:
            return {"table1": b["table1"], "all_identical": b["greedy_identity"]["all_identical"]}
        return {"rows": {r["row"]: {"overall": r["overall"], "forwards_per_image": r["forwards_per_image"],
                                    "speedup": r["speedup"]} for r in b["rows"]}}
    return {}


def _atomic_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------------------------------------------
# the display


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Display:
    """One line per stage: its place, what it is, its estimate and the time left in the run (the estimates scaled by
    how this run has compared with them so far); the stage's own progress bar follows it."""

    def __init__(self, stages: list[Stage], estimates: dict[str, float], stream=None):
        self.stages, self.estimates = stages, estimates
        self.stream = stream or sys.stderr
        self.spent, self.expected = 0.0, 0.0  # stages run in this call: actual and estimated seconds
        self.width = max(len(s.name) for s in stages)

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _left(self, index: int) -> float:
        factor = self.spent / self.expected if self.expected > 0 else 1.0
        factor = min(max(factor, 0.25), 4.0)
        todo = [s for s in self.stages[index:] if s.unavailable is None and not s.done]
        return factor * sum(self.estimates.get(s.name, 30.0) for s in todo)

    def header(self, preset: str, run: Path) -> None:
        todo = [s for s in self.stages if s.unavailable is None and not s.done]
        self._say(f"quickstart {preset} → {run}: {len(self.stages)} stages, {len(todo)} to run, estimated "
                  f"{_clock(self._left(0))} on this machine")

    def _tag(self, i: int, stage: Stage) -> str:
        return f"[{i + 1:2d}/{len(self.stages)}] {stage.name:<{self.width}}"

    def skipped(self, i: int, stage: Stage) -> None:
        self._say(f"{self._tag(i, stage)}  not available: {stage.unavailable}; skipped")

    def cached(self, i: int, stage: Stage, marker: dict) -> None:
        self._say(f"{self._tag(i, stage)}  done already ({_clock(marker.get('seconds', 0))}, "
                  f"{marker.get('finished', '?')}): skipped")

    def start(self, i: int, stage: Stage) -> None:
        est = self.estimates.get(stage.name, 30.0)
        self._say(f"{self._tag(i, stage)}  {stage.describe} · estimate {_clock(est)} · about "
                  f"{_clock(self._left(i))} left in the run\n    {stage.command}")

    def interrupted(self, i: int, stage: Stage) -> None:
        self._say(f"{self._tag(i, stage)}  interrupted: run the same command again to continue from its last "
                  "checkpoint")

    def finish(self, i: int, stage: Stage, seconds: float) -> None:
        if stage.name in self.estimates:  # a stage without a measured estimate says nothing of this machine's pace
            self.spent += seconds
            self.expected += self.estimates[stage.name]
        self._say(f"{self._tag(i, stage)}  done in {_clock(seconds)} · about {_clock(self._left(i + 1))} left")


# ----------------------------------------------------------------------------------------------------------------
# the run


@dataclass
class RunResult:
    run: Path
    stages: list[dict]  # name, status (ran | cached | unavailable), seconds
    stopped_after: str | None = None
    report: dict | None = None


def run_quickstart(cfg: QuickstartConfig, run: str | Path, stop_after: str | None = None, stream=None,
                   report: bool = True) -> RunResult:
    """Run every stage not done yet, then (unless stopped early) print the tables and write the report.

    ``stop_after`` ends the call after that stage (done or cached), as an interruption would."""
    run = Path(run)
    stages = plan(cfg, run)
    names = [s.name for s in stages]
    if stop_after is not None and stop_after not in names:
        raise HyperBagelError(f"--stop-after must be one of {names}, got {stop_after!r}")
    run.mkdir(parents=True, exist_ok=True)
    for st in stages:
        marker = read_marker(run / st.folder)
        st.done = marker is not None and marker.get("settings") == _settings(st, run)
        if marker is not None and not st.done and not st.rerun_on_change and st.unavailable is None:
            raise HyperBagelError(
                f"stage {st.name} in {run / st.folder} was finished with other settings "
                f"({marker.get('command')}); use another --out, or delete that folder to train it again")
    display = Display(stages, cfg.estimates, stream)
    display.header(cfg.preset, run)
    started = time.time()
    record: list[dict] = []
    _write_run_file(run, cfg, stages, record, started)
    stopped = None
    for i, st in enumerate(stages):
        if st.unavailable is not None:
            display.skipped(i, st)
            record.append({"name": st.name, "status": "unavailable", "reason": st.unavailable})
        elif st.done:
            marker = read_marker(run / st.folder)
            display.cached(i, st, marker)
            record.append({"name": st.name, "status": "cached", "seconds": marker.get("seconds")})
        else:
            display.start(i, st)
            try:
                seconds = _run_stage(st, run)
            except (KeyboardInterrupt, Interrupted):
                display.interrupted(i, st)
                raise
            display.finish(i, st, seconds)
            record.append({"name": st.name, "status": "ran", "seconds": seconds})
        _write_run_file(run, cfg, stages, record, started)
        if st.name == stop_after:
            stopped = st.name
            break
    result = RunResult(run, record, stopped)
    if stopped is None and report:
        result.report = write_report(run)
        from hyperbagel.eval.report import paper_tables

        print(paper_tables(result.report), file=stream or sys.stdout)
        print(f"\nreport: {run / 'report.html'} (data: {run / 'report.json'})", file=stream or sys.stdout)
    return result


def _run_stage(st: Stage, run: Path) -> float:
    """Run one stage; its log records and printed output go to ``logs/<stage>.log`` (progress bars stay on the
    terminal); the marker is written last."""
    folder = run / st.folder
    folder.mkdir(parents=True, exist_ok=True)
    if st.config is not None:
        _atomic_json(st.config, run / st.config_file)
    (run / "logs").mkdir(exist_ok=True)
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    with open(run / "logs" / f"{st.name}.log", "a") as logfile:
        logfile.write(f"# {started} {st.command}\n")
        logfile.flush()
        handler = logging.StreamHandler(logfile)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root = logging.getLogger()
        root.addHandler(handler)
        level = root.level
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(logfile):
                if st.argv is not None:
                    _run_argv(st.argv)
                    results = stage_results(folder)
                else:
                    results = st.call()
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
    seconds = time.perf_counter() - t0
    _atomic_json({"stage": st.name, "describe": st.describe, "command": st.command, "config": st.config,
                  "settings": _settings(st, run), "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "seconds": seconds, "results": results}, folder / MARKER)
    return seconds


def _write_run_file(run: Path, cfg: QuickstartConfig, stages: list[Stage], record: list[dict],
                    started: float) -> None:
    import platform

    import torch

    from hyperbagel import __version__

    _atomic_json({
        "preset": cfg.preset, "config": cfg.to_dict(), "version": __version__, "git": _git_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "this_call_seconds": time.time() - started,
        "stages": [{"name": s.name, "folder": s.folder, "describe": s.describe, "command": s.command,
                    "config": s.config, "unavailable": s.unavailable} for s in stages],
        "this_call": record,
    }, run / RUN_FILE)


def write_report(run: str | Path) -> dict:
    """Gather the run's JSON (``report.json``) and render ``report.html`` from it alone."""
    from hyperbagel.eval.report import render_html
    from hyperbagel.eval.report_data import collect

    run = Path(run)
    data = collect(run)
    _atomic_json(data, run / "report.json")
    (run / "report.html").write_text(render_html(data))
    return data


def deterministic_results(run: str | Path) -> dict:
    """Every deterministic number of a run, for comparing two: the losses of every trained stage, the benches'
    scores and forwards, τ and α, the showcase's texts (not its timings)."""
    run = Path(run)

    def history(folder: Path) -> list:
        return json.loads((folder / "train" / "train_state.json").read_text())["history"]

    vae = run / "vae" / "train" / "train_state.json"  # absent when the run started from a pretrained teacher
    out = {"vae": json.loads(vae.read_text())["losses"] if vae.is_file() else None}
    trained = ["teacher", *(f"drafts/{v}" for v in VARIANTS), *(f"distill-{s}" for s in SIX_STEP), "reward",
               *(f"distill-{s}" for s in ONE_STEP)]
    out.update({f: history(run / f) for f in trained if (run / f / "train").is_dir()})
    for task in ("generate", "edit"):
        bench = json.loads((run / f"bench-{task}" / "bench.json").read_text())
        out[task] = [(r["row"], r["overall"], r["tags"], r["forwards_per_image"], r["kid"]) for r in bench["rows"]]
    u = json.loads((run / "bench-understand" / "bench.json").read_text())
    out["understand"] = (u["table1"], [(r["name"], r["splits"]["all"]["tau"], r["splits"]["all"]["tokens"])
                                       for r in u["rows"]])
    show = json.loads((run / "showcase" / "showcase.json").read_text())
    out["showcase"] = ([(a["plain"]["text"], a["speculative"]["text"], a["plain"]["forwards"])
                        for a in show["answers"]], [g["baseline"]["plan"] for g in show["generations"]])
    return out


# ----------------------------------------------------------------------------------------------------------------
# commands


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart", help="the whole pipeline on a preset (cached, resumable), the paper's tables and a report",
        description="Train the VAE, the teacher, the drafts and every distillation stage, run the benches, print the "
                    "paper's tables and write RUN/report.html. Every stage is cached: run it again to continue an "
                    "interrupted run or to rebuild only what is missing.")
    p.add_argument("--preset", default="tiny", choices=sorted(QUICKSTART_PRESETS),
                   help="tiny: the Shapes World models from the shipped teacher (1 h 52 min measured on two idle "
                        "cores); micro: a small run (under five minutes); smoke: every stage cut to the bone (seconds; "
                        "measures nothing)")
    p.add_argument("--out", type=Path, default=None, help="the run folder (default: runs/<preset>)")
    p.add_argument("--config", type=Path, default=None, help="JSON file of QuickstartConfig overrides")
    p.add_argument("--teacher", default=None, metavar="FOLDER",
                   help="start from this trained teacher (a model folder, or a shipped name such as shapes-teacher) "
                        "instead of training the autoencoder and the teacher")
    p.add_argument("--train-teacher", action="store_true",
                   help="train the autoencoder and the teacher from scratch with the preset's recipe instead of "
                        "starting from the pretrained one (tiny starts from shapes-teacher)")
    p.add_argument("--stop-after", default=None, metavar="STAGE", help="stop after this stage (as an interruption)")
    p.add_argument("--list", action="store_true", help="list the stages, their commands and state, and exit")
    p.set_defaults(func=cmd_quickstart)

    p = subparsers.add_parser("report", help="rebuild a quickstart run's report (RUN/report.html and report.json)")
    p.add_argument("run", type=Path, help="the quickstart run folder")
    p.add_argument("--tables", action="store_true", help="also print the paper's tables")
    p.set_defaults(func=cmd_report)


def load_config(preset: str, overrides: Path | None) -> QuickstartConfig:
    cfg = QUICKSTART_PRESETS[preset]
    if overrides is None:
        return cfg
    try:
        changes = json.loads(overrides.read_text())
        return QuickstartConfig.from_dict({**dataclasses.asdict(cfg), **changes})
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise HyperBagelError(f"quickstart --config {overrides}: {err}") from None


def cmd_quickstart(args) -> int:
    cfg = load_config(args.preset, args.config)
    if args.teacher is not None and args.train_teacher:
        raise HyperBagelError("--teacher and --train-teacher exclude each other")
    if args.teacher is not None:
        cfg = cfg.replace(teacher_from=args.teacher)
    if args.train_teacher:
        cfg = cfg.replace(teacher_from=None)
    run = args.out or Path("runs") / args.preset
    if args.list:
        for st in plan(cfg, run):
            state = ("not available: " + st.unavailable) if st.unavailable else (
                "done" if read_marker(run / st.folder) else "to run")
            print(f"{st.name:26s} {state}\n    {st.command}")
        return 0
    res = run_quickstart(cfg, run, stop_after=args.stop_after)
    if res.stopped_after:
        print(f"stopped after {res.stopped_after}; run the same command again to continue")
    return 0


def cmd_report(args) -> int:
    if not (args.run / RUN_FILE).is_file():
        raise HyperBagelError(f"{args.run} is not a quickstart run folder (no {RUN_FILE})")
    data = write_report(args.run)
    if args.tables:
        from hyperbagel.eval.report import paper_tables

        print(paper_tables(data))
    print(f"report: {args.run / 'report.html'} (data: {args.run / 'report.json'})")
    return 0
