"""Model folders that ship inside the package, found by a short name.

``resolve("shapes-teacher")`` is the shipped folder; any existing folder path resolves to itself. Every command and
``Pipeline.from_pretrained`` take either. A shipped folder carries ``MODEL_CARD.md`` (how it was made, its scores)
and ``SHA256SUMS`` (one line per file, as ``sha256sum`` writes it), which ``verify`` checks.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from hyperbagel.errors import HyperBagelError

HERE = Path(__file__).resolve().parent
NAMES = ("shapes-teacher",)
DEFAULT_MODEL = "shapes-teacher"  # what every command that takes a model folder uses when given none
MODEL_HELP = f"model folder, or a shipped model's name (default: {DEFAULT_MODEL}, the pretrained teacher)"
SUMS_FILE = "SHA256SUMS"


def resolve(path: str | Path) -> Path:
    """An existing folder as it is; a shipped model's short name as its folder inside the package."""
    path = Path(path)
    if path.is_dir():
        return path
    if str(path) in NAMES:
        folder = HERE / str(path)
        if not (folder / "config.json").is_file():
            raise HyperBagelError(f"the shipped model {str(path)!r} is not in this installation ({folder})")
        return folder
    raise HyperBagelError(f"model folder not found: {path} (shipped models: {', '.join(NAMES)})")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_sums(folder: Path) -> dict[str, str]:
    """Hash every file of ``folder`` (but the sums file) into ``SHA256SUMS``; returns {file name: digest}."""
    sums = {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != SUMS_FILE}
    (folder / SUMS_FILE).write_text("".join(f"{d}  {name}\n" for name, d in sums.items()))
    return sums


def verify(folder: Path) -> dict[str, str]:
    """Check every file listed in ``SHA256SUMS``; a missing file or a different digest is an error naming it."""
    sums_path = folder / SUMS_FILE
    if not sums_path.is_file():
        raise HyperBagelError(f"{folder} has no {SUMS_FILE}")
    sums = {}
    for line in sums_path.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if not (folder / name).is_file():
            raise HyperBagelError(f"{folder / name} is listed in {SUMS_FILE} but missing")
        if sha256(folder / name) != digest:
            raise HyperBagelError(f"{folder / name} does not match its SHA-256 in {SUMS_FILE}")
        sums[name] = digest
    return sums


def copy_folder(source: str | Path, dest: Path) -> dict[str, str]:
    """Copy a model folder (a path or a shipped name) into ``dest``: its files, not its subfolders (a training run's
    checkpoints stay behind). A folder with ``SHA256SUMS`` is checked against it first. Returns {file name: SHA-256}
    of the copies."""
    source = resolve(source)
    if (source / SUMS_FILE).is_file():
        verify(source)
    if not (source / "config.json").is_file():
        raise HyperBagelError(f"{source} is not a model folder: config.json is missing")
    dest.mkdir(parents=True, exist_ok=True)
    copied = {}
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        tmp = dest / (path.name + ".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(dest / path.name)
        copied[path.name] = sha256(dest / path.name)
    return copied
