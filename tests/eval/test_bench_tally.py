from hyperbagel.eval.bench_tally import Tally
from hyperbagel.eval.cpu_meter import CpuUse


def _two_calls(tally: Tally, second_others: float | None) -> dict:
    tally.count("teacher", forwards=98, seconds=2.0, sample_seconds=1.5, images=4, cpu=CpuUse(2.0, 3.5, 0.25))
    tally.count("teacher", forwards=98, seconds=1.0, sample_seconds=0.5, images=4,
                cpu=CpuUse(1.0, 1.5, second_others))
    return tally.stats["teacher"]


def test_count_adds_each_call_to_the_row():
    st = _two_calls(Tally(rows=["teacher"], items=2, samples=4), second_others=0.5)
    assert st == {"forwards": 196, "calls": 2, "seconds": 3.0, "sample_seconds": 2.0, "images": 8,
                  "own_cpu": 5.0, "others_cpu": 0.75}


def test_one_unreadable_machine_total_drops_the_rows_others_total():
    st = _two_calls(Tally(rows=["teacher"], items=2, samples=4), second_others=None)
    assert st["own_cpu"] == 5.0 and "others_cpu" not in st


def test_a_tally_resumed_from_an_unmetered_bench_keeps_no_cpu_totals():
    tally = Tally(rows=["teacher"], items=2, samples=4,
                  stats={"teacher": {"forwards": 0, "calls": 0, "seconds": 0.0, "sample_seconds": 0.0, "images": 0}})
    st = _two_calls(tally, second_others=0.5)
    assert st["calls"] == 2 and "own_cpu" not in st and "others_cpu" not in st
