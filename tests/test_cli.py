import subprocess
import sys

from hyperbagel.cli import build_parser


def test_help_lists_commands():
    help_text = build_parser().format_help()
    assert "hyperbagel" in help_text


def test_the_parser_imports_no_torch():
    """``hyperbagel --help`` and a command's argument check take under a second: the command modules import torch
    only in the commands that run a model (the configs and presets are plain dataclasses)."""
    script = "import sys; from hyperbagel.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "hyperbagel.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "hyperbagel" in out.stdout


def test_an_error_naming_odd_user_text_stays_one_line(capsys, tmp_path):
    from hyperbagel.cli import main, one_line

    assert one_line("a\nb\x0c\x85c é") == "a\\nb\\x0c\\x85c é"
    assert main(["generate", "--ckpt", str(tmp_path / "no\nsuch\x85folder"), "a red circle"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "no\\nsuch\\x85folder" in err


def test_a_bad_vae_option_is_one_clear_line(capsys, tmp_path):
    from hyperbagel.cli import main

    assert main(["train", "vae", "--out", str(tmp_path / "vae"), "--ckpt-every", "-1"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: VAETrainConfig.checkpoint_every")


def test_a_path_the_file_system_refuses_is_one_line(capsys, tmp_path):
    from hyperbagel.cli import main

    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    assert main(["world", "chance", "--suite", "gedit-shapes", "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {taken}")
