"""Files written whole or not at all, and one clear line when the disk is full.

Every checkpoint, model folder and result file of the package is written through here (or, for sharded
checkpoints, under ``writing``): to a temporary name, then renamed over the old file, so a failed write leaves the
previous version as it was.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hyperbagel.errors import HyperBagelError

if TYPE_CHECKING:
    import torch

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a full disk (or quota) while writing ``path`` into a ``HyperBagelError`` of one line."""
    try:
        yield
    except OSError as err:
        if err.errno in DISK_FULL:
            raise HyperBagelError(f"no space left on the device writing {path}: what was written before is intact; "
                                  "free some space and run the same command again to resume") from None
        raise


def save_file(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file as write  # not at import: the world package reads this module too

    write(tensors, filename, metadata=metadata)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path):
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata or {})
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(text: str, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path):
            tmp.write_text(text)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
