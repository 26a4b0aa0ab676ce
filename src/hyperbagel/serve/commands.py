"""``hyperbagel serve``: the web demo on a model folder."""

from __future__ import annotations

from pathlib import Path

from hyperbagel.decode.commands import add_draft_args


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web demo: text-to-image, editing and understanding in the browser")
    p.add_argument("--ckpt", type=Path, default=Path("runs/teacher"), help="model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    add_draft_args(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    import logging

    from hyperbagel.decode.commands import load_draft_from_args
    from hyperbagel.pipeline import Pipeline
    from hyperbagel.serve.app import _gradio, launch

    _gradio()  # a missing gradio, a bad address or a busy port is reported before the model loads
    check_address(args.host, args.port)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own requests to itself
    pipe = Pipeline.from_pretrained(args.ckpt)
    load_draft_from_args(pipe, args)  # --draft: the understanding tab's accelerated mode
    print(f"hyperbagel demo: {args.ckpt} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    launch(pipe, args.host, args.port)
    return 0


def check_address(host: str, port: int) -> None:
    """The demo can listen on ``host:port`` (a clear message instead of the web server's own)."""
    import errno
    import socket

    from hyperbagel.errors import HyperBagelError

    if not 1 <= port <= 65535:
        raise HyperBagelError(f"--port must be from 1 to 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise HyperBagelError(f"cannot listen on {host}:{port}: unknown host ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as err:
            hint = " (another server is using it? choose another --port)" if err.errno == errno.EADDRINUSE else ""
            raise HyperBagelError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from None
