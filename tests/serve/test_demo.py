"""The demo's handlers (what each tab does) and its HTTP API, with bad input shown as one line in the page."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hyperbagel.pipeline import Pipeline
from hyperbagel.serve.demo import ACCELERATED, BASELINE, Demo, History

STATUS = re.compile(r"^\*\*(baseline|accelerated)\*\*: (\d+) forwards, \d+\.\d\d s")
IMAGE = np.full((64, 64, 3), 200, np.uint8)


def gen_args(**kw):
    args = dict(prompt="a red circle left of a blue square", think=False, mode=BASELINE, seed=0, text_scale=4.0,
                interval_start=0.0, renorm_type="global", renorm_min=0.0, timesteps=4, shift=3.0, max_think_tokens=8)
    return {**args, **kw}


def edit_args(**kw):
    args = dict(image=IMAGE, instruction="make the background gray", think=False, mode=BASELINE, seed=0,
                text_scale=4.0, image_scale=1.5, interval_start=0.4, renorm_type="text_channel", renorm_min=0.0,
                timesteps=4, shift=3.0, max_think_tokens=8)
    return {**args, **kw}


def und_args(**kw):
    args = dict(image=IMAGE, question="describe the image.", mode=BASELINE, sampling=False, temperature=0.3,
                max_new_tokens=6, seed=0)
    return {**args, **kw}


@pytest.fixture(scope="module")
def demo(micro_folder):
    return Demo(Pipeline.from_pretrained(micro_folder))


@pytest.fixture(scope="module")
def student_demo(micro_student_folder):
    return Demo(Pipeline.from_pretrained(micro_student_folder))


def test_tabs_show_results_with_forwards_and_time(demo):
    image, plan, status, _ = demo.generate(**gen_args())
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and plan == ""
    m = STATUS.match(status)
    assert m and m[1] == BASELINE and int(m[2]) == 3 * 2, status  # 3 steps × 2 branches, the prompt inside the first
    edited, _, status, _ = demo.edit(**edit_args(image=image))
    assert edited.shape == (64, 64, 3) and STATUS.match(status), status
    answer, status, _ = demo.understand(**und_args(image=edited))
    assert isinstance(answer, str) and answer and STATUS.match(status), status
    _, plan, status, _ = demo.generate(**gen_args(think=True))
    assert isinstance(plan, str) and STATUS.match(status), status


def test_switch_is_baseline_only_without_a_student(demo):
    assert all(demo.default_mode(t) == BASELINE for t in ("generate", "edit", "understand"))
    assert "no distilled student" in demo.notes["generate"]
    image, _, status, _ = demo.generate(**gen_args(mode=ACCELERATED))
    assert image is None and status.startswith("**Error:** baseline only")


def test_switch_compares_the_two_modes(student_demo):
    assert student_demo.default_mode("generate") == ACCELERATED and student_demo.notes["edit"] is None
    history = History()
    _, _, fast, history = student_demo.generate(**gen_args(mode=ACCELERATED, history=history))
    assert STATUS.match(fast)[2] == "2"  # 2 student steps, the prompt inside the first
    _, _, slow, history = student_demo.generate(**gen_args(mode=BASELINE, timesteps=11, history=history))
    assert STATUS.match(slow)[2] == "20" and "last accelerated: 2 forwards" in slow and "10.0× fewer forwards" in slow
    _, _, status, _ = student_demo.edit(**edit_args(mode=ACCELERATED))
    assert STATUS.match(status)[1] == ACCELERATED


def test_understanding_switch_with_a_draft(micro_folder, micro_draft_folder):
    pipe = Pipeline.from_pretrained(micro_folder)
    pipe.load_draft(micro_draft_folder)
    demo = Demo(pipe)
    assert demo.default_mode("understand") == ACCELERATED and demo.default_mode("generate") == BASELINE
    fast_answer, fast, history = demo.understand(**und_args(mode=ACCELERATED, max_new_tokens=12))
    answer, slow, history = demo.understand(**und_args(mode=BASELINE, max_new_tokens=12, history=history))
    assert answer == fast_answer  # speculative decoding is lossless
    assert STATUS.match(fast)[1] == ACCELERATED and "last accelerated" in slow and "fewer forwards" in slow


BAD = {
    "empty prompt": ("generate", dict(prompt=""), "the prompt is empty"),
    "over-long prompt": ("generate", dict(prompt="a red circle and " * 20 + "a square"), "at most 64"),
    "words outside the vocabulary": ("generate", dict(prompt="a pink elephant"), "outside the vocabulary"),
    "guidance outside the range": ("generate", dict(text_scale=9.0), "outside the trained range"),
    "image guidance outside the range": ("edit", dict(image_scale=4.5), "outside the trained range"),
    "timesteps": ("generate", dict(timesteps=1), "timesteps"),
    "seed not a number": ("generate", dict(seed="abc"), "seed must be a whole number"),
    "seed a fraction": ("generate", dict(seed=1.5), "seed must be a whole number"),
    "no image to edit": ("edit", dict(image=None), "upload an image"),
    "image of the wrong size": ("edit", dict(image=np.zeros((128, 96, 3), np.uint8)), "64×64 images"),
    "empty instruction": ("edit", dict(instruction=""), "empty"),
    "no image to ask about": ("understand", dict(image=None), "upload an image"),
    "answer budget": ("understand", dict(max_new_tokens=0), "max new tokens"),
    "unknown mode": ("understand", dict(mode="turbo"), "unknown mode"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_in_the_page(demo, case):
    task, change, fragment = BAD[case]
    args = {"generate": gen_args, "edit": edit_args, "understand": und_args}[task](**change)
    out = getattr(demo, task)(**args)
    status = out[-2]
    assert out[0] is None or out[0] == ""
    assert status.startswith("**Error:** ") and fragment in status and "\n" not in status and "Traceback" not in status


def test_a_bug_is_one_line_and_logged(demo, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(demo.pipe, "understand", broken)
    answer, status, _ = demo.understand(**und_args())
    assert answer == "" and status == "**Error:** internal error (RuntimeError: boom); the server log has the details"
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_page_rejects_a_file_that_is_not_an_image(demo, tmp_path):
    gr = pytest.importorskip("gradio")
    from gradio.data_classes import ImageData

    from hyperbagel.serve.app import build_app

    app = build_app(demo)
    inputs = [b for b in app.blocks.values() if isinstance(b, gr.Image) and b.interactive is not False
              and getattr(b, "elem_id", None) in ("edit-input", "und-input")]
    assert len(inputs) == 2
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(gr.Error, match="not an image file: notes.png"):
        inputs[0].preprocess(ImageData(path=str(tmp_path / "notes.png"), orig_name="notes.png"))


def test_http_api(server, tmp_path):
    """The page's three endpoints through gradio's client: results, and bad input as one line."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    client = Client(server, verbose=False)
    g = gen_args(mode=BASELINE)
    image_path, plan, status = client.predict(*list(g.values()), api_name="/generate")
    assert STATUS.match(status) and np.asarray(Image.open(image_path)).shape == (64, 64, 3)
    e = edit_args(image=handle_file(image_path), mode=ACCELERATED)
    _, _, status = client.predict(*list(e.values()), api_name="/edit")
    assert STATUS.match(status)[1] == ACCELERATED
    answer, status = client.predict(*list(und_args(image=handle_file(image_path)).values()), api_name="/understand")
    assert STATUS.match(status) and isinstance(answer, str)
    _, _, status = client.predict(*list(gen_args(prompt="a pink elephant").values()), api_name="/generate")
    assert status.startswith("**Error:** words outside the vocabulary")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "small.png")
    _, status = client.predict(*list(und_args(image=handle_file(str(tmp_path / "small.png"))).values()),
                               api_name="/understand")
    assert status.startswith("**Error:** this model works on 64×64 images")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(AppError, match="not an image file: notes.png"):
        client.predict(*list(und_args(image=handle_file(str(tmp_path / "notes.png"))).values()),
                       api_name="/understand")
