import subprocess
import sys

from hyperbagel.cli import build_parser


def test_help_lists_commands():
    help_text = build_parser().format_help()
    assert "hyperbagel" in help_text


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "hyperbagel.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "hyperbagel" in out.stdout
