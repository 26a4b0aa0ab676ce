"""Was anything else running while a timing was taken?

A speed-up is a ratio of wall-clock times, and on a two-core machine a test run or a training beside a bench
slows whichever rows it overlaps by several times. ``CpuMeter`` reads, around a timed call, the whole machine's busy
CPU time (Linux ``/proc/stat``) and this process's own (``time.process_time``, all its threads): their difference is
what other processes used. A stopped process (``kill -STOP``) shows as its own share of the wall time falling.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
BUSY_FIELDS = slice(0, 3), slice(5, 8)  # user nice system, then irq softirq steal (idle and iowait skipped)
DISTURBED = 0.05  # others' CPU time above this share of the row's wall time × cores flags its timing


def busy_seconds(stat: Path = PROC_STAT) -> float | None:
    """The machine's busy CPU seconds since boot, all cores together; None where ``/proc/stat`` is missing."""
    try:
        fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = sum(sum(fields[s]) for s in BUSY_FIELDS)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuUse:
    wall: float  # seconds
    own: float  # this process's CPU seconds
    others: float | None  # everything else's CPU seconds; None where the machine's total is not readable


class CpuMeter:
    """``with CpuMeter() as m: ...`` then ``m.use``."""

    def __enter__(self) -> CpuMeter:
        self._busy, self._own, self._wall = busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall, own = time.perf_counter() - self._wall, time.process_time() - self._own
        busy = busy_seconds()
        others = None if busy is None or self._busy is None else max(0.0, busy - self._busy - own)
        self.use = CpuUse(wall, own, others)


def others_share(others: float, wall: float, cores: int | None = None) -> float:
    """Other processes' CPU time as a share of what the machine could give in ``wall`` seconds."""
    return others / max(wall * (cores or os.cpu_count() or 1), 1e-9)


def disturbed(rows: list[dict]) -> list[str]:
    """Bench report rows whose calls shared the machine with other processes' work (above ``DISTURBED``), as
    "row N %"; rows without a meter reading (``cpu`` None: resumed from a bench that did not meter) are not named."""
    return [f"{r['row']} {100 * r['cpu']['others_share']:.0f} %" for r in rows
            if (r.get("cpu") or {}).get("others_share") is not None and r["cpu"]["others_share"] > DISTURBED]
