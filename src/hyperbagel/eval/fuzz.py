"""Property-based fuzzing of the public input surfaces (hypothesis): every generated input must end in a success or
in one clear line (``HyperBagelError``), never in a stack trace.

A surface is a hypothesis strategy of inputs and a function that feeds one input to the code under test. The runner
draws ``examples`` inputs with a fixed seed and no example database (so a run is reproducible), records each
outcome — ``ok``; ``clear``, a one-line error raised on purpose (a ``HyperBagelError``, or a ``ValueError`` from a
``raise`` statement of this package: the config classes' own checks); or ``trace``, anything else (an exception
from inside the code, kept with its message and place) — and never raises inside hypothesis, so every input counts
once and nothing is shrunk away.

Surfaces: ``pipeline`` (``generate`` / ``edit`` / ``understand`` with odd texts, images of any shape, dtype and
channel count, seeds, guidance and step settings), ``model-folder`` (a model folder damaged at random: truncated or
overwritten files, pickles where weights belong, missing or extra files, edited config values),
``result-folder`` (GenEval-layout folders and prediction files damaged at random, read by the scorers),
``config`` (``--config`` files of every training recipe: JSON objects over the config's keys and unknown ones, other
JSON, bytes), ``cli`` (every command but ``serve`` and ``bench``, run in-process in a scratch folder with random
options and positionals; one still running after ``CLI_SECONDS`` has accepted its arguments and is stopped).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OUTCOMES = ("ok", "clear", "trace")


@dataclass
class SurfaceReport:
    surface: str
    tried: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in OUTCOMES})
    traces: list[str] = field(default_factory=list)  # the first few, as "input → exception"

    def record(self, outcome: str, note: str = "") -> None:
        self.tried += 1
        self.counts[outcome] += 1
        if outcome == "trace" and len(self.traces) < 10:
            self.traces.append(note)


PACKAGE = str(Path(__file__).resolve().parents[1])


def deliberate(err: BaseException) -> bool:
    """Raised on purpose: a ``HyperBagelError``, or a ``ValueError`` whose last frame is a ``raise`` statement in
    this package (a check), not one that escaped from inside the code or a library."""
    from hyperbagel.errors import HyperBagelError

    if isinstance(err, HyperBagelError):
        return True
    if type(err) is not ValueError:
        return False
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return frame.filename.startswith(PACKAGE) and (frame.line or "").lstrip().startswith("raise ")


def outcome_of(fn: Callable[[], object]) -> tuple[str, str]:
    """Run ``fn``: ``ok``; ``clear`` for a deliberate one-line error; else ``trace`` with where it came from."""
    try:
        fn()
    except Exception as err:  # classified: a deliberate one-line error, or the finding
        text = str(err)
        if deliberate(err):
            return ("clear", "") if text and "\n" not in text else ("trace", f"multi-line or empty error: {text!r}")
        return "trace", described(err)
    return "ok", ""


def described(err: BaseException) -> str:
    """An exception's type, message and the place it was raised, in one line."""
    where = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__}: {str(err)[:200]} (at {Path(where.filename).name}:{where.lineno})"


def run_surface(name: str, strategy, feed: Callable[[object], tuple[str, str]], examples: int, seed: int,
                report: SurfaceReport | None = None) -> SurfaceReport:
    """Draw ``examples`` inputs from ``strategy`` (seeded) and feed each to ``feed``."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    report = report or SurfaceReport(name)

    @hseed(seed)
    @settings(max_examples=examples, database=None, deadline=None, derandomize=False, phases=["generate"],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def body(value):
        outcome, note = feed(value)
        report.record(outcome, f"{_short(value)} → {note}" if note else "")

    body()
    return report


def _short(value, limit: int = 160) -> str:
    if isinstance(value, dict):  # arrays as their shape and dtype
        value = {k: f"array{v.shape}:{v.dtype}" if isinstance(v, np.ndarray) else v for k, v in value.items()}
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


# ------------------------------------------------------------------------------------------------------- pipeline
VALID_CALL = {"task": "generate", "text": "a red circle", "image": None, "seed": 0, "text_scale": 4.0,
              "image_scale": 1.5, "timesteps": 3, "shift": 3.0, "max_tokens": 4, "think": False, "accelerated": None}


def pipeline_strategy():
    """A valid call with up to two of its fields fuzzed (so odd values meet otherwise good calls)."""
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    text = st.one_of(st.text(max_size=40), st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", max_size=300),
                     st.sampled_from(["a red circle", "make the circle blue", "how many circles are there?", ""]),
                     st.just("a red circle " * 400), st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
    dtypes = st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, np.uint16])
    shape = st.one_of(st.just((64, 64, 3)), st.tuples(st.integers(0, 80), st.integers(0, 80)),
                      st.tuples(st.integers(0, 80), st.integers(0, 80), st.integers(0, 5)),
                      st.just((3, 64, 64)), st.just((64, 64, 4)), st.just((1, 64, 64, 3)), st.just((32, 32, 3)))
    image = st.one_of(hnp.arrays(dtypes, shape), st.just(None), st.text(max_size=10), st.integers(), st.just([]))
    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**20), st.text(max_size=3))
    fuzzed = {
        "text": st.one_of(text, st.lists(text, max_size=3)),
        "image": st.one_of(image, st.lists(image, max_size=2)),
        "seed": st.one_of(st.integers(-(2**70), 2**70), st.lists(st.integers(-5, 2**64), max_size=3), st.floats(),
                          st.text(max_size=3), st.none()),
        "text_scale": number, "image_scale": number, "shift": number,
        "timesteps": st.one_of(st.integers(-3, 12), st.floats(), st.none()),
        "max_tokens": st.one_of(st.integers(-5, 10**9), st.floats(), st.none()),
        "think": st.one_of(st.booleans(), st.integers(), st.none()),
        "accelerated": st.sampled_from([None, True, False, 0, "yes"]),
    }
    valid_image = hnp.arrays(np.uint8, (64, 64, 3))

    @st.composite
    def call(draw):
        v = dict(VALID_CALL, task=draw(st.sampled_from(["generate", "edit", "understand"])))
        if v["task"] != "generate":
            v["image"] = draw(valid_image)
            v["text"] = "make the circle blue" if v["task"] == "edit" else "how many circles are there?"
        for name in draw(st.sets(st.sampled_from(sorted(fuzzed)), max_size=2)):
            v[name] = draw(fuzzed[name])
        return v

    return call()


def pipeline_feeder(pipe) -> Callable[[dict], tuple[str, str]]:
    import dataclasses

    from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, SamplerSettings

    def feed(v: dict) -> tuple[str, str]:
        def call():
            if v["task"] == "understand":
                return pipe.understand(v["image"], v["text"], max_new_tokens=_small(v["max_tokens"]), seed=v["seed"],
                                       accelerated=v["accelerated"])
            base = T2I_GUIDANCE if v["task"] == "generate" else EDIT_GUIDANCE
            guidance = dataclasses.replace(base, text_scale=v["text_scale"], image_scale=v["image_scale"])
            sampler = SamplerSettings(v["timesteps"], v["shift"])
            kw = dict(seeds=v["seed"], guidance=guidance, sampler=sampler, think=v["think"],
                      max_think_tokens=_small(v["max_tokens"]), accelerated=v["accelerated"])
            if v["task"] == "generate":
                return pipe.generate(v["text"], **kw)
            return pipe.edit(v["image"], v["text"], **kw)

        return outcome_of(call)

    return feed


def _small(n):
    """Token budgets are fuzzed for their validation, not to decode for a billion steps: valid ones are capped."""
    return min(n, 8) if isinstance(n, int) and n > 0 else n


# --------------------------------------------------------------------------------------------------- model folders
DAMAGES = ("truncate", "garbage", "pickle", "delete", "extra-file", "config-value", "config-garbage", "empty")


def folder_strategy(files: list[str], config_keys: list[str]):
    from hypothesis import strategies as st

    json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(),
                                        st.text(max_size=8)),
                              lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                              max_leaves=5)
    damage = st.fixed_dictionaries({
        "kind": st.sampled_from(DAMAGES),
        "file": st.sampled_from(files),
        "fraction": st.floats(0.0, 1.0),
        "bytes": st.binary(max_size=64),
        "key": st.sampled_from(config_keys),
        "value": json_value,
    })
    return st.lists(damage, min_size=1, max_size=3)


def damage_folder(folder: Path, damages: list[dict]) -> None:
    """Apply ``damages`` to the model folder in place (each on a file that may already be gone)."""
    import pickle

    for d in damages:
        path = folder / d["file"]
        kind = d["kind"]
        if kind == "extra-file":
            (folder / "extra.safetensors").write_bytes(d["bytes"])
            continue
        if kind.startswith("config"):
            path = folder / "config.json"
        if not path.exists():
            continue
        if kind == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * d["fraction"])])
        elif kind == "garbage":
            data = bytearray(path.read_bytes())
            at = int(len(data) * d["fraction"])
            data[at: at + len(d["bytes"])] = d["bytes"]
            path.write_bytes(bytes(data))
        elif kind == "pickle":
            path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
        elif kind == "delete":
            path.unlink()
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "config-value":
            try:
                cfg = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(cfg, dict):
                _set(cfg, d["key"], d["value"])
                path.write_text(json.dumps(cfg))
        elif kind == "config-garbage":
            path.write_bytes(d["bytes"])


def _set(cfg: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        cfg = cfg.setdefault(p, {}) if isinstance(cfg.get(p, {}), dict) else {}
    cfg[last] = value


def config_keys(cfg: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += config_keys(v, f"{prefix}{k}.")
    return keys


def folder_feeder(pristine: Path, work: Path) -> Callable[[list[dict]], tuple[str, str]]:
    from hyperbagel.pipeline import Pipeline

    def feed(damages: list[dict]) -> tuple[str, str]:
        folder = work / "model"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(pristine, folder)
        damage_folder(folder, damages)
        return outcome_of(lambda: Pipeline.from_pretrained(folder))

    return feed


# -------------------------------------------------------------------------------------------------- result folders
def results_strategy():
    from hypothesis import strategies as st

    return st.fixed_dictionaries({
        "suite": st.sampled_from(["geneval-shapes", "gedit-shapes", "vqa-shapes"]),
        "items": st.integers(0, 3),
        "samples": st.integers(0, 2),
        "damage": st.sampled_from(["none", "metadata-garbage", "metadata-missing", "metadata-json", "png-garbage",
                                   "png-truncate", "stray-file", "run-garbage", "predictions-garbage",
                                   "predictions-json", "predictions-missing"]),
        "bytes": st.binary(max_size=48),
        "json": st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.sampled_from(["id", "answer", "tag", "prompt", "include"]),
                                          st.one_of(st.integers(), st.text(max_size=6), st.none()), max_size=3)),
    })


def results_feeder(work: Path) -> Callable[[dict], tuple[str, str]]:
    from hyperbagel.world import folders, scoring, suites

    items = {s: suites.load_suite(s, 3) for s in ("geneval-shapes", "gedit-shapes", "vqa-shapes")}

    def build(v: dict) -> Path:
        out = work / "results"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        chosen = items[v["suite"]][: v["items"]]
        if v["suite"] == "vqa-shapes":
            folders.write_predictions(out, [{"id": it["id"], "answer": "yes"} for it in chosen])
            return out
        rng = np.random.default_rng(0)
        for i, it in enumerate(chosen):
            imgs = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(v["samples"])]
            src = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) if v["suite"] == "gedit-shapes" else None
            folders.write_record(out, i, it, imgs, src)
        return out

    def damage(out: Path, v: dict) -> None:
        kind, blob, obj = v["damage"], v["bytes"], json.dumps(v["json"])
        metas, pngs = sorted(out.rglob("metadata.jsonl")), sorted(out.rglob("*.png"))
        pred = out / folders.PREDICTIONS_FILE
        if kind == "metadata-garbage" and metas:
            metas[0].write_bytes(blob)
        elif kind == "metadata-missing" and metas:
            metas[0].unlink()
        elif kind == "metadata-json" and metas:
            metas[0].write_text(obj + "\n")
        elif kind == "png-garbage" and pngs:
            pngs[0].write_bytes(blob)
        elif kind == "png-truncate" and pngs:
            pngs[0].write_bytes(pngs[0].read_bytes()[:40])
        elif kind == "stray-file":
            (out / "notes.txt").write_bytes(blob)
            (out / "00099").mkdir()
        elif kind == "run-garbage":
            (out / folders.RUN_FILE).write_bytes(blob)
        elif kind == "predictions-garbage" and pred.exists():
            pred.write_bytes(blob)
        elif kind == "predictions-json" and pred.exists():
            pred.write_text(obj + "\n")
        elif kind == "predictions-missing" and pred.exists():
            pred.unlink()

    def feed(v: dict) -> tuple[str, str]:
        out = build(v)
        damage(out, v)
        if v["suite"] == "vqa-shapes":
            return outcome_of(lambda: scoring.score_vqa_file(out / folders.PREDICTIONS_FILE))
        score = scoring.score_geneval_folder if v["suite"] == "geneval-shapes" else scoring.score_gedit_folder
        return outcome_of(lambda: score(out))

    return feed


# ---------------------------------------------------------------------------------------------------- JSON configs
def config_classes() -> dict[str, tuple[type, dict]]:
    """Every recipe config a ``--config`` file feeds, with the fields its command sets itself."""
    from hyperbagel.recipes.distill_adp import ADPConfig
    from hyperbagel.recipes.distill_cfg import CFGDistillConfig
    from hyperbagel.recipes.distill_dmdo import DMDOConfig
    from hyperbagel.recipes.distill_refl import ReFLConfig
    from hyperbagel.recipes.distill_tscd import TSCDConfig
    from hyperbagel.recipes.draft import DraftTrainConfig
    from hyperbagel.recipes.reward import RewardTrainConfig
    from hyperbagel.recipes.teacher import TeacherConfig

    paths = {"teacher": "t", "out": "o"}
    return {
        "teacher": (TeacherConfig, {"preset": "micro", "vae": "v", "out": "o"}),
        "draft": (DraftTrainConfig, {"target": "t", "out": "o", "data_dir": "d", "variant": "hyper-bagel"}),
        "cfg": (CFGDistillConfig, paths), "tscd": (TSCDConfig, paths), "dmdo": (DMDOConfig, paths),
        "adp": (ADPConfig, paths), "refl": (ReFLConfig, paths),
        "reward": (RewardTrainConfig, {"out": "o", "vae": "v"}),
    }


def config_strategy(keys: dict[str, list[str]]):
    """A config name, and the file's content: a JSON object over its keys (and some unknown ones), other JSON, or
    bytes."""
    from hypothesis import strategies as st

    leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=8))
    value = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                         max_leaves=6)

    @st.composite
    def draw(draw):
        name = draw(st.sampled_from(sorted(keys)))
        key = st.one_of(st.sampled_from(keys[name]), st.text(max_size=6))
        content = draw(st.one_of(st.dictionaries(key, value, max_size=4).map(json.dumps),
                                 value.map(json.dumps), st.binary(max_size=40)))
        return name, content

    return draw()


def config_feeder(work: Path) -> Callable[[tuple[str, str | bytes]], tuple[str, str]]:
    from hyperbagel.config_types import config_from_json

    classes = config_classes()

    def feed(v: tuple[str, str | bytes]) -> tuple[str, str]:
        name, content = v
        path = work / "config.json"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        cls, fields = classes[name]
        return outcome_of(lambda: config_from_json(cls, path, fields, f"{name} --config"))

    return feed


# -------------------------------------------------------------------------------------------------------------- CLI
SKIP_COMMANDS = ("serve", "bench")  # they start servers and subprocesses: covered by their own tests and benches
CLI_SECONDS = 3  # a command still running after this long is taken as having accepted its arguments


def cli_commands() -> dict[tuple[str, ...], list]:
    """Every leaf command of ``hyperbagel`` (but ``SKIP_COMMANDS``) with its argparse actions."""
    import argparse

    from hyperbagel.cli import build_parser

    out: dict[tuple[str, ...], list] = {}

    def walk(parser, path):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[path] = [a for a in parser._actions if a.dest != "help"]
            return
        for name, child in subs[0].choices.items():
            if not path and name in SKIP_COMMANDS:
                continue
            walk(child, (*path, name))

    walk(build_parser(), ())
    return out


def cli_strategy(commands: dict[tuple[str, ...], list], paths: list[str]):
    """A command and arguments for it: each of its options present or not, with a value of its type, a choice, or
    something else; positionals likewise; sometimes a stray token."""
    from hypothesis import strategies as st

    junk = st.one_of(st.text(max_size=12), st.sampled_from(["-1", "0", "1e309", "nan", "--", "-", "%s", "../.."]))
    number = st.one_of(st.integers(-5, 10**12).map(str), st.floats().map(str), junk)

    def value_for(action):
        if action.choices:
            return st.one_of(st.sampled_from([str(c) for c in action.choices]), junk)
        if action.type in (int, float):
            return number
        return st.one_of(st.sampled_from(paths), junk)

    @st.composite
    def draw(draw):
        path = draw(st.sampled_from(sorted(commands)))
        argv = list(path)
        for action in commands[path]:
            if action.option_strings:
                if not draw(st.booleans()):
                    continue
                argv.append(action.option_strings[0])
                if action.nargs != 0:
                    argv.append(draw(value_for(action)))
            elif draw(st.integers(0, 9)):  # a positional, most of the time
                argv.append(draw(value_for(action)))
        if draw(st.integers(0, 9)) == 0:
            argv.insert(draw(st.integers(0, len(argv))), draw(junk))
        return argv

    return draw()


class _StillRunning(Exception):
    pass


def cli_feeder(work: Path) -> Callable[[list[str]], tuple[str, str]]:
    import contextlib
    import io
    import os
    import signal

    from hyperbagel.cli import main

    def alarm(signum, frame):
        raise _StillRunning

    def feed(argv: list[str]) -> tuple[str, str]:
        err = io.StringIO()
        cwd = os.getcwd()
        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(CLI_SECONDS)
        try:
            os.chdir(work)
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except _StillRunning:
            return "ok", ""
        except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, its last line "prog: error: …")
            last = (err.getvalue().strip().splitlines() or [""])[-1]
            if exit_.code in (0, None) or (exit_.code == 2 and ": error: " in last):
                return ("ok" if exit_.code in (0, None) else "clear"), ""
            return "trace", f"exit {exit_.code}: {last[:200]}"
        except Exception as e:  # the finding: an exception out of a command
            return "trace", described(e)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            os.chdir(cwd)
        lines = err.getvalue().strip().splitlines()
        if code != 2:  # the command ran to its end: 0, or its own verdict (1: a check or a bench failed)
            return "ok", ""
        if len(lines) >= 1 and lines[-1].startswith("error: ") and not any("Traceback" in x for x in lines):
            # one line: the error line itself (log lines before it are the command's progress)
            return "clear", ""
        return "trace", f"exit {code}: {' | '.join(lines[-2:])[:200]}"

    return feed


# ---------------------------------------------------------------------------------------------------------- runner
SURFACES = ("pipeline", "model-folder", "result-folder", "config", "cli")


def fuzz(surfaces: list[str], examples: int, seed: int, model_folder: Path, draft_folder: Path | None = None,
         work: Path | None = None) -> list[SurfaceReport]:
    """Fuzz each of ``surfaces`` with ``examples`` inputs on the model folder given (a ``micro`` one is fast)."""
    import torch

    from hyperbagel.pipeline import Pipeline

    unknown = set(surfaces) - set(SURFACES)
    if unknown:
        from hyperbagel.errors import HyperBagelError

        raise HyperBagelError(f"unknown surfaces {sorted(unknown)}; choose from {', '.join(SURFACES)}")
    torch.manual_seed(seed)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work or tmp)
        for name in surfaces:
            if name == "pipeline":
                pipe = Pipeline.from_pretrained(model_folder)
                if draft_folder is not None:
                    pipe.load_draft(draft_folder)
                reports.append(run_surface(name, pipeline_strategy(), pipeline_feeder(pipe), examples, seed))
            elif name == "model-folder":
                files = sorted(p.name for p in Path(model_folder).iterdir() if p.is_file())
                keys = config_keys(json.loads((Path(model_folder) / "config.json").read_text()))
                reports.append(run_surface(name, folder_strategy(files, keys), folder_feeder(model_folder, work),
                                           examples, seed))
            elif name == "cli":
                junk = Path(work) / "junk.bin"
                junk.write_bytes(b"\x00\xffnot a model")
                paths = [str(model_folder), str(draft_folder or model_folder), str(junk), "missing/folder",
                         "out/run", "", "/dev/null"]
                reports.append(run_surface(name, cli_strategy(cli_commands(), paths), cli_feeder(Path(work)),
                                           examples, seed))
            elif name == "config":
                import dataclasses

                keys = {k: [f.name for f in dataclasses.fields(c)] for k, (c, _) in config_classes().items()}
                reports.append(run_surface(name, config_strategy(keys), config_feeder(work), examples, seed))
            else:
                reports.append(run_surface(name, results_strategy(), results_feeder(work), examples, seed))
    return reports
