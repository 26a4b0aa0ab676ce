"""Checking and normalising what people hand the pipeline: texts, seeds, images, guidance and sampler settings.

Every check raises ``HyperBagelError`` with a message meant for people, so the CLI, the Python API and the web demo
report bad input the same way and never with a stack trace. The ranges are the ones BAGEL's app offers (bagel.md §5),
which is also the range the teacher's guidance is used in here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hyperbagel.errors import HyperBagelError

TEXT_SCALE_RANGE = (1.0, 8.0)  # CFG text scale
IMAGE_SCALE_RANGE = (1.0, 4.0)  # CFG image scale (editing)
TIMESTEPS_RANGE = (2, 1000)  # points of the sampling schedule (num_timesteps − 1 model evaluations)
MAX_NEW_TOKENS = 4096
SEED_RANGE = (0, 2**63 - 1)


def texts(value, what: str = "prompt") -> list[str]:
    """One string or a non-empty list of strings (emptiness and vocabulary are the tokenizer's checks)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, (list, tuple)) and not value:
        raise HyperBagelError(f"no {what}s given")
    raise HyperBagelError(f"the {what} must be a string or a list of strings, got {type(value).__name__}")


def seeds(value, n: int) -> list[int]:
    """One seed for every item, or exactly ``n`` seeds; integers in ``SEED_RANGE``."""
    values = [value] * n if _is_int(value) else value
    if not isinstance(values, (list, tuple)) or not all(_is_int(s) for s in values):
        raise HyperBagelError(f"seeds must be an integer or a list of integers, got {type(value).__name__}")
    if len(values) != n:
        raise HyperBagelError(f"{len(values)} seeds for {n} items")
    lo, hi = SEED_RANGE
    for s in values:
        if not lo <= s <= hi:
            raise HyperBagelError(f"seed {s!r} is out of range: seeds are integers from {lo} to 2^63 − 1")
    return [int(s) for s in values]


def read_image(path: str | Path) -> np.ndarray:
    """An image file (PNG, JPEG, …) as an RGB uint8 array, with clear errors for missing and non-image files."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise HyperBagelError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise HyperBagelError(f"not an image file: {path}") from None


def image(value, resolution: int) -> np.ndarray:
    """An RGB uint8 ``resolution``×``resolution`` array from an array, a PIL image or an image file's path."""
    from PIL import Image

    if isinstance(value, (str, Path)):
        arr, where = read_image(value), f" ({value})"
    elif isinstance(value, Image.Image):
        arr, where = np.asarray(value.convert("RGB")), ""
    elif isinstance(value, np.ndarray):
        arr, where = value, ""
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise HyperBagelError(f"expected an RGB uint8 image (height × width × 3), got an array of shape "
                                  f"{arr.shape} ({arr.dtype})")
    else:
        raise HyperBagelError(f"expected an image (array, PIL image or file path), got {type(value).__name__}")
    if arr.shape[:2] != (resolution, resolution):
        raise HyperBagelError(f"this model works on {resolution}×{resolution} images; the image{where} is "
                              f"{arr.shape[1]}×{arr.shape[0]}")
    return np.ascontiguousarray(arr)


def images(value, resolution: int) -> list[np.ndarray]:
    """One image or a non-empty list of images (see ``image``)."""
    single = isinstance(value, (str, Path)) or (isinstance(value, np.ndarray) and value.ndim in (2, 3))
    if not single and not isinstance(value, (list, tuple)) and not (isinstance(value, np.ndarray) and value.ndim == 4):
        from PIL import Image

        single = isinstance(value, Image.Image)
        if not single:
            raise HyperBagelError(f"expected an image or a list of images, got {type(value).__name__}")
    values = [value] if single else list(value)
    if not values:
        raise HyperBagelError("no images given")
    return [image(v, resolution) for v in values]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _in_range(value, lo: float, hi: float) -> bool:
    return isinstance(value, (int, float, np.number)) and math.isfinite(value) and lo <= value <= hi


def check_guidance(text_scale: float, image_scale: float = 1.0, text_range: tuple[float, float] = TEXT_SCALE_RANGE,
                   image_range: tuple[float, float] = IMAGE_SCALE_RANGE) -> None:
    """Guidance scales inside the range the sampling model was trained on (the teacher: BAGEL's text 1–8 and
    image 1–4; a distilled student: the ranges its embedders saw)."""
    for name, value, (lo, hi) in (("text", text_scale, text_range), ("image", image_scale, image_range)):
        if not _in_range(value, lo, hi):
            raise HyperBagelError(f"{name} guidance scale {value} is outside the trained range [{lo:g}, {hi:g}]")


def check_sampler(num_timesteps: int, shift: float) -> None:
    lo, hi = TIMESTEPS_RANGE
    if not _is_int(num_timesteps) or not lo <= num_timesteps <= hi:
        raise HyperBagelError(f"timesteps must be an integer from {lo} to {hi}, got {num_timesteps!r}")
    if not _in_range(shift, 1e-6, 1e6):
        raise HyperBagelError(f"the timestep shift must be a positive number, got {shift!r}")


def check_max_new_tokens(n: int) -> None:
    if not _is_int(n) or not 1 <= n <= MAX_NEW_TOKENS:
        raise HyperBagelError(f"max new tokens must be an integer from 1 to {MAX_NEW_TOKENS}, got {n!r}")
