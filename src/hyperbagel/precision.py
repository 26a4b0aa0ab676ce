"""bf16 where the hardware computes it, fp32 where it would only emulate it.

bf16 autocast is a speed setting here, not a numerical one: on CPUs with native bf16 (AMX or AVX512, oneDNN's own
check) it runs our models about twice as fast as fp32; on an AVX2-only CPU oneDNN has no bf16 kernels and the same
work falls to a reference path over 100× slower than fp32 (a 512×1024 by 1024×1024 matmul: 8 ms in fp32, 1.08 s in
bf16 on a two-core AVX2 EPYC). So every ``--bf16`` / ``bf16=True`` goes through :func:`use_bf16`, which keeps bf16
where it is native and otherwise runs fp32 and says so once. ``HYPERBAGEL_CPU_BF16=1`` forces bf16 on the CPU (to
reproduce a bf16 run's numbers), ``HYPERBAGEL_CPU_BF16=0`` forces fp32.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from .errors import HyperBagelError

log = logging.getLogger(__name__)

ENV = "HYPERBAGEL_CPU_BF16"


@functools.cache
def _cpu_has_native_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether bf16 autocast pays on ``device_type``: every CUDA GPU we target (Ampere and later) computes bf16
    natively; on the CPU, oneDNN's bf16 support unless ``HYPERBAGEL_CPU_BF16`` says otherwise."""
    if device_type != "cpu":
        return True
    forced = os.environ.get(ENV, "")
    if forced not in ("", "0", "1"):
        raise HyperBagelError(f"{ENV} must be 0 (fp32) or 1 (bf16), got {forced!r}")
    return forced == "1" if forced else _cpu_has_native_bf16()


@functools.cache
def _say_fp32() -> None:
    log.warning("bf16 asked for, but this CPU (%s) has no native bf16: running fp32, which is faster here "
                "(%s=1 forces bf16)", torch.backends.cpu.get_cpu_capability(), ENV)


def use_bf16(requested: bool, device_type: str = "cpu") -> bool:
    """``requested``, unless the device has no native bf16 (then False, logged once)."""
    if requested and not native_bf16(device_type):
        _say_fp32()
        return False
    return requested


def bf16_autocast(requested: bool, device_type: str = "cpu") -> torch.autocast:
    """bf16 autocast on ``device_type`` when :func:`use_bf16` keeps it, else a disabled autocast (fp32)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16(requested, device_type))
