"""A live ``hyperbagel serve`` on a micro model with a student and a draft (every tab has both modes), on 127.0.0.1
and a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

START_TIMEOUT = 120  # seconds for the server to load the model and answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(micro_student_folder, micro_draft_folder, tmp_path_factory):
    """The URL of a running demo (on ``$HYPERBAGEL_DEMO_CKPT`` with ``$HYPERBAGEL_DEMO_DRAFT`` when set); its log is
    shown when it fails to start."""
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[serve]')")
    ckpt = os.environ.get("HYPERBAGEL_DEMO_CKPT")
    draft = os.environ.get("HYPERBAGEL_DEMO_DRAFT") if ckpt else str(micro_draft_folder)
    ckpt = ckpt or str(micro_student_folder)
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    argv = [sys.executable, "-m", "hyperbagel.cli", "serve", "--ckpt", ckpt, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv + (["--draft", draft] if draft else []), stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the demo server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo server did not answer within {START_TIMEOUT} s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
