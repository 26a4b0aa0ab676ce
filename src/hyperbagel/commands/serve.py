"""``hyperbagel serve``: the web demo on a model folder."""

from __future__ import annotations

from pathlib import Path

from hyperbagel.commands.decode import add_draft_args
from hyperbagel.commands.groups import group
from hyperbagel.pretrained import DEFAULT_MODEL, MODEL_HELP


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web demo: text-to-image, editing and understanding in the browser")
    p.add_argument("--ckpt", type=Path, default=Path(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    add_draft_args(p)
    p.set_defaults(func=cmd_serve)

    bench = group(subparsers, "bench", "benchmarks", "bench_command")
    p = bench.add_parser("demo", help="the demo under load: concurrent clients against a live server")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="model folder (default: a random micro model with a student and a draft, made in OUT)")
    p.add_argument("--draft", type=Path, default=None, help="draft folder for --ckpt (understanding's fast mode)")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bench-demo"))
    p.set_defaults(func=cmd_bench_demo)


def cmd_serve(args) -> int:
    import logging

    from hyperbagel.commands.decode import load_draft_from_args
    from hyperbagel.pipeline import Pipeline
    from hyperbagel.serve.app import _gradio, launch
    from hyperbagel.serve.malloc import limit_malloc_arenas, trim_malloc_every

    _gradio()  # a missing gradio, a bad address or a busy port is reported before the model loads
    check_address(args.host, args.port)
    limit_malloc_arenas()
    trim_malloc_every()
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


def cmd_bench_demo(args) -> int:
    """Start ``hyperbagel serve`` on a free port of 127.0.0.1, load it with ``--clients`` for ``--seconds``, report."""
    import dataclasses
    import json
    import logging
    import os
    import platform
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from hyperbagel.errors import HyperBagelError
    from hyperbagel.eval.demo_load import run_load, write_scene_png
    from hyperbagel.eval.random_folders import random_accelerated_folders
    from hyperbagel.files import atomic_write_text

    if args.clients < 1 or args.seconds <= 0:
        raise HyperBagelError("--clients must be at least 1 and --seconds positive")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per client request otherwise
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt, draft = args.ckpt, args.draft
    if ckpt is None:
        ckpt, draft = random_accelerated_folders(args.out)
    image = write_scene_png(args.out / "scene.png", args.seed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "hyperbagel.cli", "serve", "--ckpt", str(ckpt), "--port", str(port)]
    argv += ["--draft", str(draft)] if draft else []
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    url = f"http://127.0.0.1:{port}/"
    with open(args.out / "serve.log", "w") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise HyperBagelError(f"the demo server did not start; its log: {args.out / 'serve.log'}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                time.sleep(1)
        print(f"bench demo: {args.clients} clients for {args.seconds:.0f} s against {url} ({ckpt})", flush=True)
        report = run_load(url, args.clients, args.seconds, image, server.pid, args.seed)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(30)
    summary = report.summary() | {"server_alive_at_end": alive}
    machine = f"{platform.machine()} {os.cpu_count()} cores"
    record = {"machine": machine, "ckpt": str(ckpt), "draft": str(draft) if draft else None, "seed": args.seed,
              "summary": summary, "requests": [dataclasses.asdict(r) for r in report.requests],
              "rss_mb": report.rss_mb}
    atomic_write_text(json.dumps(record, indent=1) + "\n", args.out / "load.json")
    print(json.dumps(summary, indent=1))
    return 0 if alive and summary["failed"] == 0 and summary["lost"] == 0 else 1
