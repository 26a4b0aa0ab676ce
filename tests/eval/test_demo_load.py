"""The load bench's bookkeeping: how a finished request is classified, and the summary's counts and latencies."""

from hyperbagel.eval.demo_load import LoadReport, Request, classify


def test_classify_tells_answers_busy_refusals_error_lines_and_failures_apart():
    assert classify(("img.png", "", "accelerated · 3 forwards, 0.10 s"), None) == ("ok", "")
    assert classify((None, "", "**Error:** upload an image to edit first"), None)[0] == "error"
    assert classify(None, RuntimeError("Queue is full! Please try again.")) == (
        "busy", "Queue is full! Please try again.")
    assert classify(None, ConnectionError("connection reset"))[0] == "failed"


def test_summary_counts_every_outcome_and_times_only_answers():
    report = LoadReport(clients=2, seconds=60.0, rss_mb=[(0.0, 100.0), (1.0, 120.0), (2.0, 110.0)])
    report.requests = [Request(0, "generate", "baseline", 0.0, 1.0, "ok"),
                       Request(1, "edit", "accelerated", 0.1, 3.0, "ok"),
                       Request(1, "understand", "baseline", 3.2, 0.01, "busy", "Queue is full"),
                       Request(0, "edit", "baseline", 1.1)]  # never came back
    s = report.summary()
    assert (s["requests"], s["ok"], s["busy"], s["lost"], s["failed"], s["error"]) == (4, 2, 1, 1, 0, 0)
    assert s["latency_p50_s"] == 2.0 and s["answered_per_minute"] == 2.0
    assert (s["rss_mb_first"], s["rss_mb_max"], s["rss_mb_last"]) == (100.0, 120.0, 110.0)
