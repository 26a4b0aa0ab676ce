"""The long-running chains in scripts/ are hours of CPU: every ``hyperbagel`` line they run must parse, its
``--config`` overrides must fit the stage's config, and a bench's rows must exist, before any of it starts.

Each script runs for real in a copy of its folder, with a ``hyperbagel`` on PATH that only records its arguments;
each recorded command is then parsed by the real CLI and, where it builds a config or picks bench rows, those too.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperbagel.cli import build_parser
from hyperbagel.commands.distill import bench_plan, stage_config
from hyperbagel.errors import HyperBagelError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
CHAINS = ["distill.sh", "distill_acceptance.sh", "dmdo_arms.sh", "stage1_edit_arm.sh", "one_step.sh",
          "one_step_acceptance.sh", "drafts.sh"]
NEEDS = {"stage1_edit_arm.sh": ["runs/distill-cfg/train"]}  # a run a chain continues: made by an earlier chain

RECORDER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["HB_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def recorded_commands(script: str, tmp_path: Path) -> list[list[str]]:
    """Run ``scripts/SCRIPT`` in a copy of the folder with a recording ``hyperbagel``; the argument lists it got."""
    (tmp_path / "scripts").mkdir()
    for sh in SCRIPTS.glob("*.sh"):  # the script and what it sources
        shutil.copy(sh, tmp_path / "scripts" / sh.name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "hyperbagel"
    fake.write_text(RECORDER)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "record.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HB_RECORD": str(record)}
    subprocess.run(["bash", str(tmp_path / "scripts" / script)], cwd=tmp_path, env=env, check=True, timeout=60)
    return [json.loads(line) for line in record.read_text().splitlines()]


def check_command(argv: list[str], cwd: Path) -> None:
    """Parse one recorded command; build its distill config or its bench plan (paths relative to ``cwd``)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as err:
        raise AssertionError(f"`hyperbagel {' '.join(argv)}` does not parse") from err
    if getattr(args, "config", None) is not None:
        args.config = cwd / args.config
    if args.command == "distill":
        stage_config(args)
    elif args.command == "bench" and getattr(args, "task", None) in ("generate", "edit"):
        bench_plan(args)


@pytest.mark.parametrize("script", CHAINS)
def test_every_command_of_a_chain_parses(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default stage folders (runs/distill-*) as a fresh clone has them: none
    for folder in NEEDS.get(script, []):
        (tmp_path / folder).mkdir(parents=True)
    commands = recorded_commands(script, tmp_path)
    assert commands, f"{script} ran no hyperbagel command"
    for argv in commands:
        check_command(argv, tmp_path)


def test_the_acceptance_chain_runs_its_arm_and_benches_every_stage(tmp_path):
    """The arm's config is what docs/distillation.md says, DMDO runs with the default (fresh) noise, and every
    trained folder is a bench row."""
    commands = recorded_commands("distill_acceptance.sh", tmp_path)
    configs = {Path(a[a.index("--out") + 1]).name: json.loads((tmp_path / a[a.index("--config") + 1]).read_text())
               for a in commands if a[0] == "distill"}
    assert configs["distill-tscd-adv"] == {"ckpt_every": 25, "adv_weight": 1.0, "mse_weight": 0.0}
    assert "fake_noise" not in configs["distill-dmdo"]
    benches = [a for a in commands if a[0] == "bench"]
    assert [a[1] for a in benches] == ["generate", "edit"]
    for argv in benches:
        folders = {v.split("=", 1)[1] for k, v in zip(argv, argv[1:]) if k == "--stage"}
        assert folders == {f"runs/{name}" for name in configs}


def test_the_stage1_arm_trains_stage1_then_continues_a_copy_of_it(tmp_path):
    (tmp_path / "runs/distill-cfg/train").mkdir(parents=True)  # what its first command leaves: a checkpoint
    (tmp_path / "runs/distill-cfg/train/state.json").write_text("{}")
    commands = recorded_commands("stage1_edit_arm.sh", tmp_path)
    assert (tmp_path / "runs/distill-cfg-edit/train/state.json").is_file()  # the checkpoint it resumes from
    outs = [a[a.index("--out") + 1] for a in commands if a[0] == "distill"]
    assert outs == ["runs/distill-cfg", "runs/distill-cfg-edit", "runs/distill-dmdo-cfg-edit"]
    config = json.loads((tmp_path / "runs/cfg-edit.json").read_text())
    assert config["steps"] > 200 and config["batch"]["edit"] > 4
    benches = [a for a in commands if a[0] == "bench"]
    assert [a[1] for a in benches] == ["generate", "edit"]
    for argv in benches:  # the peers and the new model; the earlier arms only where their models exist
        rows = argv[argv.index("--rows") + 1].split(",")
        assert rows[:3] == ["euler-6f", "dpm-6f", "unipc-6f"] and "dmdo-cfg-edit-6" in rows and "dmdo-6" not in rows


def test_a_wrong_config_key_or_row_is_caught(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"t_rnge": [0.02, 0.5]}')
    with pytest.raises(HyperBagelError, match="unknown keys"):
        check_command(["distill", "dmdo", "--teacher", "t", "--out", "o", "--config", "bad.json"], tmp_path)
    with pytest.raises(HyperBagelError, match="unknown rows"):
        check_command(["bench", "edit", "--stage", "dmdo=runs/x", "--rows", "dmdo-5"], tmp_path)
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["bench", "edit", "--sampels", "4"], tmp_path)


def test_finding_jemalloc_never_ends_a_pipefail_chain(tmp_path):
    """An ``ldconfig -p`` that lists jemalloc first and then 200 kB more: a reader that stops at the match would
    SIGPIPE it, and under ``set -euo pipefail`` the chain sourcing scripts/jemalloc.sh would exit with 141."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ldconfig"
    fake.write_text("#!/usr/bin/env bash\n"
                    "echo '\tlibjemalloc.so.2 (libc6,x86-64) => /opt/lib/libjemalloc.so.2'\n"
                    "for i in $(seq 4000); do echo \"\tlibfill$i.so (libc6,x86-64) => /usr/lib/libfill$i.so\"; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LD_PRELOAD": ""}
    run = subprocess.run(["bash", "-c", f"set -euo pipefail; . {SCRIPTS / 'jemalloc.sh'}; echo \"$LD_PRELOAD\""],
                         env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run
    assert run.stdout.strip() == "/opt/lib/libjemalloc.so.2"


@pytest.mark.slow
def test_the_prepared_gpu_dmdo_check_records_each_step_at_micro(tmp_path):
    """The call a lent GPU gets for issue 19 (``scripts/gpu_checks.sh OUT dmdo``), in its CPU smoke form: it exits 0
    and its report holds every timed DMDO step and the plan's prediction (a handler on a logger that never logs the
    steps once left ``step_s`` empty)."""
    run = subprocess.run(["bash", str(SCRIPTS / "gpu_checks.sh"), str(tmp_path), "dmdo"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "SMOKE": "1", "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "status.txt").read_text().split() == ["dmdo", "0"], (tmp_path / "dmdo.log").read_text()[-3000:]
    report = json.loads((tmp_path / "dmdo-plan.json").read_text())
    assert len(report["step_s"]) == 3 and all(s > 0 for s in report["step_s"]), report["step_s"]
    assert report["first_step_with_setup_s"] > 0 and report["plan_total_gib"] > 0 and report["error"] is None


def test_the_roofline_counts_grouped_query_attention_over_every_query_head():
    """gpu_roofline's FLOP count of a fused attention call with fewer key/value heads than query heads (BAGEL's 28
    over 4; older torch's own formula asserts equal counts): scores and values over every query head."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(SCRIPTS))
    try:
        from gpu_roofline import ATTENTION_OPS, attention_flops
    finally:
        sys.path.remove(str(SCRIPTS))
    q, k, v = torch.randn(2, 8, 5, 16), torch.randn(2, 2, 11, 16), torch.randn(2, 2, 11, 16)
    counter = FlopCounterMode(display=False, custom_mapping=dict.fromkeys(ATTENTION_OPS, attention_flops))
    with counter:
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert counter.get_total_flops() == 2 * 2 * 8 * 5 * 11 * (16 + 16)
