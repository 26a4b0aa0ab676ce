"""``hyperbagel serve``: the web demo on a model folder."""

from __future__ import annotations

from pathlib import Path


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web demo: text-to-image, editing and understanding in the browser")
    p.add_argument("--ckpt", type=Path, default=Path("runs/teacher"), help="model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    import logging

    from hyperbagel.pipeline import Pipeline
    from hyperbagel.serve.app import _gradio, launch

    _gradio()  # a missing gradio is reported before the model loads
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own requests to itself
    pipe = Pipeline.from_pretrained(args.ckpt)
    print(f"hyperbagel demo: {args.ckpt} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    launch(pipe, args.host, args.port)
    return 0
