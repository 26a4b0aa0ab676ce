"""A full disk while writing leaves the previous file or checkpoint intact and stops with one clear line."""

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hyperbagel.files as files
from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_save_tensors, atomic_write_text


def _disk_fills_after(nbytes: int):
    """A stand-in for safetensors' writer on a disk with ``nbytes`` free: it writes that much, then ENOSPC."""

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    return save_file


def test_a_full_disk_keeps_the_previous_tensors_and_says_so_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "weights.safetensors"
    atomic_save_tensors({"w": torch.ones(3)}, path)
    monkeypatch.setattr(files, "save_file", _disk_fills_after(100))
    with pytest.raises(HyperBagelError) as err:
        atomic_save_tensors({"w": torch.zeros(3)}, path)
    assert "no space left" in str(err.value) and "\n" not in str(err.value)
    assert torch.equal(load_file(path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]  # no temporary file left


def test_a_full_disk_keeps_the_previous_text(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_text('{"step": 1}', path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(HyperBagelError, match="no space left"):
        atomic_write_text('{"step": 2}', path)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"step": 1}


def test_other_write_errors_pass_through(tmp_path, monkeypatch):
    def denied(tensors, filename, metadata=None):
        raise PermissionError(errno.EACCES, "Permission denied", filename)

    monkeypatch.setattr(files, "save_file", denied)
    with pytest.raises(PermissionError):
        atomic_save_tensors({"w": torch.ones(1)}, tmp_path / "w.safetensors")


def test_a_command_that_fills_the_disk_stops_with_one_line(tmp_path, monkeypatch, capsys):
    from hyperbagel.cli import main

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    code = main(["world", "oracle", "--suite", "vqa-shapes", "--out", str(tmp_path / "out"), "--limit", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: no space left") and "\n" not in err
