"""Locating and reading the reference BAGEL fixtures (`../shared/fixtures/bagel-ref-tiny`, see its README).

Set ``HYPERBAGEL_REF_FIXTURES`` to use another folder. Tests that need the fixtures are skipped, with the
reason, when the folder is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ENV_VAR = "HYPERBAGEL_REF_FIXTURES"
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "shared/fixtures/bagel-ref-tiny"


def fixtures_dir() -> Path:
    """The fixture folder; skips the calling test when it is absent."""
    root = Path(os.environ.get(ENV_VAR, DEFAULT_DIR))
    if not (root / "manifest.json").is_file():
        pytest.skip(f"reference fixtures not found at {root} (set {ENV_VAR} to their folder)")
    return root


def load_fixture(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``fp32/<name>.safetensors`` tensors and the ``fp32/<name>.json`` description."""
    root = fixtures_dir() / "fp32"
    return load_file(root / f"{name}.safetensors"), json.loads((root / f"{name}.json").read_text())


def load_weights(filename: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """A weights file's tensors named ``prefix…`` (prefix stripped), as fp32 (bf16 → fp32 is exact)."""
    tensors = load_file(fixtures_dir() / filename)
    return {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}


def manifest() -> dict:
    return json.loads((fixtures_dir() / "manifest.json").read_text())


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours − ref| / max |ref| (the fixtures README's tolerance measure)."""
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()
