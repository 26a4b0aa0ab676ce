"""The demo under load: concurrent ``gradio_client`` clients against a live ``hyperbagel serve``.

Every client loops until the clock runs out: it picks a task (generate, edit, understand) and a mode (baseline,
accelerated) at random, sends one request through the page's API and records how it ended — answered, refused as
busy (the server's queue is full: ``serve.app.QUEUE_SIZE``), answered with an error line, or failed otherwise. A
refused client waits a moment and tries again, as a person would. When the clock runs out, requests still under way
are waited for; any that never come back are counted as lost. The server's resident memory is sampled every second.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TASKS = ("generate", "edit", "understand")
MODES = ("accelerated", "baseline")
BUSY_WORDS = ("queue is full", "too many")
RETRY_AFTER = 0.5  # seconds a refused client waits before its next request


@dataclass
class Request:
    client: int
    task: str
    mode: str
    start: float  # seconds since the load began
    seconds: float = 0.0
    outcome: str = "lost"  # ok | busy | error | failed | lost
    message: str = ""


@dataclass
class LoadReport:
    clients: int
    seconds: float
    requests: list[Request] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, server RSS in MB)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("ok", "busy", "error", "failed", "lost")}
        for r in self.requests:
            out[r.outcome] += 1
        return out

    def summary(self) -> dict:
        ok = [r.seconds for r in self.requests if r.outcome == "ok"]
        per_task = {t: [r.seconds for r in self.requests if r.outcome == "ok" and r.task == t] for t in TASKS}
        rss = [m for _, m in self.rss_mb]
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "requests": len(self.requests),
            **self.counts(),
            "answered_per_minute": 60 * len(ok) / self.seconds,
            "latency_p50_s": float(np.percentile(ok, 50)) if ok else None,
            "latency_p95_s": float(np.percentile(ok, 95)) if ok else None,
            "latency_p50_s_by_task": {t: float(np.percentile(v, 50)) if v else None for t, v in per_task.items()},
            "rss_mb_first": rss[0] if rss else None,
            "rss_mb_max": max(rss) if rss else None,
            "rss_mb_last": rss[-1] if rss else None,
            "failures": sorted({r.message for r in self.requests if r.outcome in ("failed", "lost")})[:10],
        }


def write_scene_png(path: Path, seed: int = 0) -> Path:
    """A Shapes World scene as a PNG: the image the clients edit and ask about."""
    from PIL import Image

    from hyperbagel.world.render import render
    from hyperbagel.world.scene import sample_scene

    Image.fromarray(render(sample_scene(np.random.default_rng(seed), 64))).save(path)
    return path


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (Linux ``/proc``), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def request_args(task: str, mode: str, image, rng: np.random.Generator) -> list:
    """The page's inputs for one request (its API order, without the per-session history), with a random seed."""
    seed = int(rng.integers(0, 1000))
    if task == "generate":
        return ["a red circle left of a blue square", False, mode, seed, 4.0, 0.0, "global", 0.0, 50, 3.0, 64]
    if task == "edit":
        return [image, "make the circle green", False, mode, seed, 4.0, 1.5, 0.4, "text_channel", 0.0, 50, 3.0, 64]
    return [image, "how many circles are there?", mode, False, 0.3, 32, seed]


def classify(outputs, error: BaseException | None) -> tuple[str, str]:
    """(outcome, message) of one finished request."""
    if error is not None:
        text = str(error) or type(error).__name__
        busy = any(w in text.lower() for w in BUSY_WORDS)
        return ("busy" if busy else "failed"), text.splitlines()[0][:200]
    status = str(outputs[-1] if isinstance(outputs, (tuple, list)) else outputs)
    if status.startswith("**Error:**"):
        return "error", status[:200]
    return "ok", ""


def _client_loop(url: str, index: int, report: LoadReport, t0: float, stop_at: float, image_path: Path,
                 seed: int, lock: threading.Lock) -> None:
    from gradio_client import Client, handle_file

    rng = np.random.default_rng([seed, index])
    try:
        client = Client(url, verbose=False)
    except Exception as err:  # the server refused even the page: one failed request says so
        with lock:
            report.requests.append(Request(index, "connect", "-", time.monotonic() - t0, 0.0, "failed", repr(err)))
        return
    image = handle_file(str(image_path))
    while time.monotonic() < stop_at:
        task, mode = TASKS[rng.integers(len(TASKS))], MODES[rng.integers(len(MODES))]
        req = Request(index, task, mode, time.monotonic() - t0)
        with lock:
            report.requests.append(req)
        start, outputs, error = time.monotonic(), None, None
        try:
            outputs = client.predict(*request_args(task, mode, image, rng), api_name=f"/{task}")
        except Exception as err:  # classified below: busy, or a failure the report lists
            error = err
        req.seconds = time.monotonic() - start
        req.outcome, req.message = classify(outputs, error)
        if req.outcome == "busy":
            time.sleep(RETRY_AFTER)


def run_load(url: str, clients: int, seconds: float, image_path: Path, server_pid: int | None = None,
             seed: int = 0, grace: float = 300.0) -> LoadReport:
    """``clients`` concurrent clients against the demo at ``url`` for ``seconds``; then up to ``grace`` seconds
    for requests under way to finish (what does not is lost)."""
    report, lock = LoadReport(clients, seconds), threading.Lock()
    t0 = time.monotonic()
    stop_at = t0 + seconds
    threads = [threading.Thread(target=_client_loop, daemon=True,
                                args=(url, i, report, t0, stop_at, image_path, seed, lock)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = stop_at + grace
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        if server_pid is not None and (m := rss_mb(server_pid)) is not None:
            report.rss_mb.append((time.monotonic() - t0, m))
        time.sleep(1.0)
    with lock:
        for r in report.requests:
            if r.outcome == "lost":
                r.message = r.message or "no answer within the grace period"
    return report
