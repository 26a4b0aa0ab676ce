"""The CPU meter behind the bench's "timings disturbed" line: what other processes used during a timed call."""

import os
import subprocess
import sys
import time

import pytest

from hyperbagel.eval.cpu_meter import CpuMeter, busy_seconds, disturbed, others_share


def test_busy_seconds_adds_the_busy_fields_of_the_first_line(tmp_path):
    stat = tmp_path / "stat"  # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 7 50 1000 40 5 3 2 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    assert busy_seconds(stat) == pytest.approx((100 + 7 + 50 + 5 + 3 + 2) / os.sysconf("SC_CLK_TCK"))
    assert busy_seconds(tmp_path / "missing") is None


@pytest.mark.skipif(busy_seconds() is None, reason="needs /proc/stat")
def test_another_process_burning_cpu_is_seen_and_a_sleep_is_not_ours():
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the burner is up
        with CpuMeter() as m:
            time.sleep(1.0)
    finally:
        burner.kill()
    assert m.use.wall == pytest.approx(1.0, abs=0.3)
    assert m.use.own < 0.2  # sleeping costs this process nothing
    assert m.use.others > 0.6  # one core busy for a second, give or take the clock's ticks


def test_own_cpu_is_counted_when_this_process_works():
    with CpuMeter() as m:
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:
            pass
    assert m.use.own > 0.3


def test_rows_past_the_threshold_are_named():
    rows = [{"row": "teacher", "cpu": {"own_share": 0.9, "others_share": 0.31}},
            {"row": "dmdo-6", "cpu": {"own_share": 0.9, "others_share": 0.01}},
            {"row": "old", "cpu": None}]  # resumed from a bench that did not meter
    assert disturbed(rows) == ["teacher 31 %"]
    assert others_share(1.0, wall=1.0, cores=2) == 0.5
