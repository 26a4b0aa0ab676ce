"""bf16 autocast only where the hardware computes bf16: the override, the fallback, and what a bench records."""

from __future__ import annotations

import logging

import pytest
import torch

from hyperbagel.errors import HyperBagelError
from hyperbagel.precision import ENV, bf16_autocast, native_bf16, use_bf16


def _out_dtype(requested: bool) -> torch.dtype:
    with bf16_autocast(requested):
        return torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype


def test_forced_fp32_runs_fp32_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setenv(ENV, "0")
    import hyperbagel.precision as precision

    precision._say_fp32.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hyperbagel.precision"):
        assert _out_dtype(True) == torch.float32 and _out_dtype(True) == torch.float32
    assert [r.message.count("no native bf16") for r in caplog.records] == [1]
    assert not use_bf16(True) and not native_bf16()


def test_forced_bf16_runs_bf16(monkeypatch):
    monkeypatch.setenv(ENV, "1")
    assert _out_dtype(True) == torch.bfloat16 and use_bf16(True)
    assert _out_dtype(False) == torch.float32 and not use_bf16(False)  # never turned on when not asked


def test_cuda_keeps_bf16_and_a_bad_override_is_refused(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    assert native_bf16("cuda") and use_bf16(True, "cuda")  # the override is the CPU's only
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(HyperBagelError, match="must be 0"):
        use_bf16(True)


def test_unset_follows_onednn(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert native_bf16() == torch.ops.mkldnn._is_mkldnn_bf16_supported()
