"""Bad input gets one clear message, never a stack trace: in the Python API (``HyperBagelError``) and the CLI (exit
code 2, ``error: …`` on stderr), for bad prompts, images, settings and damaged model folders made from real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hyperbagel.cli import main
from hyperbagel.errors import HyperBagelError
from hyperbagel.flow.guidance import GuidanceConfig
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline, SamplerSettings

FAST = SamplerSettings(num_timesteps=3)
IMAGE = np.full((64, 64, 3), 200, np.uint8)


@pytest.fixture(scope="module")
def pipe(micro_folder):
    return Pipeline.from_pretrained(micro_folder)


# ----------------------------------------------------------------------------------------------------------- folders
def _truncate(name, keep=0.5):
    def damage(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
    return damage


def _write(name, text):
    def damage(folder):
        (folder / name).write_text(text)
    return damage


def _remove(name):
    def damage(folder):
        (folder / name).unlink()
    return damage


def _edit_json(name, change):
    def damage(folder):
        d = json.loads((folder / name).read_text())
        change(d)
        (folder / name).write_text(json.dumps(d))
    return damage


def _swap_weights(folder):
    shutil.copyfile(folder / "ae.safetensors", folder / "ema.safetensors")


DAMAGE = {
    "no config.json": (_remove("config.json"), "has no config.json"),
    "config.json not JSON": (_write("config.json", "{not json"), "corrupt"),
    "config.json empty": (_write("config.json", ""), "corrupt"),
    "config.json a list": (_write("config.json", "[1, 2, 3]"), "corrupt"),
    "config.json unknown field": (_edit_json("config.json", lambda d: d.update(bogus=1)), "bogus"),
    "config.json other widths": (_edit_json("config.json", lambda d: d["llm"].update(hidden_size=128)),
                                 "does not match the model"),
    "ema truncated": (_truncate("ema.safetensors"), "not a valid safetensors file"),
    "ema header only": (_truncate("ema.safetensors", 0.001), "not a valid safetensors file"),
    "ema empty": (_truncate("ema.safetensors", 0.0), "not a valid safetensors file"),
    "ema garbage": (_write("ema.safetensors", "these are not weights " * 20), "not a valid safetensors file"),
    "ema missing": (_remove("ema.safetensors"), "weights file not found"),
    "ema holds the autoencoder": (_swap_weights, "does not match the model"),
    "ae truncated": (_truncate("ae.safetensors"), "not a valid safetensors file"),
    "no tokenizer": (_remove("tokenizer.json"), "tokenizer not found"),
    "tokenizer not JSON": (_write("tokenizer.json", "{garbage"), "cannot read tokenizer"),
    "tokenizer of another model": (_edit_json("tokenizer.json", lambda d: d["model"]["vocab"].update(red=999)),
                                   "does not match the model"),
}


@pytest.fixture
def damaged(micro_folder, tmp_path):
    def make(case: str):
        folder = tmp_path / "model"
        shutil.copytree(micro_folder, folder)
        DAMAGE[case][0](folder)
        return folder
    return make


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_model_folder_api_and_cli(case, damaged, capsys):
    folder, fragment = damaged(case), DAMAGE[case][1]
    with pytest.raises(HyperBagelError, match=fragment):
        Pipeline.from_pretrained(folder)
    assert main(["generate", "--ckpt", str(folder), "a red circle", "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err


def test_missing_folder_and_damaged_student(micro_student_folder, tmp_path, capsys):
    with pytest.raises(HyperBagelError, match="not found"):
        Pipeline.from_pretrained(tmp_path / "nowhere")
    folder = tmp_path / "model"
    shutil.copytree(micro_student_folder, folder)
    _truncate("student.safetensors")(folder)
    with pytest.raises(HyperBagelError, match="student.safetensors"):
        Pipeline.from_pretrained(folder)
    assert main(["edit", "--ckpt", str(folder), str(tmp_path / "x.png"), "remove the circle"]) == 2
    assert "error: " in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------- API
API_CASES = {
    "empty prompt": (lambda p: p.generate("", sampler=FAST), "empty"),
    "blank prompt": (lambda p: p.generate("   ", sampler=FAST), "empty"),
    "over-long prompt": (lambda p: p.generate("a red circle and " * 20 + "a square", sampler=FAST), "at most 64"),
    "words outside the vocabulary": (lambda p: p.generate("a pink elephant", sampler=FAST),
                                     r"outside the vocabulary: \['elephant', 'pink'\]"),
    "prompt not text": (lambda p: p.generate(None, sampler=FAST), "string"),
    "no prompts": (lambda p: p.generate([], sampler=FAST), "no prompts"),
    "text guidance too high": (lambda p: p.generate("a red circle", guidance=GuidanceConfig(text_scale=9.0),
                                                    sampler=FAST), r"outside the trained range \[1, 8\]"),
    "text guidance below 1": (lambda p: p.generate("a red circle", guidance=GuidanceConfig(text_scale=0.5),
                                                   sampler=FAST), "outside the trained range"),
    "guidance NaN": (lambda p: p.generate("a red circle", guidance=GuidanceConfig(text_scale=float("nan")),
                                          sampler=FAST), "outside the trained range"),
    "image guidance too high": (lambda p: p.edit(IMAGE, "remove the circle", sampler=FAST,
                                                 guidance=GuidanceConfig(image_scale=5.0)),
                                r"image guidance scale 5.0 is outside the trained range \[1, 4\]"),
    "negative seed": (lambda p: p.generate("a red circle", seeds=-1, sampler=FAST), "seed -1 is out of range"),
    "huge seed": (lambda p: p.generate("a red circle", seeds=2**64, sampler=FAST), "out of range"),
    "seed count": (lambda p: p.generate(["a red circle", "a square"], seeds=[1], sampler=FAST), "1 seeds for 2"),
    "one timestep": (lambda p: p.generate("a red circle", sampler=SamplerSettings(1)), "timesteps"),
    "zero shift": (lambda p: p.generate("a red circle", sampler=SamplerSettings(3, 0.0)), "shift"),
    "think budget": (lambda p: p.generate("a red circle", sampler=FAST, think=True, max_think_tokens=0),
                     "max new tokens"),
    "image of the wrong size": (lambda p: p.edit(np.zeros((32, 48, 3), np.uint8), "remove the circle",
                                                 sampler=FAST), "64×64 images; the image is 48×32"),
    "gray image": (lambda p: p.understand(np.zeros((64, 64), np.uint8), "describe the image."), "RGB uint8"),
    "float image": (lambda p: p.understand(IMAGE / 255.0, "describe the image."), "RGB uint8"),
    "RGBA array": (lambda p: p.understand(np.zeros((64, 64, 4), np.uint8), "describe the image."), "RGB uint8"),
    "no image": (lambda p: p.edit(None, "remove the circle", sampler=FAST), "expected an image"),
    "empty question": (lambda p: p.understand(IMAGE, ""), "empty"),
    "answer budget": (lambda p: p.understand(IMAGE, "describe the image.", max_new_tokens=0), "max new tokens"),
    "images and questions": (lambda p: p.understand([IMAGE, IMAGE], "describe the image."), "2 images for 1"),
    "accelerated without a student": (lambda p: p.generate("a red circle", accelerated=True),
                                      "no distilled student"),
    "accelerated without a draft": (lambda p: p.understand(IMAGE, "describe the image.", accelerated=True),
                                    "no draft model loaded"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_bad_input(case, pipe):
    call, fragment = API_CASES[case]
    with pytest.raises(HyperBagelError, match=fragment):
        call(pipe)


def test_api_image_files_and_pil(pipe, tmp_path):
    (tmp_path / "not.png").write_text("hello")
    with pytest.raises(HyperBagelError, match="not an image file"):
        pipe.understand(tmp_path / "not.png", "describe the image.")
    with pytest.raises(HyperBagelError, match="image not found"):
        pipe.understand(str(tmp_path / "missing.png"), "describe the image.")
    Image.fromarray(np.zeros((100, 80, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(HyperBagelError, match=r"big.png\) is 80×100"):
        pipe.understand(tmp_path / "big.png", "describe the image.")
    # what is accepted: a path, a PIL image (RGBA is flattened to RGB), an array
    Image.fromarray(IMAGE).save(tmp_path / "ok.png")
    answers = [pipe.understand(im, "describe the image.", max_new_tokens=2).texts[0]
               for im in (tmp_path / "ok.png", Image.fromarray(IMAGE).convert("RGBA"), IMAGE)]
    assert answers[0] == answers[1] == answers[2]


def test_accelerated_guidance_range_is_checked(micro_student_folder):
    pipe = Pipeline.from_pretrained(micro_student_folder)
    assert pipe.can_accelerate("generate") and pipe.can_accelerate("edit")
    assert pipe.generate("a red circle", guidance=T2I_GUIDANCE).images[0].shape == (64, 64, 3)
    assert pipe.edit(IMAGE, "remove the circle", guidance=EDIT_GUIDANCE).forwards > 0
    with pytest.raises(HyperBagelError, match=r"text guidance scale 6.0 is outside the trained range \[1, 5\]"):
        pipe.generate("a red circle", guidance=GuidanceConfig(text_scale=6.0))  # the student's range
    assert pipe.generate("a red circle", guidance=GuidanceConfig(text_scale=6.0), accelerated=False,
                         sampler=FAST).forwards == 2 * 2  # the teacher's range is BAGEL's [1, 8]; the prompt's
    # prefill runs inside the first forward


# ----------------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-files")
    (root / "not.png").write_text("hello")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "small.png")
    Image.fromarray(IMAGE).save(root / "ok.png")
    return root


CLI_CASES = {
    "empty prompt": (["generate", "{ckpt}", ""], "empty"),
    "over-long prompt": (["generate", "{ckpt}", "a red circle and " * 20 + "a square"], "at most 64"),
    "words outside the vocabulary": (["generate", "{ckpt}", "a pink elephant"], "outside the vocabulary"),
    "text guidance": (["generate", "{ckpt}", "a red circle", "--text-scale", "9"], "guidance"),
    "image guidance": (["edit", "{ckpt}", "{files}/ok.png", "remove the circle", "--image-scale", "0"], "guidance"),
    "one timestep": (["generate", "{ckpt}", "a red circle", "--steps", "1"], "timesteps"),
    "negative seed": (["generate", "{ckpt}", "a red circle", "--seed", "-1"], "seed"),
    "not an image": (["edit", "{ckpt}", "{files}/not.png", "remove the circle"], "not an image file"),
    "wrong size": (["understand", "{ckpt}", "{files}/small.png", "describe the image."], "64×64"),
    "missing image": (["understand", "{ckpt}", "{files}/nope.png", "describe the image."], "image not found"),
    "answer budget": (["understand", "{ckpt}", "{files}/ok.png", "describe the image.", "--max-new-tokens", "0"],
                      "max new tokens"),
    "temperature": (["understand", "{ckpt}", "{files}/ok.png", "describe the image.", "--temperature", "-1"],
                    "temperature"),
    "serve a missing folder": (["serve", "--ckpt", "{files}/no-model", "--port", "{port}"], "not found"),
    "serve on a port that does not exist": (["serve", "{ckpt}", "--port", "70000"], "--port must be from 1 to 65535"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input(case, micro_folder, files, capsys):
    argv, fragment = CLI_CASES[case]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [x for a in argv
            for x in (["--ckpt", str(micro_folder)] if a == "{ckpt}" else [a.format(files=files, port=port)])]
    assert main(argv + (["--out", str(files / "out.png")] if argv[0] in ("generate", "edit") else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err


def test_cli_serve_on_a_busy_port(micro_folder, capsys):
    import socket

    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--ckpt", str(micro_folder), "--port", str(port)]) == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err


def test_cli_process_prints_one_line(damaged):
    """The real entry point, in its own process: a damaged folder is one line on stderr and exit code 2."""
    folder = damaged("ema truncated")
    out = subprocess.run([sys.executable, "-m", "hyperbagel.cli", "serve", "--ckpt", str(folder)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot read") and "not a valid safetensors" in lines[0]


def test_baseline_switch_sets_the_draft_aside(micro_folder, micro_draft_folder):
    """``accelerated=False`` decodes answers and think plans without the draft: the same text (lossless), the
    forwards of plain decoding; the draft stays loaded for the next call."""
    plain = Pipeline.from_pretrained(micro_folder)
    pipe = Pipeline.from_pretrained(micro_folder)
    pipe.load_draft(micro_draft_folder)
    assert pipe.can_accelerate("understand") and not plain.can_accelerate("understand")
    ref = plain.understand(IMAGE, "describe the image.", max_new_tokens=12)
    base = pipe.understand(IMAGE, "describe the image.", max_new_tokens=12, accelerated=False)
    fast = pipe.understand(IMAGE, "describe the image.", max_new_tokens=12)
    assert ref.texts == base.texts == fast.texts and base.forwards == ref.forwards
    assert pipe.draft is not None
    kw = dict(sampler=FAST, think=True, max_think_tokens=12)
    ref, base = plain.generate("a red circle", **kw), pipe.generate("a red circle", accelerated=False, **kw)
    assert ref.plans == base.plans and ref.forwards == base.forwards


def test_a_config_that_does_not_describe_the_weights_fails_before_allocating(micro_folder, tmp_path):
    """A config.json whose sizes would need terabytes is refused by comparing it with the weights file's header,
    not by trying to allocate the model."""
    folder = tmp_path / "model"
    shutil.copytree(micro_folder, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["llm"]["vocab_size"] = 10**9
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HyperBagelError, match="does not match the model"):
        Pipeline.from_pretrained(folder)
