"""The live demo under a small crowd: more clients than the queue holds, every request answered or refused as busy
(none lost, no failure), and the server still up. ``hyperbagel bench demo`` runs the full version (docs/demo.md)."""

import pytest

from hyperbagel.eval.demo_load import run_load, write_scene_png
from hyperbagel.serve.app import QUEUE_SIZE


def test_a_crowd_gets_answers_or_busy_refusals_and_nothing_is_lost(server, tmp_path):
    pytest.importorskip("gradio_client")
    image = write_scene_png(tmp_path / "scene.png")
    report = run_load(server, clients=QUEUE_SIZE + 4, seconds=8.0, image_path=image, seed=0, grace=120.0)
    s = report.summary()
    assert s["failed"] == 0 and s["lost"] == 0 and s["error"] == 0, s["failures"]
    assert s["ok"] >= 1
    assert {r.task for r in report.requests} == {"generate", "edit", "understand"}


def test_the_demo_listens_on_localhost_unless_told_otherwise():
    import argparse

    from hyperbagel.commands.serve import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["serve"]).host == "127.0.0.1"


def _call(server: str, api: str, data: list) -> tuple[str, str]:
    """One request through Gradio's plain HTTP API (no client library that would upload local files for us):
    the stream's last event and its data."""
    import json
    import urllib.request

    post = urllib.request.Request(f"{server}gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                  headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=30) as r:
        event_id = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{server}gradio_api/call/{api}/{event_id}", timeout=60) as r:
        lines = r.read().decode().splitlines()
    events = [ln.removeprefix("event: ") for ln in lines if ln.startswith("event: ")]
    payloads = [ln.removeprefix("data: ") for ln in lines if ln.startswith("data: ")]
    return events[-1], payloads[-1]


def test_the_demo_reads_no_file_path_from_a_request(server, tmp_path):
    """A request that names a file on the server's disk instead of uploading it is refused, even when the file is a
    valid image: the demo reads only what a client uploaded. (The same request with the image inline is answered,
    so the refusal is about the path.)"""
    import base64
    import io

    from PIL import Image

    image = write_scene_png(tmp_path / "on-the-server.png")
    question = ["how many circles are there?", "baseline", False, 0.3, 8, 0]
    buf = io.BytesIO()
    Image.open(image).save(buf, format="PNG")
    inline = {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
              "meta": {"_type": "gradio.FileData"}}
    assert _call(server, "understand", [inline, *question])[0] == "complete"
    named = {"path": str(image), "meta": {"_type": "gradio.FileData"}}
    event, data = _call(server, "understand", [named, *question])
    assert event == "error" and "not uploaded" in data, data


def test_the_server_caps_malloc_arenas_and_trims_the_heap_on_glibc():
    import platform
    import threading

    from hyperbagel.serve.malloc import limit_malloc_arenas, trim_malloc_every

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt(M_ARENA_MAX) and malloc_trim are glibc's")
    assert limit_malloc_arenas() is True
    assert trim_malloc_every(0.01) is True
    assert any(t.name == "malloc-trim" and t.daemon and t.is_alive() for t in threading.enumerate())
