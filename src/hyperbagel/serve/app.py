"""The web page: a Gradio Blocks app with BAGEL's three tabs (bagel.md §5) over ``serve.demo.Demo``.

Text to Image, Image Edit and Image Understanding, each with a Thinking toggle where the pipeline has one, the
guidance and step controls, a seed, and a baseline/accelerated switch; every result shows its mode, forwards and
wall time. Buttons carry a result to the next tab (generate → edit → ask). Fonts are the system's, so the page loads
with no network.
"""

from __future__ import annotations

import os

from hyperbagel.errors import HyperBagelError
from hyperbagel.flow.guidance import RENORM_TYPES
from hyperbagel.inputs import IMAGE_SCALE_RANGE, TEXT_SCALE_RANGE
from hyperbagel.serve.demo import MODES, Demo, History

# requests waiting for the model (which runs one at a time); one more is refused at once with Gradio's "queue is
# full" message, so a crowd gets a clear answer and bounded memory and wait, not a growing queue
QUEUE_SIZE = 8

CSS = """
.pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
footer { display: none !important; }
"""


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise HyperBagelError("the web demo needs gradio: pip install 'hyperbagel[serve]'") from None
    return gr


def theme():
    gr = _gradio()
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def image_input(**kwargs):
    """A ``gr.Image`` input whose upload of a file that is not an image is one clear message, not a server error.

    (Its ``preprocess`` is wrapped on the instance: subclassing a Gradio component writes a ``.pyi`` stub beside the
    subclass's source file.)
    """
    gr = _gradio()
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception:
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"not an image file: {name}", print_exception=False) from None

    component.preprocess = checked
    return component


def build_app(demo: Demo, examples: dict[str, list[str]] | None = None):
    """The page for ``demo`` (``gr.Blocks``; launch it with ``theme()`` and ``CSS``)."""
    gr = _gradio()
    size = demo.pipe.cfg.image_size
    examples = examples or {}

    def image_out(label: str, elem_id: str):
        return gr.Image(label=label, type="numpy", format="png", height=320, interactive=False,
                        elem_id=elem_id, elem_classes="pixelated")

    def image_in(label: str, elem_id: str):
        return image_input(label=label, type="numpy", image_mode="RGB", format="png", height=320,
                          sources=["upload", "clipboard"], elem_id=elem_id, elem_classes="pixelated")

    def mode_radio(task: str, elem_id: str):
        note = demo.notes[task]
        return gr.Radio(list(MODES), value=demo.default_mode(task), label="Mode", interactive=note is None,
                        info=note or "accelerated by default; switch to compare with the baseline", elem_id=elem_id)

    def guidance_controls(prefix: str, image_scale: float | None, interval_start: float, renorm: str):
        text = gr.Slider(*TEXT_SCALE_RANGE, value=4.0, step=0.1, label="CFG text scale",
                         elem_id=f"{prefix}-text-scale")
        img = None
        if image_scale is not None:
            img = gr.Slider(*IMAGE_SCALE_RANGE, value=image_scale, step=0.1, label="CFG image scale",
                            elem_id=f"{prefix}-image-scale")
        start = gr.Slider(0.0, 1.0, value=interval_start, step=0.1, label="CFG interval start (end 1.0)")
        rtype = gr.Dropdown(list(RENORM_TYPES), value=renorm, label="CFG renorm type")
        rmin = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="CFG renorm min")
        return text, img, start, rtype, rmin

    def step_controls(prefix: str):
        steps = gr.Slider(2, 100, value=50, step=1, label="Timesteps (baseline; the accelerated student uses its own)",
                          elem_id=f"{prefix}-timesteps")
        shift = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="Timestep shift (baseline)")
        return steps, shift

    def think_tokens(prefix: str):
        return gr.Slider(8, 256, value=64, step=8, label="Max think tokens", elem_id=f"{prefix}-think-tokens")

    with gr.Blocks(title="hyperbagel") as app:
        gr.Markdown(f"## hyperbagel · BAGEL on Shapes World\nEvery result shows the language-model forwards and "
                    f"wall time of its mode. The model works on {size}×{size} images and Shapes World's words.")
        with gr.Tabs() as tabs:
            # ---------------------------------------------------------------- text to image
            with gr.Tab("Text to Image", id="t2i"):
                with gr.Row():
                    with gr.Column():
                        g_prompt = gr.Textbox(label="Prompt", value="a red circle left of a blue square", lines=2,
                                              elem_id="gen-prompt")
                        g_think = gr.Checkbox(label="Thinking", value=False, elem_id="gen-think")
                        g_mode = mode_radio("generate", "gen-mode")
                        with gr.Accordion("Inference hyperparameters", open=False):
                            g_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="gen-seed")
                            g_text, _, g_start, g_rtype, g_rmin = guidance_controls("gen", None, 0.0, "global")
                            g_steps, g_shift = step_controls("gen")
                            g_tt = think_tokens("gen")
                        g_btn = gr.Button("Generate", variant="primary", elem_id="gen-run")
                        if examples.get("generate"):
                            gr.Examples([[e] for e in examples["generate"]], [g_prompt])
                    with gr.Column():
                        g_img = image_out("Image", "gen-image")
                        g_plan = gr.Textbox(label="Thinking process", visible=False, elem_id="gen-plan")
                        g_status = gr.Markdown(elem_id="gen-status")
                        g_to_edit = gr.Button("Edit this image →", elem_id="gen-to-edit")
            # ---------------------------------------------------------------- edit
            with gr.Tab("Image Edit", id="edit"):
                with gr.Row():
                    with gr.Column():
                        e_src = image_in("Image to edit", "edit-input")
                        e_instr = gr.Textbox(label="Instruction", value="make the background gray", lines=2,
                                             elem_id="edit-prompt")
                        e_think = gr.Checkbox(label="Thinking", value=False, elem_id="edit-think")
                        e_mode = mode_radio("edit", "edit-mode")
                        with gr.Accordion("Inference hyperparameters", open=False):
                            e_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="edit-seed")
                            e_text, e_imgs, e_start, e_rtype, e_rmin = guidance_controls("edit", 1.5, 0.4,
                                                                                         "text_channel")
                            e_steps, e_shift = step_controls("edit")
                            e_tt = think_tokens("edit")
                        e_btn = gr.Button("Edit", variant="primary", elem_id="edit-run")
                        if examples.get("edit"):
                            gr.Examples([[e] for e in examples["edit"]], [e_instr])
                    with gr.Column():
                        e_img = image_out("Edited image", "edit-image")
                        e_plan = gr.Textbox(label="Thinking process", visible=False, elem_id="edit-plan")
                        e_status = gr.Markdown(elem_id="edit-status")
                        e_to_ask = gr.Button("Ask about this image →", elem_id="edit-to-ask")
            # ---------------------------------------------------------------- understanding
            with gr.Tab("Image Understanding", id="und"):
                with gr.Row():
                    with gr.Column():
                        u_src = image_in("Image", "und-input")
                        u_q = gr.Textbox(label="Question", value="describe the image.", lines=2,
                                         elem_id="und-prompt")
                        u_mode = mode_radio("understand", "und-mode")
                        with gr.Accordion("Inference hyperparameters", open=False):
                            u_sampling = gr.Checkbox(label="Sampling (off: greedy)", value=False)
                            u_temp = gr.Slider(0.05, 1.0, value=0.3, step=0.05, label="Temperature")
                            u_max = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", elem_id="und-max")
                            u_seed = gr.Number(value=0, precision=0, label="Seed (sampling)")
                        u_btn = gr.Button("Ask", variant="primary", elem_id="und-run")
                        if examples.get("understand"):
                            gr.Examples([[e] for e in examples["understand"]], [u_q])
                    with gr.Column():
                        u_answer = gr.Textbox(label="Answer", lines=4, interactive=False, elem_id="und-answer")
                        u_status = gr.Markdown(elem_id="und-status")

        g_hist, e_hist, u_hist = gr.State(History()), gr.State(History()), gr.State(History())
        g_think.change(lambda on: gr.update(visible=on), g_think, g_plan)
        e_think.change(lambda on: gr.update(visible=on), e_think, e_plan)
        g_btn.click(demo.generate, [g_prompt, g_think, g_mode, g_seed, g_text, g_start, g_rtype, g_rmin, g_steps,
                                    g_shift, g_tt, g_hist], [g_img, g_plan, g_status, g_hist], api_name="generate")
        e_btn.click(demo.edit, [e_src, e_instr, e_think, e_mode, e_seed, e_text, e_imgs, e_start, e_rtype, e_rmin,
                                e_steps, e_shift, e_tt, e_hist], [e_img, e_plan, e_status, e_hist], api_name="edit")
        u_btn.click(demo.understand, [u_src, u_q, u_mode, u_sampling, u_temp, u_max, u_seed, u_hist],
                    [u_answer, u_status, u_hist], api_name="understand")

        def carry(image, tab: str):
            if image is None:
                raise gr.Error("nothing to carry over yet: run this tab first", print_exception=False)
            return image, gr.Tabs(selected=tab)

        g_to_edit.click(lambda im: carry(im, "edit"), g_img, [e_src, tabs], api_name=False)
        e_to_ask.click(lambda im: carry(im, "und"), e_img, [u_src, tabs], api_name=False)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


EXAMPLES = {
    "generate": ["a red circle left of a blue square", "two green triangles", "a yellow square on a gray background"],
    "edit": ["make the background gray", "remove the circle", "make the red circle green"],
    "understand": ["describe the image.", "how many circles are there?", "what color is the square?"],
}


def launch(pipe, host: str = "127.0.0.1", port: int = 7860, examples: dict[str, list[str]] | None = EXAMPLES):
    """Serve the demo until interrupted."""
    app = build_app(Demo(pipe), examples)
    try:
        app.launch(server_name=host, server_port=port, theme=theme(), css=CSS, footer_links=[], show_error=True,
                   quiet=False)
    except OSError as err:
        raise HyperBagelError(f"cannot serve on {host}:{port}: {err}") from None
